"""The dialog engine: a pure, deterministic step function.

``Engine.step(state, input, now_ms)`` mutates one call's :class:`CallState`
and returns the effects to carry out (speak, cancel speech, call a backend,
transfer, hang up, ...). It does no I/O and reads no clock: the same inputs at
the same times always give the same state and effects, which is what makes
calls replayable in the simulator and resumable after a restart.

The engine turns the call's inputs into dialog events for the state machine it
extends (:mod:`.fsm`: transitions, actions, effects). This module is the
turn-taking: it assembles the caller's utterances from VAD and transcript
inputs (endpointing per state), handles barge-in against the prompts still
playing, collects digits, fires the built-in timers (``no_input``,
``max_duration``, ``collect_digits``) and takes backend and LLM answers.

A caller turn the recogniser made nothing of (an empty final: nothing heard,
recognition overloaded or out of time) or whose final never came
(:data:`FINAL_LIMIT_MS` after the end of speech) is logged and answered as if
the caller had said nothing: the state's ``no_input`` timeout (while
collecting digits: its ``collect_digits`` timeout) fires at once, so the
dialog's re-prompt plays instead of silence until the timer would have.
"""

from __future__ import annotations

from voicetyped.session import (
    BackendResultEvent,
    DTMFEvent,
    SpeechEvent,
    SpeechTiming,
    TimeoutEvent,
)
from voicetyped_specs.dialog.model import BargeIn, EventType, Outcome
from voicetyped_specs.dialog.spoken import spoken_digits

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
from voicetyped_runtime.fsm import (
    DRAIN_LIMIT_MS,
    DRAIN_TIMER,
    ENDPOINT_TIMER,
    FINAL_LIMIT_MS,
    FINAL_TIMER,
    DialogFsm,
    Event,
    error_data,
)
from voicetyped_runtime.state import (
    CallState,
    PendingTurn,
    Step,
    Timer,
)

