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

from voicetyped.recognition import InvalidContextError, context_from_proto
from voicetyped.service import tracing
from voicetyped.service.logs import get_logger, session_context
from voicetyped.v1 import common_pb2, speech_pb2

from voicetyped_speech.asr.languages import LanguageError, ModelLanguages
from voicetyped_speech.asr.pool import RecognitionPool
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
    UtteranceEnded,
    UtteranceStarted,
)
from voicetyped_speech.tts import Synthesizer
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
    ) -> None:
        self.session_id = session_id
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
        )
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
        self.recognizer.push(pcm[: len(pcm) & ~1], start_ms)

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
        self.recognizer.partials = partials
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
        log.debug("recognition context", state=context.state, expect=context.expect.value)

    def unsubscribe(self, sub: _Subscriber) -> None:
        if self._subscriber is sub:
            self._subscriber = None
            self.recognizer.partials = False

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
        if isinstance(event, UtteranceStarted):
            self.metrics.utterances.inc()
            stopped = self.player.barge_in()
            if stopped:
                log.info("barge-in", utterance_id=event.utterance_id, stopped=stopped)
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
        self._send(recognition_update(event))

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

    def _tts_started(self, request_id: str, asked_ns: int) -> None:
        tracing.record(tracer, "speech.tts", self.trace, asked_ns, request_id=request_id)

    def _on_player(self, event: PlayerEvent) -> None:
        if isinstance(event, PlaybackUpdate) and event.kind != "started":
            self.metrics.tts_requests.labels(event.kind).inc()
        elif isinstance(event, SynthesisFailed):
            self.metrics.tts_requests.labels("failed").inc()
        self._send(player_update(event))

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
