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

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

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


class Outcome(StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    ANY = "any"


class BargeIn(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


# ---- actions ---------------------------------------------------------------


class PlayTtsSpec(_Doc):
    text: str = Field(description="Text to speak; `{{ expr }}` inserts a CEL expression's value.")
    voice: str | None = Field(None, description="Voice name; default: the dialog's voice.")
    barge_in: BargeIn = Field(
        BargeIn.ALLOW, description="allow: caller speech stops the prompt; deny: it always plays."
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


Action = (
    PlayTts
    | Transfer
    | Hangup
    | CallHook
    | SetVars
    | CollectDigits
    | StartTimer
    | (CancelTimer | Llm)
)

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


def _parse_action(value: Any) -> Any:
    """Pick the action model by its single key, so errors name the right fields."""
    if isinstance(value, BaseModel):
        return value
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(
            f"an action is a mapping with exactly one key, one of {', '.join(ACTION_KEYS)}"
        )
    key = next(iter(value))
    model = ACTION_KEYS.get(key)
    if model is None:
        raise ValueError(f"unknown action {key!r}; expected one of {', '.join(ACTION_KEYS)}")
    if key == "hangup" and value[key] is None:
        value = {"hangup": {}}
    return model.model_validate(value)


class _ActionList(_Doc):
    """Mixin: validate action lists one by one with the single-key rule."""

    @model_validator(mode="before")
    @classmethod
    def _actions(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for field in ("actions", "on_enter"):
                if isinstance(data.get(field), list):
                    data = {
                        **data,
                        field: [_parse_indexed(field, i, a) for i, a in enumerate(data[field])],
                    }
        return data


def _parse_indexed(field: str, index: int, value: Any) -> Any:
    """Parse one action; errors carry the action's own path (on_enter[2].play_tts.text)."""
    try:
        return _parse_action(value)
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt field also leaves the right one missing: name the misspelling.
        err = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required field missing"
        raise ValueError(f"{field}[{index}]{loc}: {msg}") from None
    except ValueError as exc:
        raise ValueError(f"{field}[{index}]: {exc}") from None


# ---- states ----------------------------------------------------------------


class Endpointing(_Doc):
    """When a caller's utterance counts as a finished turn."""

    silence_ms: int = Field(
        0,
        ge=0,
        le=10000,
        description="Extra silence to wait after the recogniser's end of utterance before the "
        "turn is taken; speech within it continues the turn (long answers, slow number reading).",
    )
    min_words: int = Field(1, ge=1, le=50, description="Shorter finals are ignored as noise.")


class Transition(_ActionList):
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


class State(_ActionList):
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