# The inputs and effects are engine_io's, the timer names fsm's; re-exported so `engine.Speak`
# keeps working.
__all__ = [
    "DRAIN_LIMIT_MS",
    "DRAIN_TIMER",
    "ENDPOINT_TIMER",
    "FINAL_LIMIT_MS",
    "FINAL_TIMER",
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


class Engine(DialogFsm):
    """Runs one compiled dialog for a call: its inputs become dialog events for the state
    machine it extends. Holds no per-call state (that is all in CallState)."""

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
                self._speech_ended(s, event, now_ms)
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
                self._transfer_failed(s, event, now_ms, out)
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
            self._dispatch(s, Event(EventType.BARGE_IN), now, out)

    def _speech_ended(self, s: CallState, ev: SpeechEnded, now: int) -> None:
        turn = s.turn_in_progress
        if turn is None or ev.utterance_id in s.ignored_utterances:
            return
        turn.speaking = False
        if ev.utterance_id not in turn.awaiting:
            turn.awaiting.append(ev.utterance_id)
        s.timers[FINAL_TIMER] = Timer(
            name=FINAL_TIMER, started_ms=now, deadline_ms=now + FINAL_LIMIT_MS
        )

    def _transcript(self, s: CallState, ev: Transcript, now: int, out: list[Effect]) -> None:
        if ev.utterance_id in s.ignored_utterances:
            if ev.final:
                s.ignored_utterances.remove(ev.utterance_id)
            return
        if not ev.final:
            if self.dialog.spec.settings.partials:
                data = {"transcript": ev.text, "confidence": ev.confidence}
                data |= {"intent": ev.intent, "intent_score": ev.intent_score}
                self._dispatch(s, Event(EventType.PARTIAL, data), now, out)
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
        if ev.utterance_id in turn.awaiting:
            turn.awaiting.remove(ev.utterance_id)
        s.turn_in_progress = turn
        if turn.awaiting:
            return  # the turn is taken with the last of its finals (or at FINAL_TIMER)
        s.timers.pop(FINAL_TIMER, None)
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
        s.timers.pop(FINAL_TIMER, None)
        if turn is None:
            return
        text = " ".join(turn.texts)
        if not text:
            out.append(
                Warn(
                    "caller turn not recognised (empty final transcript); re-prompting",
                    {"state": s.session.state},
                )
            )
            self._unrecognised(s, now, out)
            return
        if s.collecting is not None and "collect_digits" not in s.timers:
            self._arm_first_digit(s, now)  # its wait was held while the caller spoke
        if len(text.split()) < self._state(s).endpointing.min_words:
            self._arm_no_input(s, now)
            return
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
        if self._spoken_digits(s, text):
            self._digits_done(s, now, out)
            return
        s.turn += 1
        handled = self._dispatch(
            s,
            Event(
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

    def _unrecognised(self, s: CallState, now: int, out: list[Effect]) -> None:
        """The caller spoke but nothing was recognised: answer as if they had said nothing, at
        once (the state's timeout re-prompts; waiting for it would leave them in silence)."""
        if s.collecting is not None:
            self._collect_timeout(s, now, out, reason="turn not recognised")
        elif not self._timeout(s, "no_input", now, now, out):
            self._arm_no_input(s, now)

    def _transfer_failed(
        self, s: CallState, ev: CommandFailed, now: int, out: list[Effect]
    ) -> None:
        """The far end refused the transfer: a ``transfer_failed`` event with the SIP status;
        a dialog that does not handle it gets the ``error`` event it always got."""
        s.transferring = ""
        out.append(Warn("transfer failed", {"sip_status": ev.sip_status, "reason": ev.detail}))
        data = {
            "sip_status": ev.sip_status,
            "error": error_data("transfer", "failed", ev.detail),
        }
        if not self._dispatch(s, Event(EventType.TRANSFER_FAILED, data), now, out):
            self._dispatch(s, Event(EventType.ERROR, data), now, out)

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
        if s.playing and all(p.barge_in != BargeIn.DENY for p in s.playing):
            out.append(CancelSpeech(tuple(p.request_id for p in s.playing)))
            s.playing.clear()
        s.session.events.append(DTMFEvent(digit=ev.digit, duration_ms=ev.duration_ms))
        collecting = s.collecting
        if collecting is None:
            s.turn += 1
            if not self._dispatch(s, Event(EventType.DTMF, {"digit": ev.digit}), now, out):
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

    @staticmethod
    def _digits_may_be_spoken(s: CallState) -> bool:
        c = s.collecting
        return c is not None and c.spec.spoken and not c.digits and s.turn_in_progress is not None

    def _spoken_digits(self, s: CallState, text: str) -> bool:
        """A turn said while collect_digits waits for its first key: its digits complete the
        collection when there are min_digits to max_digits of them."""
        collecting = s.collecting
        if collecting is None or collecting.digits or not collecting.spec.spoken:
            return False
        digits = spoken_digits(text, self.dialog.spec.settings.language)
        if not collecting.spec.min_digits <= len(digits) <= collecting.spec.max_digits:
            return False
        collecting.digits = digits
        return True

    def _digits_done(self, s: CallState, now: int, out: list[Effect]) -> None:
        assert s.collecting is not None
        digits, s.collecting = s.collecting.digits, None
        s.timers.pop("collect_digits", None)
        s.turn += 1
        s.last.digits = digits
        self._dispatch(s, Event(EventType.DIGITS, {"digits": digits}), now, out)

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
        self._dispatch(s, Event(EventType.TIMEOUT, data, timer="collect_digits"), now, out)

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
            if timer.name == FINAL_TIMER:
                waited = s.turn_in_progress.awaiting if s.turn_in_progress else []
                out.append(
                    Warn(
                        "no final transcript after the end of speech; taking the turn without it",
                        {"utterances": list(waited), "waited_ms": now - timer.started_ms},
                    )
                )
                s.ignored_utterances.extend(waited)  # a final arriving later changes nothing
                del s.ignored_utterances[:-16]
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
                if self._digits_may_be_spoken(s):
                    # The caller is saying something, perhaps the digits: wait for the turn.
                    del s.timers[timer.name]
                    continue
                self._collect_timeout(s, now, out, reason="timeout")
                continue
            del s.timers[timer.name]
            handled = self._timeout(s, timer.name, timer.started_ms, now, out)
            if not handled and timer.name == "max_duration":
                self._hangup(s, NORMAL_CLEARING, "maximum call duration reached", now, out)

    def _timeout(self, s: CallState, name: str, started: int, now: int, out: list[Effect]) -> bool:
        """Dispatch the timeout of timer ``name`` (started at ``started``); True if handled."""
        elapsed = now - started
        s.session.events.append(TimeoutEvent(elapsed_ms=max(elapsed, 0)))
        return self._dispatch(
            s,
            Event(EventType.TIMEOUT, {"timer": name, "timer_elapsed_ms": elapsed}, timer=name),
            now,
            out,
        )

    # -- backend and LLM answers --

    def _backend_answer(self, s: CallState, ev: BackendAnswer, now: int, out: list[Effect]) -> None:
        pending = s.pending.pop(ev.key, None)
        if pending is None:
            out.append(Warn("backend answer for no pending request", {"key": ev.key}))
            return
        s.last.ok = ev.ok
        error = {} if ev.ok else error_data("backend", ev.error_code, ev.error_message)
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
        handled = self._dispatch(s, Event(EventType.BACKEND_RESULT, data, outcome), now, out)
        if not handled and not ev.ok:
            self._dispatch(s, Event(EventType.ERROR, {"error": error}), now, out)

    def _llm_answer(self, s: CallState, ev: LlmAnswer, now: int, out: list[Effect]) -> None:
        if s.pending.pop(ev.key, None) is None:
            out.append(Warn("LLM answer for no pending request", {"key": ev.key}))
            return
        if ev.ok:
            data = {"label": ev.label, "slots": dict(ev.slots)}
            self._dispatch(s, Event(EventType.LLM_RESULT, data), now, out)
        else:
            error = error_data("llm", ev.error_code, ev.error_message)
            self._dispatch(s, Event(EventType.ERROR, {"error": error}), now, out)

    def _caller_hangup(self, s: CallState, ev: CallerHangup, now: int, out: list[Effect]) -> None:
        s.playing.clear()
        s.deferred = None
        self._dispatch(s, Event(EventType.HANGUP), now, out, leaving=True)
        self._finish(s, ev.reason, now, out, hang_up=False)
