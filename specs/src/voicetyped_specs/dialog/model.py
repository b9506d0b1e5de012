"""The dialog document: a deterministic call flow written in YAML.

The same document is the ``spec`` of the Dialog custom resource. These models
only check shape (types, enums, unknown fields); cross-references, CEL and
reachability are checked by :mod:`voicetyped_specs.dialog.validate`.

Example::

    name: order-status
    initial: greet
    states:
      greet:
        on_enter:
          - play_tts: {text: "Hi! Say your order number or press 1 for an agent."}
        transitions:
          - event: speech
            condition: 'intent == "order_status" || transcript.contains("order")'
            target: lookup
          - event: dtmf
            condition: 'digit == "1"'
            target: agent
          - event: timeout
            target: greet_retry
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"
STATE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$"
VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventType(StrEnum):
    """What a transition reacts to."""

    SPEECH = "speech"  # a final transcript (a caller turn)
    PARTIAL = "partial"  # a partial transcript (opt-in early decisions)
    DTMF = "dtmf"  # one key press (not while collect_digits is active)
    DIGITS = "digits"  # a completed collect_digits
    TIMEOUT = "timeout"  # a timer fired (no_input, max_duration, collect_digits, named timers)
    BACKEND_RESULT = "backend_result"  # a call_hook answered
    BARGE_IN = "barge_in"  # the caller started speaking over an interruptible prompt
    HANGUP = "hangup"  # the caller hung up (only call_hook and set run afterwards)
    ERROR = "error"  # a backend or LLM failure no transition handled, or a runtime error
    LLM_RESULT = "llm_result"  # an llm action answered with a valid label/slots
    TRANSFER_FAILED = "transfer_failed"  # a transfer was refused (sip_status); unhandled: error


class Outcome(StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    ANY = "any"


class BargeIn(StrEnum):
    ALLOW = "allow"
    """The caller's words stop the prompt; backchannels ("uh-huh", "okay") and noise do not."""
    DENY = "deny"
    """The prompt always plays to the end."""
    IMMEDIATE = "immediate"
    """The first sound from the caller stops the prompt (backchannels and noise too)."""


class EndpointingMode(StrEnum):
    SEMANTIC = "semantic"
    """A turn model and the state's expectation decide at each pause (min_ms..max_ms)."""
    SILENCE = "silence"
    """The turn ends after min_ms of silence."""


# ---- actions ---------------------------------------------------------------


class PlayTtsSpec(_Doc):
    text: str = Field(description="Text to speak; `{{ expr }}` inserts a CEL expression's value.")
    voice: str | None = Field(None, description="Voice name; default: the dialog's voice.")
    barge_in: BargeIn = Field(
        BargeIn.ALLOW,
        description="allow: the caller's words stop the prompt, backchannels and noise do not; "
        "immediate: the first sound stops it; deny: it always plays.",
    )


class TransferSpec(_Doc):
    target: str = Field(description="sip:, sips: or tel: URI (templated).")


class HangupSpec(_Doc):
    reason_code: int = Field(16, ge=1, le=127, description="ITU-T Q.850 cause (16 = normal).")


class CallHookSpec(_Doc):
    service: str = Field(min_length=1, description="Integration name.")
    method: str = Field(min_length=1, description="Operation of that integration.")
    payload: dict[str, JsonValue] = Field(
        default_factory=dict,
        description='Request body. Strings are templated; a string that is exactly "{{ expr }}" '
        "takes the expression's value with its type.",
    )
    timeout_ms: int | None = Field(
        None, gt=0, description="Overall deadline for the call, retries included."
    )


