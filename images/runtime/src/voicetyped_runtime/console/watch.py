"""One call seen by the console: what its actor and its speech stream do, turned into feed
events (transcripts, keys, prompts, barge-ins, backend calls, timers, state changes, turn
latencies) and summary changes. Called from ``CallActor`` and ``ConverseStream``; never
blocks and never raises into the call."""

from __future__ import annotations

from voicetyped.service import tracing
from voicetyped.v1 import speech_pb2

from voicetyped_runtime import engine_io as e
from voicetyped_runtime.console.feed import CallFeed, CallFeeds, mask
from voicetyped_runtime.console.turns import TurnClock
from voicetyped_runtime.state import CallState, Step

_PLAYBACK = {
    speech_pb2.PlaybackEvent.KIND_STARTED: "started",
    speech_pb2.PlaybackEvent.KIND_FINISHED: "finished",
    speech_pb2.PlaybackEvent.KIND_CANCELLED: "cancelled",
}
_CALLER_TURNS = (e.Transcript, e.Dtmf)


def _step(step: Step) -> dict[str, str | int]:
    return {
        "event": step.event,
        "from": step.from_state,
        "to": step.to_state,
        "transition": step.transition,
        "step_ms": step.at_ms,
    }


class CallWatch:
    def __init__(
        self, feeds: CallFeeds, state: CallState, version_hash: str, mask_callers: bool
    ) -> None:
        self.feeds = feeds
        caller = state.session.caller.caller_id
        self.feed: CallFeed = feeds.open(
            {
                "session_id": state.session_id,
                "caller": mask(caller) if mask_callers else caller,
                "dialog": state.dialog,
                "version": version_hash,
                "state": state.fsm_state,
                "started_ms": state.started_ms,
                "ended_ms": None,
                "turn": state.turn,
            }
        )
        self.clock = TurnClock()
        self._last_step: Step | None = None
        self._timers: dict[str, int] = {}
        self._prompts: dict[str, str] = {}  # request id -> text (for playback events)
        self._steps(state)  # a resumed call: the path so far

    # -- from the actor --

    def input(self, item: e.Input) -> None:
        match item:
            case e.Dtmf():
                self.feed.publish("dtmf", digit=item.digit)
            case e.CallerHangup():
                self.feed.publish("hangup", by="caller", reason=item.reason)
            case e.CommandFailed():
                self.feed.publish("command_failed", detail=item.detail, sip_status=item.sip_status)
            case e.Transcript() if item.final and item.intent:
                self.feed.publish(
                    "intent",
                    utterance_id=item.utterance_id,
                    intent=item.intent,
                    score=round(item.intent_score, 3),
                )

    def stepped(
        self, state: CallState, item: e.Input, effects: list[e.Effect], arrived_ns: int | None
    ) -> None:
        """The engine took ``item`` and its ``effects`` were sent."""
        sent_ns = tracing.wall_ns()
        self._steps(state)
        self._timers_changed(state)
        speaks: list[str] = []
        for effect in effects:
            match effect:
                case e.Speak():
                    speaks.append(effect.request_id)
                    self._prompts[effect.request_id] = effect.text
                    self.feed.publish(
                        "prompt",
                        request_id=effect.request_id,
                        text=effect.text,
                        barge_in=effect.barge_in.value,
                    )
                case e.CancelSpeech():
                    barged = isinstance(item, (e.SpeechStarted, e.Transcript))
                    self.feed.publish(
                        "barge_in" if barged else "speech_cancelled",
                        request_ids=list(effect.request_ids),
                    )
                case e.ExecuteHook():
                    self.feed.publish(
                        "backend_call",
                        key=effect.key,
                        service=effect.service,
                        method=effect.method,
                    )
                case e.TransferCall():
                    self.feed.publish("transfer", target=effect.target)
                case e.HangupCall():
                    self.feed.publish("hangup", by="bot", reason_code=effect.reason_code)
                case e.AskLlm():
                    self.feed.publish("llm_call", key=effect.key)
                case e.Warn():
                    self.feed.publish("warning", message=effect.message)
        if arrived_ns is not None and isinstance(item, _CALLER_TURNS):
            utterance = item.utterance_id if isinstance(item, e.Transcript) else None
            trigger = "speech" if utterance is not None else "dtmf"
            self.clock.decided(utterance, trigger, arrived_ns, sent_ns, speaks)
        summary = self.feed.summary
        if summary.get("state") != state.fsm_state or summary.get("turn") != state.turn:
            self.feed.update(state=state.fsm_state, turn=state.turn)

    def backend_answered(self, effect: e.ExecuteHook, answer: e.BackendAnswer, ms: float) -> None:
        self.feed.publish(
            "backend_answer",
            key=effect.key,
            service=effect.service,
            method=effect.method,
            ok=answer.ok,
            error_code=answer.error_code,
            latency_ms=round(ms, 1),
        )

    def finished(self, state: CallState, kept: bool, retention_s: float) -> None:
        self.feeds.close(self.feed, kept, retention_s, state.end_reason)

    def handed_over(self) -> None:
        self.feeds.forget(self.feed.session_id)

    # -- from the speech stream --

    def speech(self, update: speech_pb2.SpeechUpdate) -> None:
        now = tracing.wall_ns()
        kind = update.WhichOneof("msg")
        if kind == "transcript":
            t = update.transcript
            final = t.kind == speech_pb2.TranscriptEvent.KIND_FINAL
            if final:
                self.clock.final(t.utterance_id, now)
            self.feed.publish(
                "transcript",
                utterance_id=t.utterance_id,
                text=t.speech.transcript,
                final=final,
                confidence=round(t.speech.confidence, 3),
            )
        elif kind == "vad":
            v = update.vad
            start = v.kind == speech_pb2.VadEvent.KIND_SPEECH_START
            if not start:
                self.clock.vad_end(v.utterance_id, v.at_ms, now)
            self.feed.publish(
                "vad",
                edge="start" if start else "end",
                utterance_id=v.utterance_id,
                call_ms=v.at_ms,
            )
        elif kind == "playback":
            p = update.playback
            what = _PLAYBACK.get(p.kind)
            if what is None:
                return
            self.feed.publish(
                "playback",
                edge=what,
                request_id=p.request_id,
                text=self._prompts.get(p.request_id, ""),
                played_ms=p.played_ms,
            )
            if what == "started":
                turn = self.clock.playback_started(p.request_id, now)
                if turn is not None:
                    trigger, stages = turn
                    self.feed.publish("turn", trigger=trigger, stages=dict(stages))
            else:
                self._prompts.pop(p.request_id, None)
                self.clock.call_time_sample(p.at_ms, now)

    # -- helpers --

    def _steps(self, state: CallState) -> None:
        """Publish the steps taken since the last one published (history keeps only its last
        200 steps, so the last one seen is looked up, not counted)."""
        history = state.history
        last = self._last_step
        start = 0
        if last is not None:
            start = next((i + 1 for i in range(len(history) - 1, -1, -1) if history[i] is last), 0)
        for step in history[start:]:
            self.feed.publish("step", **_step(step))
        if history:
            self._last_step = history[-1]

    def _timers_changed(self, state: CallState) -> None:
        now = {n: t.deadline_ms for n, t in state.timers.items() if not n.startswith("_")}
        for name, deadline in now.items():
            if self._timers.get(name) != deadline:
                self.feed.publish("timer", name=name, edge="armed", deadline_ms=deadline)
        for name in self._timers.keys() - now.keys():
            self.feed.publish("timer", name=name, edge="cleared")
        self._timers = now
