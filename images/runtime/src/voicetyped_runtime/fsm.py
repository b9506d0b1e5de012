"""The dialog state machine: dialog events -> the state's (then the globals') first matching
transition -> its actions -> effects, entering the target state and running its ``on_enter``.

It is the half of the :class:`~voicetyped_runtime.engine.Engine` that knows the dialog; the
engine feeds it dialog events made from the call's inputs (turn-taking, digits, timers, backend
and LLM answers). Pure like the engine: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue
from voicetyped.session import CallHook as CallHookRecord
from voicetyped.session import Hangup as HangupRecord
from voicetyped.session import PlayTTS as PlayTtsRecord
from voicetyped.session import Transfer as TransferRecord
from voicetyped_specs.dialog import compiled as c
from voicetyped_specs.dialog.cel import CelEvalError, truthy
from voicetyped_specs.dialog.model import EventType, Outcome
from voicetyped_specs.dialog.template import plain

from voicetyped_runtime.engine_io import (
    NORMAL_CLEARING,
    TEMPORARY_FAILURE,
    AskLlm,
    Effect,
    ExecuteHook,
    HangupCall,
    SessionEnded,
    Speak,
    TransferCall,
    Warn,
)
from voicetyped_runtime.state import (
    CallState,
    Deferred,
    DigitCollection,
    PendingRequest,
    Playback,
    Step,
    Timer,
)

ENDPOINT_TIMER = "_endpoint"  # internal: silence after a final before the turn is taken
FINAL_TIMER = "_final"  # internal: upper bound on waiting for an ended utterance's final
FINAL_LIMIT_MS = 10_000
DRAIN_TIMER = "_drain"  # internal: upper bound on waiting for prompts before hangup/transfer
DRAIN_LIMIT_MS = 60_000


@dataclass
class Event:
    """A dialog-level event with the data it adds to the activation."""

    type: EventType
    data: dict[str, Any] = field(default_factory=dict)
    outcome: Outcome = Outcome.SUCCESS
    timer: str | None = None


class ActionError(Exception):
    pass


class DialogFsm:
    """Runs one compiled dialog's states and transitions; all per-call state is in CallState."""

    def __init__(self, dialog: c.CompiledDialog) -> None:
        self.dialog = dialog

    # -- dispatch --

    def _dispatch(
        self, s: CallState, ev: Event, now: int, out: list[Effect], leaving: bool = False
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
        ev: Event,
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
        except ActionError as exc:
            if leaving:  # the caller is gone: no error handling, no hangup of our own
                out.append(Warn("action failed", {"error": str(exc)}))
            else:
                self._action_failed(s, ev.type == EventType.ERROR, str(exc), now, out)
            return
        if t.target is not None and not s.ended and not leaving:
            self._enter(s, t.target, now, out, cause=ev)

    def _enter(
        self, s: CallState, name: str, now: int, out: list[Effect], cause: Event | None = None
    ) -> None:
        s.session.state = name
        s.state_entered_ms = now
        for timer in ("no_input", "collect_digits", ENDPOINT_TIMER, FINAL_TIMER):
            s.timers.pop(timer, None)
        s.collecting = None
        state = self._state(s)
        act = self._activation(s, Event(EventType.TIMEOUT), now) | {"event": "enter"}
        try:
            self._run_actions(s, state.on_enter, act, now, out, leaving=False)
        except ActionError as exc:
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
            s, Event(EventType.ERROR, {"error": error_data("action", "failed", message)}), now, out
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
                    for a in action.assignments:
                        try:
                            s.vars[a.var] = a.type.admit(plain(a.value.evaluate(act)))
                        except CelEvalError as exc:
                            raise ActionError(f"set {a.var}: {exc}") from None
                        except TypeError as exc:  # a dyn value (result, slots) of another type
                            raise ActionError(
                                f"set {a.var}: {a.value.source!r} gave {exc} (the type of "
                                f"vars.{a.var})"
                            ) from None
                        act["vars"] = dict(s.vars)
                case c.CallHook():
                    payload = render(action.payload.render, act)
                    if not isinstance(payload, dict):
                        raise ActionError("call_hook payload must render to an object")
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
                    text = render(action.text.render_speech, act)
                    voice = action.voice or settings.voice or ""
                    request_id = s.next_id("p")
                    s.session.actions.append(
                        PlayTtsRecord(text=text, voice=action.voice or settings.voice)
                    )
                    s.playing.append(Playback(request_id=request_id, barge_in=action.barge_in))
                    s.timers.pop("no_input", None)
                    out.append(Speak(request_id, text, voice, action.barge_in))
                case c.Transfer():
                    target = render(action.target.render_text, act)
                    if not c.CALL_TARGET.match(target):
                        raise ActionError(f"transfer target {target!r} is not a SIP/tel URI")
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
                        "prompt": render(action.prompt.render_text, act),
                        "input": render(action.input.render_text, act),
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

    def _activation(self, s: CallState, ev: Event, now: int) -> dict[str, Any]:
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
            "sip_status": 0,
            "label": "",
            "slots": {},
            "vars": dict(s.vars),
            "caller": {"id": s.session.caller.caller_id, "headers": headers},
        }
        base.update(ev.data)
        return base

    # -- built-in timers a state arms --

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


def render(fn: Any, act: dict[str, Any]) -> Any:
    try:
        return fn(act)
    except CelEvalError as exc:
        raise ActionError(str(exc)) from None


def error_data(kind: str, code: str, message: str) -> dict[str, str]:
    return {"kind": kind, "code": code, "message": message}
