"""The dialog engine: a pure, deterministic step function.

``Engine.step(state, input, now_ms)`` mutates one call's :class:`CallState`
and returns the effects to carry out (speak, cancel speech, call a backend,
transfer, hang up, ...). It does no I/O and reads no clock: the same inputs at
the same times always give the same state and effects, which is what makes
calls replayable in the simulator and resumable after a restart.

Besides the dialog's own events the engine does turn-taking: it assembles the
caller's utterances from VAD and transcript inputs (endpointing per state),
handles barge-in against the prompts still playing, collects digits, and keeps
the built-in timers (``no_input``, ``max_duration``, ``collect_digits``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue
from voicetyped.session import (
    BackendResultEvent,
    DTMFEvent,
    SpeechEvent,
    SpeechTiming,
    TimeoutEvent,
)
from voicetyped.session import (
    CallHook as CallHookRecord,
)
from voicetyped.session import (
    Hangup as HangupRecord,
)
from voicetyped.session import (
    PlayTTS as PlayTtsRecord,
)
from voicetyped.session import (
    Transfer as TransferRecord,
)
from voicetyped_specs.dialog import compiled as c
from voicetyped_specs.dialog.cel import CelEvalError, truthy
from voicetyped_specs.dialog.model import BargeIn, EventType, Outcome
from voicetyped_specs.dialog.template import plain

from voicetyped_runtime.engine_io import (
    NORMAL_CLEARING,
    TEMPORARY_FAILURE,
    AskLlm,
    BackendAnswer,
    CallerHangup,
    CancelSpeech,
    CommandFailed,
    Dtmf,
    Effect,
    ExecuteHook,
    HangupCall,
    Input,
    LlmAnswer,
    PlaybackDone,
    SessionEnded,
    Speak,
    SpeechEnded,
    SpeechStarted,
    Tick,
    Transcript,
    TransferCall,
    Warn,
)
from voicetyped_runtime.state import (
    CallState,
    Deferred,
    DigitCollection,
    PendingRequest,
    PendingTurn,
    Playback,
    Step,
    Timer,
)

# The inputs and effects are engine_io's; re-exported so `engine.Speak` keeps working.
__all__ = [
    "DRAIN_LIMIT_MS",
    "DRAIN_TIMER",
    "ENDPOINT_TIMER",
    "NORMAL_CLEARING",
    "TEMPORARY_FAILURE",
    "AskLlm",
    "BackendAnswer",
    "CallerHangup",
    "CancelSpeech",
    "CommandFailed",
    "Dtmf",
    "Effect",
    "Engine",
    "ExecuteHook",
    "HangupCall",
    "Input",
    "LlmAnswer",
    "PlaybackDone",
    "SessionEnded",
    "Speak",
    "SpeechEnded",
    "SpeechStarted",
    "Tick",
    "Transcript",
    "TransferCall",
    "Warn",
]

ENDPOINT_TIMER = "_endpoint"  # internal: silence after a final before the turn is taken
DRAIN_TIMER = "_drain"  # internal: upper bound on waiting for prompts before hangup/transfer
DRAIN_LIMIT_MS = 60_000


@dataclass
class _Event:
    """A dialog-level event with the data it adds to the activation."""

    type: EventType
    data: dict[str, Any] = field(default_factory=dict)
    outcome: Outcome = Outcome.SUCCESS
    timer: str | None = None


class _ActionError(Exception):
    pass


class Engine:
    """Runs one compiled dialog; holds no per-call state (that is all in CallState)."""

    def __init__(self, dialog: c.CompiledDialog) -> None:
        self.dialog = dialog

    # -- entry points --

    def start(self, s: CallState, now_ms: int) -> list[Effect]:
        """Enter the initial state of a new call."""
        out: list[Effect] = []
        s.timers["max_duration"] = Timer(
            name="max_duration",
            started_ms=now_ms,
            deadline_ms=now_ms + self.dialog.spec.settings.max_call_duration_ms,
        )
        self._enter(s, self.dialog.initial, now_ms, out)
        s.history.append(Step(at_ms=now_ms, event="start", from_state="", to_state=s.session.state))
        return out

    def step(self, s: CallState, event: Input, now_ms: int) -> list[Effect]:
        """Apply one input and return the effects, in order."""
        out: list[Effect] = []
        if s.ended:
            return out
        if s.deferred is not None and not isinstance(event, PlaybackDone | CallerHangup | Tick):
            return out  # leaving: only the prompts' end, the caller's hangup or time matter
        match event:
            case Tick():
                self._fire_due_timers(s, now_ms, out)
            case SpeechStarted():
                self._speech_started(s, event, now_ms, out)
            case SpeechEnded():
                if s.turn_in_progress and event.utterance_id not in s.ignored_utterances:
                    s.turn_in_progress.speaking = False
            case Transcript():
                self._transcript(s, event, now_ms, out)
            case PlaybackDone():
                self._playback_done(s, event, now_ms, out)
            case Dtmf():
                self._dtmf(s, event, now_ms, out)
            case BackendAnswer():
                self._backend_answer(s, event, now_ms, out)
            case LlmAnswer():
                self._llm_answer(s, event, now_ms, out)
            case CommandFailed():
                s.transferring = ""
                self._dispatch(
                    s,
                    _Event(EventType.ERROR, {"error": _err("transfer", "failed", event.detail)}),
                    now_ms,
                    out,
                )
            case CallerHangup():
                self._caller_hangup(s, event, now_ms, out)
        s.updated_ms = now_ms
        return out

    @staticmethod
    def next_deadline(s: CallState) -> int | None:
        """Epoch ms of the earliest timer, or None."""
        if s.ended or not s.timers:
            return None
        return min(t.deadline_ms for t in s.timers.values())

    # -- turn-taking --

    def _speech_started(self, s: CallState, ev: SpeechStarted, now: int, out: list[Effect]) -> None:
        if any(p.barge_in == BargeIn.DENY for p in s.playing):
            s.ignored_utterances.append(ev.utterance_id)
            del s.ignored_utterances[:-16]
            return
        s.timers.pop("no_input", None)
        s.timers.pop(ENDPOINT_TIMER, None)
        if s.turn_in_progress is None:
            s.turn_in_progress = PendingTurn()
        s.turn_in_progress.speaking = True
        interrupted = tuple(p.request_id for p in s.playing)
        if interrupted:
            s.playing.clear()
            out.append(CancelSpeech(interrupted))
            self._arm_first_digit(s, now)
            self._dispatch(s, _Event(EventType.BARGE_IN), now, out)

    def _transcript(self, s: CallState, ev: Transcript, now: int, out: list[Effect]) -> None:
        if ev.utterance_id in s.ignored_utterances:
            if ev.final:
                s.ignored_utterances.remove(ev.utterance_id)
            return
        if not ev.final:
            if self.dialog.spec.settings.partials:
                data = {"transcript": ev.text, "confidence": ev.confidence}
                data |= {"intent": ev.intent, "intent_score": ev.intent_score}
                self._dispatch(s, _Event(EventType.PARTIAL, data), now, out)
            return
        turn = s.turn_in_progress or PendingTurn()
        if not turn.texts:
            turn.start_ms = ev.start_ms
        if ev.text.strip():
            turn.texts.append(ev.text.strip())
        turn.confidence = min(turn.confidence, ev.confidence)
        turn.end_ms = max(turn.end_ms, ev.end_ms)
        turn.intent, turn.intent_score = ev.intent, ev.intent_score
        turn.speaking = False
        s.turn_in_progress = turn
        silence = self._state(s).endpointing.silence_ms
        if silence > 0:
            s.timers[ENDPOINT_TIMER] = Timer(
                name=ENDPOINT_TIMER, started_ms=now, deadline_ms=now + silence
            )
        else:
            self._commit_turn(s, now, out)

    def _commit_turn(self, s: CallState, now: int, out: list[Effect]) -> None:
        turn, s.turn_in_progress = s.turn_in_progress, None
        s.timers.pop(ENDPOINT_TIMER, None)
        if turn is None:
            return
        text = " ".join(turn.texts)
        if len(text.split()) < self._state(s).endpointing.min_words:
            self._arm_no_input(s, now)
            return
        s.turn += 1
        s.last.transcript, s.last.confidence = text, turn.confidence
        s.last.intent, s.last.intent_score = turn.intent, turn.intent_score
        s.session.events.append(
            SpeechEvent(
                transcript=text,
                confidence=max(0.0, min(1.0, turn.confidence)),
                timing=SpeechTiming(
                    start_ms=max(turn.start_ms, 0), end_ms=max(turn.end_ms, turn.start_ms, 0)
                ),
            )
        )
        handled = self._dispatch(
            s,
            _Event(
                EventType.SPEECH,
                {
                    "transcript": text,
                    "confidence": turn.confidence,
                    "intent": turn.intent,
                    "intent_score": turn.intent_score,
                },
            ),
            now,
            out,
        )
        if not handled:
            self._arm_no_input(s, now)

    def _playback_done(self, s: CallState, ev: PlaybackDone, now: int, out: list[Effect]) -> None:
        before = len(s.playing)
        s.playing = [p for p in s.playing if p.request_id != ev.request_id]
        if before == len(s.playing) or s.playing:
            return
        if s.deferred is not None:
            self._run_deferred(s, now, out)
            return
        if self._state(s).terminal and not s.transferring:
            self._finish(s, "dialog reached a terminal state", now, out)
            return
        self._arm_first_digit(s, now)
        self._arm_no_input(s, now)

    # -- digits --

    def _dtmf(self, s: CallState, ev: Dtmf, now: int, out: list[Effect]) -> None:
        s.timers.pop("no_input", None)
        # A key press interrupts prompts that allow barge-in (callers who know the menu
        # type ahead); prompts that deny it keep playing.
        if s.playing and all(p.barge_in == BargeIn.ALLOW for p in s.playing):
            out.append(CancelSpeech(tuple(p.request_id for p in s.playing)))
            s.playing.clear()
        s.session.events.append(DTMFEvent(digit=ev.digit, duration_ms=ev.duration_ms))
        collecting = s.collecting
        if collecting is None:
            s.turn += 1
            if not self._dispatch(s, _Event(EventType.DTMF, {"digit": ev.digit}), now, out):
                self._arm_no_input(s, now)
            return
        spec = collecting.spec
        if spec.terminator is not None and ev.digit == spec.terminator:
            if len(collecting.digits) >= spec.min_digits:
                self._digits_done(s, now, out)
            else:
                self._collect_timeout(s, now, out, reason="terminator before min_digits")
            return
        collecting.digits += ev.digit
        if len(collecting.digits) >= spec.max_digits:
            self._digits_done(s, now, out)
            return
        s.timers["collect_digits"] = Timer(
            name="collect_digits", started_ms=now, deadline_ms=now + spec.inter_digit_timeout_ms
        )

    def _digits_done(self, s: CallState, now: int, out: list[Effect]) -> None:
        assert s.collecting is not None
        digits, s.collecting = s.collecting.digits, None
        s.timers.pop("collect_digits", None)
        s.turn += 1
        s.last.digits = digits
        self._dispatch(s, _Event(EventType.DIGITS, {"digits": digits}), now, out)

    def _collect_timeout(self, s: CallState, now: int, out: list[Effect], reason: str) -> None:
        assert s.collecting is not None
        if len(s.collecting.digits) >= s.collecting.spec.min_digits:
            self._digits_done(s, now, out)
            return
        timer = s.timers.pop("collect_digits", None)
        digits, s.collecting = s.collecting.digits, None
        elapsed = now - timer.started_ms if timer else 0
        s.session.events.append(TimeoutEvent(elapsed_ms=max(elapsed, 0)))
        data = {"timer": "collect_digits", "timer_elapsed_ms": elapsed, "digits": digits}
        self._dispatch(s, _Event(EventType.TIMEOUT, data, timer="collect_digits"), now, out)

    # -- timers --

    def _fire_due_timers(self, s: CallState, now: int, out: list[Effect]) -> None:
        while not s.ended:
            due = sorted(
                (t for t in s.timers.values() if t.deadline_ms <= now),
                key=lambda t: (t.deadline_ms, t.name),
            )
            if not due:
                return
            timer = due[0]
            if timer.name == ENDPOINT_TIMER:
                self._commit_turn(s, now, out)
                continue
            if timer.name == DRAIN_TIMER:
                del s.timers[DRAIN_TIMER]
                if s.playing:
                    out.append(CancelSpeech(tuple(p.request_id for p in s.playing)))
                    s.playing.clear()
                self._run_deferred(s, now, out)
                continue
            if timer.name == "collect_digits" and s.collecting is not None:
                self._collect_timeout(s, now, out, reason="timeout")
                continue
            del s.timers[timer.name]
            elapsed = now - timer.started_ms
            s.session.events.append(TimeoutEvent(elapsed_ms=max(elapsed, 0)))
            handled = self._dispatch(
                s,
                _Event(
                    EventType.TIMEOUT,
                    {"timer": timer.name, "timer_elapsed_ms": elapsed},
                    timer=timer.name,
                ),
                now,
                out,
            )
            if not handled and timer.name == "max_duration":
                self._hangup(s, NORMAL_CLEARING, "maximum call duration reached", now, out)

    def _arm_first_digit(self, s: CallState, now: int) -> None:
        """Start the wait for the first digit once the prompts before it have finished."""
        if s.collecting is None or s.collecting.digits or s.playing:
            return
        s.timers["collect_digits"] = Timer(
            name="collect_digits",
            started_ms=now,
            deadline_ms=now + s.collecting.spec.timeout_ms,
        )

    def _arm_no_input(self, s: CallState, now: int) -> None:
        state = self._state(s)
        if s.playing or s.collecting or s.turn_in_progress or s.ended:
            return
        if state.no_input_timeout_ms > 0 and not state.terminal:
            s.timers["no_input"] = Timer(
                name="no_input", started_ms=now, deadline_ms=now + state.no_input_timeout_ms
            )

    # -- backend and LLM answers --

    def _backend_answer(self, s: CallState, ev: BackendAnswer, now: int, out: list[Effect]) -> None:
        pending = s.pending.pop(ev.key, None)
        if pending is None:
            out.append(Warn("backend answer for no pending request", {"key": ev.key}))
            return
        s.last.ok = ev.ok
        error = {} if ev.ok else _err("backend", ev.error_code, ev.error_message)
        response = ev.response if ev.ok else {"error": error}
        s.session.events.append(BackendResultEvent(response=response))
        if ev.ok:
            s.last.result = ev.response
        data = {
            "ok": ev.ok,
            "result": ev.response if ev.ok else None,
            "error": error,
        }
        outcome = Outcome.SUCCESS if ev.ok else Outcome.ERROR
        handled = self._dispatch(s, _Event(EventType.BACKEND_RESULT, data, outcome), now, out)
        if not handled and not ev.ok:
            self._dispatch(s, _Event(EventType.ERROR, {"error": error}), now, out)

    def _llm_answer(self, s: CallState, ev: LlmAnswer, now: int, out: list[Effect]) -> None:
        if s.pending.pop(ev.key, None) is None:
            out.append(Warn("LLM answer for no pending request", {"key": ev.key}))
            return
        if ev.ok:
            data = {"label": ev.label, "slots": dict(ev.slots)}
            self._dispatch(s, _Event(EventType.LLM_RESULT, data), now, out)
        else:
            error = _err("llm", ev.error_code, ev.error_message)
            self._dispatch(s, _Event(EventType.ERROR, {"error": error}), now, out)

    def _caller_hangup(self, s: CallState, ev: CallerHangup, now: int, out: list[Effect]) -> None:
        s.playing.clear()
        s.deferred = None
        self._dispatch(s, _Event(EventType.HANGUP), now, out, leaving=True)
        self._finish(s, ev.reason, now, out, hang_up=False)

    # -- dispatch --

    def _dispatch(
        self, s: CallState, ev: _Event, now: int, out: list[Effect], leaving: bool = False
    ) -> bool:
        """Take the first matching transition of the state, then of the globals."""
        state = self._state(s)
        for t in (*state.transitions, *self.dialog.global_transitions):
            if t.event != ev.type:
                continue
            if ev.type == EventType.BACKEND_RESULT and t.outcome not in (Outcome.ANY, ev.outcome):
                continue
            if t.timer is not None and t.timer != ev.timer:
                continue
            if t.timer is None and ev.timer == "max_duration":
                continue  # the call's time limit is only caught by name, never by accident
            act = self._activation(s, ev, now)
            if t.condition is not None:
                try:
                    if not truthy(t.condition.evaluate(act)):
                        continue
                except CelEvalError as exc:
                    out.append(
                        Warn(
                            "condition failed; transition skipped",
                            {"path": t.path, "error": str(exc)},
                        )
                    )
                    continue
            self._take(s, t, ev, act, now, out, leaving)
            return True
        if ev.type == EventType.ERROR and not leaving:
            self._hangup(s, TEMPORARY_FAILURE, "unhandled error", now, out)
        return False

    def _take(
        self,
        s: CallState,
        t: c.CompiledTransition,
        ev: _Event,
        act: dict[str, Any],
        now: int,
        out: list[Effect],
        leaving: bool,
    ) -> None:
        before = s.session.state
        s.history.append(
            Step(
                at_ms=now,
                event=ev.type.value,
                from_state=before,
                to_state=t.target or before,
                transition=t.path,
            )
        )
        del s.history[:-200]
        try:
            self._run_actions(s, t.actions, act, now, out, leaving)
        except _ActionError as exc:
            if leaving:  # the caller is gone: no error handling, no hangup of our own
                out.append(Warn("action failed", {"error": str(exc)}))
            else:
                self._action_failed(s, ev.type == EventType.ERROR, str(exc), now, out)
            return
        if t.target is not None and not s.ended and not leaving:
            self._enter(s, t.target, now, out, cause=ev)

    def _enter(
        self, s: CallState, name: str, now: int, out: list[Effect], cause: _Event | None = None
    ) -> None:
        s.session.state = name
        s.state_entered_ms = now
        for timer in ("no_input", "collect_digits", ENDPOINT_TIMER):
            s.timers.pop(timer, None)
        s.collecting = None
        state = self._state(s)
        act = self._activation(s, _Event(EventType.TIMEOUT), now) | {"event": "enter"}
        try:
            self._run_actions(s, state.on_enter, act, now, out, leaving=False)
        except _ActionError as exc:
            # An error event, unless this state was entered to handle one (no loops).
            handling_error = cause is not None and cause.type == EventType.ERROR
            self._action_failed(s, handling_error, str(exc), now, out)
            return
        if s.ended:
            return
        if state.terminal and not s.playing and not s.transferring and s.deferred is None:
            self._finish(s, "dialog reached a terminal state", now, out)
        else:
            self._arm_no_input(s, now)

    def _action_failed(
        self, s: CallState, handling_error: bool, message: str, now: int, out: list[Effect]
    ) -> None:
        out.append(Warn("action failed", {"error": message}))
        if handling_error:  # an error while handling an error: give up cleanly
            self._hangup(s, TEMPORARY_FAILURE, message, now, out)
            return
        self._dispatch(
            s, _Event(EventType.ERROR, {"error": _err("action", "failed", message)}), now, out
        )

    # -- actions --

    def _run_actions(
        self,
        s: CallState,
        actions: tuple[c.CompiledAction, ...],
        act: dict[str, Any],
        now: int,
        out: list[Effect],
        leaving: bool,
    ) -> None:
        settings = self.dialog.spec.settings
        for action in actions:
            if s.ended:
                return
            match action:
                case c.SetVars():
                    for name, expr in action.assignments:
                        try:
                            s.vars[name] = plain(expr.evaluate(act))
                        except CelEvalError as exc:
                            raise _ActionError(f"set {name}: {exc}") from None
                        act["vars"] = dict(s.vars)
                case c.CallHook():
                    payload = _render(action.payload.render, act)
                    if not isinstance(payload, dict):
                        raise _ActionError("call_hook payload must render to an object")
                    s.session.actions.append(
                        CallHookRecord(
                            service=action.service, method=action.method, payload=payload
                        )
                    )
                    index = len(s.session.actions) - 1
                    key = s.session.idempotency_key(index)
                    deadline = now + action.timeout_ms
                    s.pending[key] = PendingRequest(
                        kind="call_hook",
                        key=key,
                        action_index=index,
                        service=action.service,
                        method=action.method,
                        payload=payload,
                        started_ms=now,
                        deadline_ms=deadline,
                    )
                    out.append(
                        ExecuteHook(
                            key, str(index), action.service, action.method, payload, deadline
                        )
                    )
                case _ if leaving:
                    continue  # after a hangup only set and call_hook make sense
                case c.PlayTts():
                    text = _render(action.text.render_text, act)
                    voice = action.voice or settings.voice or ""
                    request_id = s.next_id("p")
                    s.session.actions.append(
                        PlayTtsRecord(text=text, voice=action.voice or settings.voice)
                    )
                    s.playing.append(Playback(request_id=request_id, barge_in=action.barge_in))
                    s.timers.pop("no_input", None)
                    out.append(Speak(request_id, text, voice, action.barge_in))
                case c.Transfer():
                    target = _render(action.target.render_text, act)
                    if not c._URI.match(target):
                        raise _ActionError(f"transfer target {target!r} is not a SIP/tel URI")
                    s.session.actions.append(TransferRecord(target=target))
                    if s.playing:
                        self._defer(s, Deferred(kind="transfer", target=target), now)
                    else:
                        s.transferring = s.next_id("c")
                        out.append(TransferCall(s.transferring, target))
                    return  # the call is leaving: later actions would not be heard
                case c.Hangup():
                    self._hangup(s, action.reason_code, "dialog hung up", now, out)
                    return  # like transfer: later actions would not be heard
                case c.CollectDigits():
                    s.collecting = DigitCollection(spec=action.spec)
                    s.timers.pop("no_input", None)
                    s.timers.pop("collect_digits", None)
                    self._arm_first_digit(s, now)
                case c.StartTimer():
                    s.timers[action.name] = Timer(
                        name=action.name, started_ms=now, deadline_ms=now + action.ms
                    )
                case c.CancelTimer():
                    s.timers.pop(action.name, None)
                case c.Llm():
                    spec = action.spec
                    request: dict[str, JsonValue] = {
                        "mode": spec.mode,
                        "prompt": _render(action.prompt.render_text, act),
                        "input": _render(action.input.render_text, act),
                        "labels": list(spec.labels),
                        "slots": dict(spec.slots),
                    }
                    key = s.next_id("llm")
                    deadline = now + action.timeout_ms
                    s.pending[key] = PendingRequest(
                        kind="llm", key=key, llm=request, started_ms=now, deadline_ms=deadline
                    )
                    out.append(AskLlm(key, request, deadline))

    def _hangup(
        self, s: CallState, reason_code: int, reason: str, now: int, out: list[Effect]
    ) -> None:
        """Hang up now, or after the prompts still playing (a goodbye is heard in full)."""
        if s.ended or (s.deferred is not None and s.deferred.kind == "hangup"):
            return
        if s.playing:
            self._defer(s, Deferred(kind="hangup", reason_code=reason_code, reason=reason), now)
            return
        s.session.actions.append(HangupRecord(reason_code=reason_code))
        out.append(HangupCall(s.next_id("c"), reason_code))
        self._finish(s, reason, now, out, hang_up=False)

    def _defer(self, s: CallState, deferred: Deferred, now: int) -> None:
        s.deferred = deferred
        # Leaving: the dialog's own timers (named ones included) must not fire any more.
        s.timers = {name: t for name, t in s.timers.items() if name == "max_duration"}
        s.collecting = None
        s.timers[DRAIN_TIMER] = Timer(
            name=DRAIN_TIMER, started_ms=now, deadline_ms=now + DRAIN_LIMIT_MS
        )

    def _run_deferred(self, s: CallState, now: int, out: list[Effect]) -> None:
        deferred, s.deferred = s.deferred, None
        s.timers.pop(DRAIN_TIMER, None)
        if deferred is None:
            return
        if deferred.kind == "hangup":
            s.session.actions.append(HangupRecord(reason_code=deferred.reason_code))
            out.append(HangupCall(s.next_id("c"), deferred.reason_code))
            self._finish(s, deferred.reason, now, out, hang_up=False)
        else:
            s.transferring = s.next_id("c")
            out.append(TransferCall(s.transferring, deferred.target))

    def _finish(
        self, s: CallState, reason: str, now: int, out: list[Effect], hang_up: bool = True
    ) -> None:
        if s.ended:
            return
        if hang_up:
            self._hangup(s, NORMAL_CLEARING, reason, now, out)
            return
        s.ended = True
        s.end_reason = reason
        s.timers.clear()
        out.append(SessionEnded(reason))

    # -- helpers --

    def _state(self, s: CallState) -> c.CompiledState:
        return self.dialog.states[s.session.state]

    def _activation(self, s: CallState, ev: _Event, now: int) -> dict[str, Any]:
        headers: dict[str, str] = {}
        for h in s.session.caller.sip_headers:
            headers[h.name] = h.value
        base: dict[str, Any] = {
            "event": ev.type.value,
            "state": s.session.state,
            "turn": s.turn,
            "elapsed_ms": now - s.started_ms,
            "state_elapsed_ms": now - s.state_entered_ms,
            "transcript": s.last.transcript,
            "confidence": s.last.confidence,
            "intent": s.last.intent,
            "intent_score": s.last.intent_score,
            "digit": "",
            "digits": s.last.digits,
            "timer": "",
            "timer_elapsed_ms": 0,
            "ok": s.last.ok,
            "result": s.last.result,
            "error": {},
            "label": "",
            "slots": {},
            "vars": dict(s.vars),
            "caller": {"id": s.session.caller.caller_id, "headers": headers},
        }
        base.update(ev.data)
        return base


def _render(fn: Any, act: dict[str, Any]) -> Any:
    try:
        return fn(act)
    except CelEvalError as exc:
        raise _ActionError(str(exc)) from None


def _err(kind: str, code: str, message: str) -> dict[str, str]:
    return {"kind": kind, "code": code, "message": message}
