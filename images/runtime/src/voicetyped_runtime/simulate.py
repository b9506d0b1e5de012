"""Drive a dialog with scripted caller events on a virtual clock (no audio, no network).

A script is a YAML list of steps::

    - say: "I want to know where my order is"     # a caller turn (final transcript)
    - press: "4821#"                                # DTMF keys, one after another
    - wait: 8000                                    # let time pass (timers fire), in ms
    - backend: {ok: true, response: {status: shipped}}   # answer the oldest call_hook
    - llm: {label: confirm}                         # answer the oldest llm request
    - transfer: {status: 486, reason: "Busy Here"}  # the transfer under way is refused
                                                    # (a 2xx status: it succeeds, the call left)
    - interrupt: "agent please"                     # speak while a prompt is still playing
    - hangup: true                                  # the caller hangs up
    - expect: {state: lookup}                       # assert (also vars: {...}, ended: true)

Prompts finish playing before each step unless the step is ``interrupt``.
The same engine runs live calls, so a simulated path is the path a call takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator
from voicetyped.session import CallerInfo, CallSession
from voicetyped_specs.dialog.compiled import CompiledDialog

from voicetyped_runtime import engine as e
from voicetyped_runtime.state import CallState

CALL_START_MS = 1_700_000_000_000
SPEECH_MS_PER_WORD = 300
PROMPT_MS_PER_CHAR = 60


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackendReply(_Step):
    ok: bool = True
    response: JsonValue = None
    error_code: str = "backend_error"
    error_message: str = ""


class LlmReply(_Step):
    label: str = ""
    slots: dict[str, JsonValue] = Field(default_factory=dict)
    error: str | None = Field(None, description="timeout | invalid_output | ...: the LLM failed")


class TransferReply(_Step):
    status: int = Field(202, ge=200, le=699, description="The final SIP status of the transfer.")
    reason: str = ""


class Expect(_Step):
    state: str | None = None
    vars: dict[str, JsonValue] = Field(default_factory=dict)
    ended: bool | None = None
    said: str | None = Field(None, description="Substring of the last prompt spoken.")


STEP_KINDS = (
    "say",
    "press",
    "wait",
    "backend",
    "llm",
    "transfer",
    "interrupt",
    "hangup",
    "expect",
)


class ScriptStep(_Step):
    say: str | None = None
    press: str | None = Field(None, pattern=r"^[0-9*#A-D]+$")
    wait: int | None = Field(None, ge=0)
    backend: BackendReply | None = None
    llm: LlmReply | None = None
    transfer: TransferReply | None = None
    interrupt: str | None = None
    hangup: bool | None = None
    expect: Expect | None = None
    confidence: float = Field(0.9, ge=0, le=1)

    @model_validator(mode="after")
    def _one(self) -> ScriptStep:
        kinds = [k for k in STEP_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"a step has exactly one of {', '.join(STEP_KINDS)}; got {kinds or 'none'}"
            )
        return self


class ExpectationError(AssertionError):
    pass


@dataclass
class Emitted:
    at_ms: int
    effect: e.Effect


@dataclass
class Simulator:
    dialog: CompiledDialog
    matcher: Any = None  # an IntentMatcher, when the dialog has intents
    caller_id: str = "+15550100"
    session_id: str = "sim-1"
    now_ms: int = CALL_START_MS
    emitted: list[Emitted] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = e.Engine(self.dialog)
        self.state = CallState(
            session=CallSession(
                session_id=self.session_id,
                caller=CallerInfo(caller_id=self.caller_id),
                state=self.dialog.initial,
            ),
            dialog=self.dialog.name,
            dialog_hash=self.dialog.content_hash,
            started_ms=self.now_ms,
            state_entered_ms=self.now_ms,
            vars=dict(self.dialog.spec.vars),
        )
        self._utterance = 0
        self._record(self.engine.start(self.state, self.now_ms))

    # -- caller actions --

    def say(self, text: str, confidence: float = 0.9, interrupt: bool = False) -> None:
        if not interrupt:
            self.finish_prompts()
        self._utterance += 1
        uid = f"u{self._utterance}"
        start = self.now_ms
        self._apply(e.SpeechStarted(uid))
        self.advance(SPEECH_MS_PER_WORD * max(1, len(text.split())))
        self._apply(e.SpeechEnded(uid))
        silence = self.dialog.states[self.state.session.state].endpointing.silence_ms
        intent, score = ("", 0.0)
        if self.matcher is not None:
            match = self.matcher.match(text)
            intent, score = match.intent or "", match.score
        self._apply(
            e.Transcript(
                uid,
                text,
                True,
                confidence,
                start - self.state.started_ms,
                self.now_ms - self.state.started_ms,
                intent,
                score,
            )
        )
        self._tick()
        if silence:
            self.advance(silence)

    def press(self, keys: str) -> None:
        self.finish_prompts()
        for key in keys:
            self._apply(e.Dtmf(key, 100))
            self.advance(250)

    def wait(self, ms: int) -> None:
        self.finish_prompts()
        self.advance(ms)

    def backend(self, reply: BackendReply) -> None:
        key = self._oldest("call_hook")
        self._apply(
            e.BackendAnswer(
                key,
                reply.ok,
                reply.response,
                "" if reply.ok else reply.error_code,
                reply.error_message,
            )
        )

    def llm(self, reply: LlmReply) -> None:
        key = self._oldest("llm")
        if reply.error:
            self._apply(
                e.LlmAnswer(key, False, error_code=reply.error, error_message=f"LLM {reply.error}")
            )
        else:
            self._apply(e.LlmAnswer(key, True, reply.label, dict(reply.slots)))

    def transfer(self, reply: TransferReply) -> None:
        """The far end's answer to the transfer under way (prompts before it play first)."""
        self.finish_prompts()
        command = self.state.transferring
        if not command:
            raise ExpectationError(f"no transfer under way in state {self.state.session.state!r}")
        if 200 <= reply.status < 300:
            self._apply(e.CallerHangup("transferred"))
        else:
            detail = f"{reply.status} {reply.reason}".strip()
            self._apply(e.CommandFailed(command, detail, reply.status))

    def hangup(self) -> None:
        self._apply(e.CallerHangup())

    def finish_prompts(self) -> None:
        """Let every prompt still playing play to its end (time passes accordingly)."""
        while self.state.playing and not self.state.ended:
            playing = self.state.playing[0]
            text = next(
                (
                    x.effect.text
                    for x in reversed(self.emitted)
                    if isinstance(x.effect, e.Speak) and x.effect.request_id == playing.request_id
                ),
                "",
            )
            self.advance(PROMPT_MS_PER_CHAR * len(text), fire=False)
            self._apply(e.PlaybackDone(playing.request_id))

    def advance(self, ms: int, fire: bool = True) -> None:
        """Move the clock, firing timers in deadline order as they fall due."""
        target = self.now_ms + ms
        while fire:
            deadline = self.engine.next_deadline(self.state)
            if deadline is None or deadline > target:
                break
            self.now_ms = max(self.now_ms, deadline)
            self._tick()
        self.now_ms = target

    # -- scripts --

    def run(self, steps: list[ScriptStep]) -> None:
        for index, step in enumerate(steps):
            if step.say is not None:
                self.say(step.say, step.confidence)
            elif step.interrupt is not None:
                self.say(step.interrupt, step.confidence, interrupt=True)
            elif step.press is not None:
                self.press(step.press)
            elif step.wait is not None:
                self.wait(step.wait)
            elif step.backend is not None:
                self.backend(step.backend)
            elif step.llm is not None:
                self.llm(step.llm)
            elif step.transfer is not None:
                self.transfer(step.transfer)
            elif step.hangup:
                self.hangup()
            elif step.expect is not None:
                self.finish_prompts()
                self._check(index, step.expect)
        self.finish_prompts()

    def _check(self, index: int, expect: Expect) -> None:
        problems = []
        if expect.state is not None and self.state.session.state != expect.state:
            problems.append(f"state is {self.state.session.state!r}, expected {expect.state!r}")
        for name, value in expect.vars.items():
            if self.state.vars.get(name) != value:
                problems.append(f"vars.{name} is {self.state.vars.get(name)!r}, expected {value!r}")
        if expect.ended is not None and self.state.ended != expect.ended:
            problems.append(f"ended is {self.state.ended}, expected {expect.ended}")
        if expect.said is not None:
            spoken = [x.effect.text for x in self.emitted if isinstance(x.effect, e.Speak)]
            if not spoken or expect.said not in spoken[-1]:
                problems.append(
                    f"last prompt {spoken[-1] if spoken else None!r} "
                    f"does not contain {expect.said!r}"
                )
        if problems:
            raise ExpectationError(f"step {index + 1} (expect): " + "; ".join(problems))

    # -- plumbing --

    def _oldest(self, kind: str) -> str:
        pending = sorted(
            (p for p in self.state.pending.values() if p.kind == kind), key=lambda p: p.started_ms
        )
        if not pending:
            raise ExpectationError(
                f"no pending {kind} to answer in state {self.state.session.state!r}"
            )
        return pending[0].key

    def _tick(self) -> None:
        self._apply(e.Tick())

    def _apply(self, event: e.Input) -> None:
        self._record(self.engine.step(self.state, event, self.now_ms))

    def _record(self, effects: list[e.Effect]) -> None:
        self.emitted.extend(Emitted(self.now_ms, eff) for eff in effects)


def describe(effect: e.Effect) -> str:
    match effect:
        case e.Speak():
            return f"say {effect.text!r}" + (
                " (no barge-in)" if effect.barge_in.value == "deny" else ""
            )
        case e.CancelSpeech():
            return "stop speaking (barge-in)"
        case e.TransferCall():
            return f"transfer to {effect.target}"
        case e.HangupCall():
            return f"hang up (cause {effect.reason_code})"
        case e.ExecuteHook():
            return f"call {effect.service}.{effect.method} {effect.payload} [key {effect.key}]"
        case e.AskLlm():
            return f"ask LLM ({effect.request['mode']}) about {effect.request['input']!r}"
        case e.SessionEnded():
            return f"session ended: {effect.reason}"
        case e.Warn():
            return f"warning: {effect.message} {effect.detail}"
    return repr(effect)  # pragma: no cover