class CollectDigitsSpec(_Doc):
    max_digits: int = Field(ge=1, le=64)
    min_digits: int = Field(1, ge=1, le=64)
    terminator: str | None = Field("#", pattern=r"^[0-9*#A-D]$")
    inter_digit_timeout_ms: int = Field(3000, gt=0)
    timeout_ms: int = Field(
        10000, gt=0, description="For the first digit, from the end of the prompts before it."
    )
    spoken: bool = Field(
        True,
        description="A caller turn that says min_digits to max_digits digits (spokenDigits: "
        '"four eight two one", "forty-eight twenty-one", "double three") completes the '
        "collection like keys would: a digits event instead of a speech event.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> CollectDigitsSpec:
        if self.min_digits > self.max_digits:
            raise ValueError("min_digits must not exceed max_digits")
        return self


class StartTimerSpec(_Doc):
    name: str = Field(pattern=VAR_PATTERN)
    ms: int = Field(gt=0)


class CancelTimerSpec(_Doc):
    name: str = Field(pattern=VAR_PATTERN)


class LlmSpec(_Doc):
    """Ask an OpenAI-compatible chat endpoint to classify or extract; answers as llm_result."""

    mode: Literal["classify", "extract"]
    prompt: str = Field(description="Instructions for the model (templated).")
    input: str = Field("{{ transcript }}", description="The text to classify (templated).")
    labels: list[str] = Field(default_factory=list, description="classify: the closed label set.")
    slots: dict[str, str] = Field(
        default_factory=dict, description="extract: slot name -> what to extract."
    )
    timeout_ms: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _mode_fields(self) -> LlmSpec:
        if self.mode == "classify" and len(self.labels) < 2:
            raise ValueError("classify needs at least two labels")
        if self.mode == "extract" and not self.slots:
            raise ValueError("extract needs at least one slot")
        return self


class PlayTts(_Doc):
    play_tts: PlayTtsSpec


class Transfer(_Doc):
    transfer: TransferSpec


class Hangup(_Doc):
    hangup: HangupSpec = Field(default_factory=HangupSpec)

    @field_validator("hangup", mode="before")
    @classmethod
    def _bare(cls, value: Any) -> Any:
        return {} if value is None else value  # `- hangup:` with nothing after it


class CallHook(_Doc):
    call_hook: CallHookSpec


class SetVars(_Doc):
    set: dict[Annotated[str, Field(pattern=VAR_PATTERN)], str] = Field(
        description="Variable name -> CEL expression; assigned in order."
    )


class CollectDigits(_Doc):
    collect_digits: CollectDigitsSpec


class StartTimer(_Doc):
    start_timer: StartTimerSpec


class CancelTimer(_Doc):
    cancel_timer: CancelTimerSpec


class Llm(_Doc):
    llm: LlmSpec


ACTION_KEYS: dict[str, type[BaseModel]] = {
    "play_tts": PlayTts,
    "transfer": Transfer,
    "hangup": Hangup,
    "call_hook": CallHook,
    "set": SetVars,
    "collect_digits": CollectDigits,
    "start_timer": StartTimer,
    "cancel_timer": CancelTimer,
    "llm": Llm,
}
NOT_AN_ACTION = "not_an_action"
"""The error type of a list item that is no single-key action (its input says which)."""


def _action_tag(value: Any) -> str | None:
    """The action model's name from the item's single key; None: not an action.

    A tagged union validates every item of every list and reports each error once, under the
    action's own fields (``on_enter[1].start_timer.ms``); a plain union would try all nine
    models and a before-validator would stop at the first bad action of a state.
    """
    if isinstance(value, BaseModel):
        return type(value).__name__
    if isinstance(value, dict) and len(value) == 1:
        model = ACTION_KEYS.get(next(iter(value)))
        return model.__name__ if model else None
    return None


Action = Annotated[
    Annotated[PlayTts, Tag("PlayTts")]
    | Annotated[Transfer, Tag("Transfer")]
    | Annotated[Hangup, Tag("Hangup")]
    | Annotated[CallHook, Tag("CallHook")]
    | Annotated[SetVars, Tag("SetVars")]
    | Annotated[CollectDigits, Tag("CollectDigits")]
    | Annotated[StartTimer, Tag("StartTimer")]
    | Annotated[CancelTimer, Tag("CancelTimer")]
    | Annotated[Llm, Tag("Llm")],
    Discriminator(
        _action_tag,
        custom_error_type=NOT_AN_ACTION,
        custom_error_message="an action is a mapping with exactly one key, one of "
        + ", ".join(ACTION_KEYS),
    ),
]
"""One action: a mapping whose single key names it (``play_tts: {text: ...}``)."""


# ---- states ----------------------------------------------------------------


class Endpointing(_Doc):
    """When a caller's utterance counts as a finished turn."""

    mode: EndpointingMode = Field(
        EndpointingMode.SEMANTIC,
        description="semantic: at a pause of min_ms a turn model (Smart Turn) and what the state "
        "expects (digits still missing, a yes/no answer, words ending mid-phrase) decide whether "
        "the caller has finished, and max_ms of silence ends the turn regardless; silence: "
        "min_ms of silence ends the turn.",
    )
    min_ms: int = Field(
        200, ge=100, le=5000, description="Silence before the turn may end (silence: ends)."
    )
    max_ms: int = Field(
        2000,
        ge=100,
        le=10000,
        description="semantic: silence after which the turn ends whatever the model says; "
        "at least min_ms.",
    )
    silence_ms: int = Field(
        0,
        ge=0,
        le=10000,
        description="Extra silence to wait after the recogniser's end of utterance before the "
        "turn is taken; speech within it continues the turn (long answers, slow number reading).",
    )
    min_words: int = Field(1, ge=1, le=50, description="Shorter finals are ignored as noise.")

    @field_validator("max_ms")
    @classmethod
    def _max_after_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_ms")
        if isinstance(low, int) and value < low:
            raise ValueError(f"must be at least min_ms ({low})")
        return value


class Transition(_Doc):
    event: EventType
    condition: str | None = Field(None, description="CEL expression; absent means always.")
    outcome: Outcome = Field(
        Outcome.SUCCESS,
        description="backend_result only: react to success, error, or any outcome.",
    )
    timer: str | None = Field(None, description="timeout only: react to this timer only.")
    actions: list[Action] = Field(default_factory=list)
    target: str | None = Field(
        None, description="Next state; absent means stay (on_enter does not run again)."
    )


class State(_Doc):
    on_enter: list[Action] = Field(default_factory=list)
    transitions: list[Transition] = Field(default_factory=list)
    terminal: bool = Field(
        False, description="The call ends here: after on_enter and its prompts, hang up."
    )
    no_input_timeout_ms: int | None = Field(
        None, ge=0, description="Override of settings.no_input_timeout_ms; 0 disables."
    )
    endpointing: Endpointing | None = None


class LlmSettings(_Doc):
    base_url: str = Field(description="OpenAI-compatible API base, e.g. http://llm:8000/v1")
    model: str
    timeout_ms: int = Field(3000, gt=0)
    api_key_file: str | None = Field(None, description="File holding the API key (Secret mount).")


class DialogSettings(_Doc):
    voice: str | None = Field(None, description="Default TTS voice; none: the gateway's default.")
    language: str = "en"
    no_input_timeout_ms: int = Field(
        8000, ge=0, description="After the prompts of a state finish; 0 disables."
    )
    max_call_duration_ms: int = Field(15 * 60 * 1000, gt=0)
    backend_timeout_ms: int = Field(5000, gt=0)
    endpointing: Endpointing = Field(default_factory=Endpointing)
    partials: bool = Field(False, description="Deliver partial transcripts (partial events).")
    intent_threshold: float = Field(0.5, ge=0, le=1)
    persist_transcripts: bool = Field(
        False, description="Keep the finished session (with transcripts) after the call."
    )
    transcript_retention_s: int = Field(7 * 24 * 3600, gt=0)
    log_transcripts: bool = Field(
        False,
        description="Log every final transcript of this dialog's calls (what the recogniser "
        "heard) at debug level, for tuning and support; only with the runtime's log_level "
        "debug. Logs only: nothing more is stored.",
    )
    llm: LlmSettings | None = None


class Dialog(_Doc):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    initial: str
    settings: DialogSettings = Field(default_factory=DialogSettings)
    vars: dict[Annotated[str, Field(pattern=VAR_PATTERN)], JsonValue] = Field(
        default_factory=dict, description="Dialog variables and their initial values."
    )
    intents: dict[Annotated[str, Field(pattern=VAR_PATTERN)], list[str]] = Field(
        default_factory=dict, description="Intent name -> example phrases."
    )
    global_transitions: list[Transition] = Field(
        default_factory=list, description="Checked in every state after its own transitions."
    )
    states: dict[Annotated[str, Field(pattern=STATE_PATTERN)], State] = Field(min_length=1)
