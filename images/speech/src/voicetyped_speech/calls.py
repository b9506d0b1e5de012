"""The calls a speech replica holds: one audio stream (media) and one update stream (runtime).

A :class:`SpeechCall` lives from the media gateway's ``StreamAudio`` start to its end. The
runtime's ``Converse`` stream attaches to it by session id, possibly later (or again, after a
runtime restart); updates produced while no runtime stream is attached are kept (bounded) and
delivered on attach, so a caller who speaks before the runtime is there loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Literal

from voicetyped.recognition import (
    Expect,
    InvalidContextError,
    RecognitionContext,
    TurnEndMode,
    context_from_proto,
)
from voicetyped.service import tracing
from voicetyped.service.logs import get_logger, session_context
from voicetyped.v1 import common_pb2, speech_pb2

from voicetyped_speech.asr.languages import LanguageError, ModelLanguages
from voicetyped_speech.asr.pool import Job, RecognitionPool
from voicetyped_speech.barge_in import (
    Action,
    AudioTail,
    BargeInGate,
    BargeInMode,
    BargeInSettings,
    Forward,
    Ignore,
    Probe,
    StopPrompt,
    VoiceMeter,
)
from voicetyped_speech.metrics import SpeechMetrics
from voicetyped_speech.playback import (
    Downlink,
    PlaybackUpdate,
    Player,
    PlayerEvent,
    SynthesisFailed,
)
from voicetyped_speech.streaming import (
    FinalTiming,
    RecognitionEvent,
    RecognitionOverloaded,
    StreamingRecognizer,
    StreamingSettings,
    TranscriptUpdate,
    TurnDecision,
    TurnEndSettings,
    UtteranceEnded,
    UtteranceStarted,
)
from voicetyped_speech.tts import Synthesizer
from voicetyped_speech.turn.runner import TurnModelRunner
from voicetyped_speech.vad import VadSettings

log = get_logger("voicetyped.speech.calls")
tracer = tracing.tracer("voicetyped.speech")

_VAD = speech_pb2.VadEvent
_TRANSCRIPT = speech_pb2.TranscriptEvent
_PLAYBACK = speech_pb2.PlaybackEvent
_PLAYBACK_KIND = {
    "started": _PLAYBACK.KIND_STARTED,
    "finished": _PLAYBACK.KIND_FINISHED,
    "cancelled": _PLAYBACK.KIND_CANCELLED,
}


_TURN_MODES: dict[TurnEndMode, Literal["semantic", "silence"]] = {
    TurnEndMode.SEMANTIC: "semantic",
    TurnEndMode.SILENCE: "silence",
}


def recognition_update(event: RecognitionEvent) -> speech_pb2.SpeechUpdate:
    if isinstance(event, UtteranceStarted):
        return speech_pb2.SpeechUpdate(
            vad=_VAD(
                kind=_VAD.KIND_SPEECH_START, utterance_id=event.utterance_id, at_ms=event.at_ms
            )
        )
    if isinstance(event, UtteranceEnded):
        return speech_pb2.SpeechUpdate(
            vad=_VAD(kind=_VAD.KIND_SPEECH_END, utterance_id=event.utterance_id, at_ms=event.at_ms)
        )
    if isinstance(event, TranscriptUpdate):
        return speech_pb2.SpeechUpdate(
            transcript=_TRANSCRIPT(
                kind=_TRANSCRIPT.KIND_FINAL if event.final else _TRANSCRIPT.KIND_PARTIAL,
                utterance_id=event.utterance_id,
                speech=common_pb2.SpeechEvent(
                    transcript=event.text,
                    confidence=event.confidence,
                    timing=common_pb2.SpeechTiming(start_ms=event.start_ms, end_ms=event.end_ms),
                ),
            )
        )
    return speech_pb2.SpeechUpdate(
        error=speech_pb2.SpeechError(
            code=speech_pb2.SpeechError.CODE_OVERLOADED,
            message=f"utterance {event.utterance_id}: {event.message}",
        )
    )


def player_update(event: PlayerEvent) -> speech_pb2.SpeechUpdate:
    if isinstance(event, SynthesisFailed):
        return speech_pb2.SpeechUpdate(
            error=speech_pb2.SpeechError(
                code=speech_pb2.SpeechError.CODE_SYNTHESIS_FAILED,
                message=event.message,
                request_id=event.request_id,
            )
        )
    return speech_pb2.SpeechUpdate(
        playback=_PLAYBACK(
            kind=_PLAYBACK_KIND[event.kind],
            request_id=event.request_id,
            at_ms=event.at_ms,
            played_ms=event.played_ms,
        )
    )


@dataclass
class _Subscriber:
    queue: asyncio.Queue[speech_pb2.SpeechUpdate | None]


class SpeechCall:
    """One call's recognition, playback and update routing."""

    def __init__(
        self,
        session_id: str,
        pool: RecognitionPool,
        synth: Synthesizer,
        playback_rate: int,
        metrics: SpeechMetrics,
        *,
        vad: VadSettings,
        streaming: StreamingSettings,
        voice_default: str,
        lead_ms: int,
        buffered_updates: int,
        trace_context: tracing.Context | None = None,
        languages: ModelLanguages | None = None,
        language: str = "",
        turn_model: TurnModelRunner | None = None,
        turn_end: TurnEndSettings | None = None,
        barge_in: BargeInSettings | None = None,
    ) -> None:
        self.session_id = session_id
        # Speech over `allow` prompts is held until it proves to be words (barge_in.py); the
        # held audio is probed for words (decodes of its own, never sent to the runtime).
        self._gate = BargeInGate(barge_in, frame_ms=vad.frame_ms)
        self._meter = VoiceMeter(vad.aggressiveness, vad.frame_ms)
        self._tail = AudioTail()
        self._pool = pool
        self._pre_roll_ms = vad.pre_roll_ms
        self._probe: tuple[str, Job, asyncio.Task[None]] | None = None
        self._runtime_partials = False  # whether the runtime asked for partial transcripts
        self._languages = languages
        self.trace = trace_context
        self._ended_at: dict[str, int] = {}  # utterance id -> wall ns its end was declared
        self.metrics = metrics
        self.downlink = Downlink()
        self._epoch = time.perf_counter()
        self._call_time_offset = 0  # call time of the stream's first audio
        self._backlog: deque[speech_pb2.SpeechUpdate] = deque(maxlen=buffered_updates)
        self._subscriber: _Subscriber | None = None
        self.ended = asyncio.Event()
        self.recognizer = StreamingRecognizer(
            session_id,
            pool,
            self._on_recognition,
            vad=vad,
            settings=streaming,
            on_final=self._on_final,
            turn_model=turn_model,
            turn_end=turn_end,
            on_turn=self._on_turn,
        )
        self._turn_default = self.recognizer.turn_end  # for states that do not say
        self.player = Player(
            session_id,
            synth,
            playback_rate,
            self.downlink,
            self._on_player,
            self.call_time_ms,
            voice_default=voice_default,
            lead_ms=lead_ms,
            on_first_audio=self._tts_started,
        )
        self._player_task = asyncio.get_running_loop().create_task(
            self._run_player(), name=f"playback-{session_id}"
        )
        self._first_audio = True
        metrics.streams.inc()
        self.set_language(language, "AudioStreamStart.language")

    def set_language(self, language: str, where: str) -> None:
        """Recognise this call in ``language`` from now on (empty: no change). One the model
        does not know is reported to the runtime (SpeechError CODE_LANGUAGE_UNSUPPORTED) and
        logged, and recognition stays in the language it had."""
        if not language:
            return
        code = language
        if self._languages is not None:
            try:
                code = self._languages.check(language, where)
            except LanguageError as exc:
                log.error("recognition language not supported", error=str(exc))
                self._send(
                    speech_pb2.SpeechUpdate(
                        error=speech_pb2.SpeechError(
                            code=speech_pb2.SpeechError.CODE_LANGUAGE_UNSUPPORTED,
                            message=str(exc),
                        )
                    )
                )
                return
        if code != self.recognizer.options.language:
            self.recognizer.options = replace(self.recognizer.options, language=code)
            log.info("recognition language", language=code)

    def call_time_ms(self) -> int:
        return self._call_time_offset + round((time.perf_counter() - self._epoch) * 1000)

    def push_audio(self, pcm: bytes, start_ms: int) -> None:
        if self._first_audio:
            # Align the call clock with the media gateway's: this audio started at start_ms.
            self._first_audio = False
            self._call_time_offset = start_ms
            self._epoch = time.perf_counter() - len(pcm) / 32.0 / 1000
        pcm = pcm[: len(pcm) & ~1]
        self.recognizer.push(pcm, start_ms)
        if self._gate.tracking or self.player.barge_in_mode() == BargeInMode.ALLOW:
            self._tail.push(pcm, start_ms)
            self._apply(self._gate.on_audio(self._meter.push(pcm, start_ms)))
        else:
            self._meter.reset()
            self._tail.reset()

    # -- the runtime's update stream ---------------------------------------------------------

    def subscribe(self, partials: bool, language: str = "") -> _Subscriber:
        """Attach a Converse stream (replacing an earlier one, whose iteration then ends);
        ``language``: the call's recognition language, as its ConverseStart names it."""
        if self._subscriber is not None:
            self._subscriber.queue.put_nowait(None)
        sub = _Subscriber(asyncio.Queue())
        while self._backlog:
            sub.queue.put_nowait(self._backlog.popleft())
        if self.ended.is_set():
            sub.queue.put_nowait(None)
        self._subscriber = sub
        self.recognizer.partials = self._runtime_partials = partials
        self.set_language(language, "ConverseStart.language")
        return sub

    def expect(self, msg: speech_pb2.RecognitionContext) -> None:
        """The runtime's recognition context for the next utterances (a dialog state's); a
        context over the contract's bounds is refused with CODE_INVALID_CONTEXT and recognition
        goes on unbiased."""
        try:
            context = context_from_proto(msg)
        except InvalidContextError as exc:
            self.recognizer.options = replace(self.recognizer.options, context=None)
            log.warning("recognition context refused", error=str(exc))
            self._send(
                speech_pb2.SpeechUpdate(
                    error=speech_pb2.SpeechError(
                        code=speech_pb2.SpeechError.CODE_INVALID_CONTEXT, message=str(exc)
                    )
                )
            )
            return
        self.recognizer.options = replace(
            self.recognizer.options, context=None if context.empty else context
        )
        self.recognizer.set_turn_end(self._turn_end(context))
        log.debug("recognition context", state=context.state, expect=context.expect.value)

    def _turn_end(self, context: RecognitionContext) -> TurnEndSettings:
        """The state's endpointing, the gateway's default where it leaves something open."""
        ep, default = context.endpointing, self._turn_default
        return TurnEndSettings.resolve(
            default.min_ms,
            mode=_TURN_MODES.get(ep.mode, default.mode),
            min_ms=ep.min_ms,
            max_ms=ep.max_ms or default.max_ms,
            threshold=default.threshold,
            sentence_threshold=default.sentence_threshold,
        )

    def unsubscribe(self, sub: _Subscriber) -> None:
        if self._subscriber is sub:
            self._subscriber = None
            self.recognizer.partials = self._runtime_partials = False

    async def updates(self, sub: _Subscriber) -> AsyncIterator[speech_pb2.SpeechUpdate]:
        while (update := await sub.queue.get()) is not None:
            yield update

    def _send(self, update: speech_pb2.SpeechUpdate) -> None:
        if self._subscriber is not None:
            self._subscriber.queue.put_nowait(update)
        else:
            if len(self._backlog) == self._backlog.maxlen:
                log.warning("no runtime stream attached; dropping the oldest update")
            self._backlog.append(update)

    # -- events ------------------------------------------------------------------------------

    def _on_recognition(self, event: RecognitionEvent) -> None:
        mode = None
        if isinstance(event, UtteranceStarted):
            self.metrics.utterances.inc()
            mode = self.player.barge_in_mode()
        elif isinstance(event, UtteranceEnded):
            now = tracing.wall_ns()
            self._ended_at[event.utterance_id] = now
            spoke_until = now - max(0, self.call_time_ms() - event.at_ms) * 1_000_000
            tracing.record(
                tracer,
                "speech.end_of_speech",
                self.trace,
                spoke_until,
                now,
                utterance_id=event.utterance_id,
            )
        elif isinstance(event, RecognitionOverloaded):
            self.metrics.overloaded.inc()
            log.warning("recognition overloaded", utterance_id=event.utterance_id)
        english, yes_no = self._reading()
        self._apply(self._gate.on_event(event, mode, english=english, yes_no=yes_no))

    def _reading(self) -> tuple[bool, bool]:
        """How the gate reads transcripts now: (English, a yes/no answer expected)."""
        options = self.recognizer.options
        context = options.context
        english = (options.language or "en").split("-")[0].lower() == "en"
        return english, context is not None and context.expect == Expect.YES_NO

    def _apply(self, actions: list[Action]) -> None:
        """Carry out the barge-in gate's decisions, in order."""
        for action in actions:
            if isinstance(action, Forward):
                self._send(recognition_update(action.event))
            elif isinstance(action, Probe):
                self._start_probe(action)
            elif isinstance(action, StopPrompt):
                stopped = self.player.barge_in()
                self.metrics.barge_ins.labels(action.reason).inc()
                if stopped:
                    log.info(
                        "barge-in",
                        utterance_id=action.utterance_id,
                        stopped=stopped,
                        reason=action.reason,
                        voiced_ms=action.voiced_ms,
                    )
            elif isinstance(action, Ignore):
                self.metrics.barge_in_ignored.labels(action.reason).inc()
                with session_context(self.session_id):
                    log.info(
                        "barge-in ignored",
                        utterance_id=action.utterance_id,
                        reason=action.reason,
                        voiced_ms=action.voiced_ms,
                        speech_ms=max(0, action.end_ms - action.start_ms),
                    )
        if self._probe is not None and not self._gate.undecided(self._probe[0]):
            self._stop_probe()  # decided meanwhile: its answer is not needed

    def _start_probe(self, probe: Probe) -> None:
        audio = self._tail.slice(probe.from_ms - self._pre_roll_ms, probe.to_ms)
        try:
            # Its own session key: the pool keeps one waiting partial per session, and the
            # runtime's partials must not replace the probe (nor it them).
            job = self._pool.submit(
                f"{self.session_id}/barge-in", audio, "partial", self.recognizer.options
            )
        except RuntimeError:  # the pool is closed (shutting down)
            return
        task = asyncio.get_running_loop().create_task(
            self._await_probe(probe.utterance_id, job), name=f"barge-in-probe-{self.session_id}"
        )
        self._stop_probe()
        self._probe = (probe.utterance_id, job, task)

    async def _await_probe(self, utterance_id: str, job: Job) -> None:
        try:
            result = await job.result()
        except Exception as exc:  # a failed probe is no answer; the final still decides
            log.warning("barge-in probe failed", utterance_id=utterance_id, error=str(exc))
            result = None
        if self._probe is not None and self._probe[1] is job:
            self._probe = None
        if self.ended.is_set():
            return
        english, yes_no = self._reading()
        text = result.text if result is not None else None
        self._apply(self._gate.on_probe(utterance_id, text, english=english, yes_no=yes_no))

    def _stop_probe(self) -> None:
        if self._probe is not None:
            _, job, task = self._probe
            self._probe = None
            job.cancel()
            task.cancel()

    def _on_final(self, timing: FinalTiming) -> None:
        self.metrics.time_to_final.labels(str(timing.speculative).lower()).observe(
            timing.seconds_after_end
        )
        if timing.empty:
            self.metrics.empty_finals.labels(timing.empty).inc()
            log.warning(
                "final transcript empty",
                utterance_id=timing.utterance_id,
                reason=timing.empty,
                audio_s=round(timing.audio_s, 2),
            )
        elif timing.cut:
            log.info(
                "final transcript bounded",
                utterance_id=timing.utterance_id,
                cut=timing.cut,
                audio_s=round(timing.audio_s, 2),
            )
        declared = self._ended_at.pop(timing.utterance_id, None)
        if declared is not None:
            tracing.record(
                tracer,
                "speech.final",
                self.trace,
                declared,
                utterance_id=timing.utterance_id,
                speculative=timing.speculative,
                audio_s=round(timing.audio_s, 2),
                empty=timing.empty or None,
                cut=timing.cut or None,
            )

    def _on_turn(self, turn: TurnDecision) -> None:
        d = turn.decision
        self.metrics.turn_decisions.labels("end" if d.end else "wait", d.basis).inc()
        log.debug(
            "end of turn" if d.end else "turn continues",
            utterance_id=turn.utterance_id,
            reason=d.reason,
            probability=None if d.probability is None else round(d.probability, 3),
            pause_ms=turn.pause_ms,
        )

    def _tts_started(self, request_id: str, asked_ns: int) -> None:
        tracing.record(tracer, "speech.tts", self.trace, asked_ns, request_id=request_id)

    def _on_player(self, event: PlayerEvent) -> None:
        if isinstance(event, PlaybackUpdate) and event.kind != "started":
            self.metrics.tts_requests.labels(event.kind).inc()
        elif isinstance(event, SynthesisFailed):
            self.metrics.tts_requests.labels("failed").inc()
        self._send(player_update(event))
        if (
            isinstance(event, PlaybackUpdate)
            and event.kind != "started"
            and self._gate.tracking
            and self.player.barge_in_mode() != BargeInMode.ALLOW
        ):
            self._apply(self._gate.on_prompt_ended())

    async def _run_player(self) -> None:
        with session_context(self.session_id):
            try:
                await self.player.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("playback failed")

    # -- ending ------------------------------------------------------------------------------

    async def finish(self) -> None:
        """The audio stream ended normally: finals for what the caller said, then close."""
        await self.recognizer.finish(self.call_time_ms())
        await self.close()

    async def close(self) -> None:
        if self.ended.is_set():
            return
        self.ended.set()
        self._stop_probe()
        self.metrics.streams.dec()
        await self.recognizer.aclose()
        await self.player.aclose()
        self._player_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._player_task
        self.downlink.close()
        if self._subscriber is not None:
            self._subscriber.queue.put_nowait(None)


class CallRegistry:
    """The calls of this replica by session id."""

    def __init__(self) -> None:
        self._calls: dict[str, SpeechCall] = {}
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._calls)

    def get(self, session_id: str) -> SpeechCall | None:
        return self._calls.get(session_id)

    async def add(self, call: SpeechCall) -> None:
        old = self._calls.get(call.session_id)
        if old is not None:  # the media gateway reconnected: the new stream wins
            log.info("audio stream replaced", session_id=call.session_id)
            await old.close()
        self._calls[call.session_id] = call
        async with self._changed:
            self._changed.notify_all()

    async def remove(self, call: SpeechCall) -> None:
        if self._calls.get(call.session_id) is call:
            del self._calls[call.session_id]
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, session_id: str, timeout_s: float) -> SpeechCall | None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: session_id in self._calls)
        return self._calls.get(session_id)

    async def wait_empty(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: not self._calls)
        return not self._calls

    async def close_all(self) -> None:
        for call in list(self._calls.values()):
            await call.close()
        self._calls.clear()
