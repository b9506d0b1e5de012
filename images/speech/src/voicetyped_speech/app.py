"""Assembles the speech service process.

Models load once per process at start, off the event loop (the recognition pool loads one model
per worker and runs a decode on each; the default Piper voice is loaded and warmed), then the
dialogs' fixed prompts are synthesized into the cache. The service reports ready only then: the
first call neither meets a cold model nor competes with the warm-up for the cores.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from prometheus_client import REGISTRY, CollectorRegistry
from voicetyped.service import tracing
from voicetyped.service.app import ServiceApp
from voicetyped.service.logs import get_logger
from voicetyped.v1 import speech_pb2

from voicetyped_speech.asr.factory import prepare_environment, recognizer_setup
from voicetyped_speech.asr.languages import ModelLanguages
from voicetyped_speech.asr.pool import Deadline, DecodeStats, RecognitionPool
from voicetyped_speech.asr.whispercpp import route_whisper_logs
from voicetyped_speech.calls import CallRegistry, SpeechCall
from voicetyped_speech.config import SpeechSettings
from voicetyped_speech.grpc_service import SpeechGatewayServicer, register
from voicetyped_speech.load import LoadMonitor
from voicetyped_speech.metrics import SpeechMetrics
from voicetyped_speech.streaming import TurnEndSettings
from voicetyped_speech.tts import FirstUnitPolicy, Synthesizer, TTSHooks, VoiceRegistry
from voicetyped_speech.turn.model import SmartTurn
from voicetyped_speech.turn.runner import TurnModelRunner
from voicetyped_speech.warmup import watch_and_warm

SERVICE_NAME = "speech"

log = get_logger("voicetyped.speech")


class SpeechService:
    """The process-wide parts: models, calls, metrics."""

    def __init__(self, settings: SpeechSettings, registry: CollectorRegistry = REGISTRY) -> None:
        self.settings = settings
        self.metrics = SpeechMetrics(registry)
        self.calls = CallRegistry()
        self.pool: RecognitionPool | None = None
        self.load: LoadMonitor | None = None
        self.languages: ModelLanguages | None = None
        self.synth: Synthesizer | None = None
        self.grpc_port = settings.grpc_port
        self.accepting = True
        self.prompts_warmed = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._vad = settings.vad.settings()
        t = settings.turn
        self._turn_end = TurnEndSettings.resolve(
            settings.vad.hangover_ms,
            mode=t.mode,
            min_ms=t.min_ms,
            max_ms=t.max_ms,
            threshold=t.threshold,
            sentence_threshold=t.sentence_threshold,
        )
        self.turn_model: TurnModelRunner | None = None
        self._streaming = settings.streaming.settings()
        self._backend = settings.asr.backend

    async def start(self) -> None:
        s = self.settings
        prepare_environment()  # before the first native library loads
        if s.asr.backend == "whispercpp":
            route_whisper_logs()
        # Raises at once for a missing or foreign model, or a language it does not know.
        setup = await asyncio.to_thread(recognizer_setup, s.asr)
        self.languages = setup.languages
        self.pool = await asyncio.to_thread(
            RecognitionPool,
            setup.factory,
            s.asr.workers,
            s.asr.max_waiting,
            self._on_decode,
            Deadline(
                s.asr.deadline_ms / 1000,
                s.asr.deadline_ms_per_audio_s / 1000,
                s.asr.deadline_factor,
            ),
            lambda reason: self.metrics.partials_shed.labels(reason).inc(),
            s.asr.threads if s.asr.share_threads and s.asr.backend == "whispercpp" else 0,
            self._on_abandon,
        )
        self.metrics.track_queue_depth(lambda: self.pool.queue_depth if self.pool else 0)
        self.load = LoadMonitor(s.capacity.rule(), s.asr.workers)
        self._background.append(asyncio.create_task(self._sample_load(), name="asr-load"))
        if s.turn.model:  # raises at once for a missing or altered model file
            smart_turn = await asyncio.to_thread(SmartTurn, threads=s.turn.threads)
            self.turn_model = TurnModelRunner(
                smart_turn, on_inference=self.metrics.turn_model_seconds.observe
            )
        voices = VoiceRegistry(s.tts.voices, allow_paths=False)
        await voices.aget(s.tts.default_voice)
        hooks = TTSHooks(
            on_first_audio=lambda seconds, cached: self.metrics.tts_ttfa.labels(
                str(cached).lower()
            ).observe(seconds),
            on_unit=lambda audio_s, compute_s: self.metrics.tts_rtf.observe(
                compute_s / audio_s if audio_s else 0.0
            ),
        )
        self.synth = Synthesizer(
            voices,
            workers=s.tts.workers,
            cache_max_bytes=s.tts.cache_max_mb * 1024 * 1024,
            max_active=s.tts.max_active,
            lead_in_ms=s.tts.lead_in_ms,
            first_unit=FirstUnitPolicy(
                s.tts.first_unit_max_words,
                s.tts.first_unit_min_words,
                s.tts.first_unit_min_rest_words,
            ),
            hooks=hooks,
        )
        if s.tts.warmup_dialogs_dir is not None:
            self._background.append(
                asyncio.create_task(
                    watch_and_warm(
                        self.synth,
                        s.tts.warmup_dialogs_dir,
                        s.tts.warmup_rates,
                        s.tts.default_voice,
                        s.tts.warmup_poll_s,
                        setup.languages,
                        self.prompts_warmed,
                    ),
                    name="prompt-warm-up",
                )
            )
        else:
            self.prompts_warmed.set()
        log.info(
            "models loaded",
            asr_backend=s.asr.backend,
            asr_model=setup.languages.model,
            language=setup.default_language,
            multilingual=setup.languages.multilingual,
            workers=s.asr.workers,
        )

    async def _sample_load(self) -> None:
        assert self.pool is not None and self.load is not None
        m, pool, load = self.metrics, self.pool, self.load
        while True:
            load.sample(pool.waiting_finals, pool.busy_workers)
            reading = load.reading(len(self.calls), not pool.can_accept_final())
            m.load.set(round(reading.load, 4))
            m.asr_busy_ratio.set(round(reading.busy_ratio, 4))
            m.saturated.set(0 if reading.saturated is None else 1)
            await asyncio.sleep(self.settings.capacity.sample_s)

    def admit(self, start: speech_pb2.AudioStreamStart) -> tuple[grpc.StatusCode, str] | None:
        """Whether a new audio stream is taken (see :mod:`.load`): a resumed call's always,
        unless the replica is draining."""
        if not self.accepting:
            self.metrics.streams_refused.labels("draining").inc()
            return grpc.StatusCode.UNAVAILABLE, "speech gateway is shutting down"
        if start.resumed or self.pool is None or self.load is None:
            return None
        reading = self.load.reading(len(self.calls), not self.pool.can_accept_final())
        if reading.saturated is None:
            return None
        self.metrics.streams_refused.labels(reading.saturated).inc()
        log.info(
            "new call refused: recognition at capacity",
            session_id=start.session_id,
            reason=reading.saturated,
            calls=len(self.calls),
            load=round(reading.load, 2),
        )
        return (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"speech recognition at capacity ({reading.saturated})",
        )

    def _on_decode(self, stats: DecodeStats) -> None:
        # Called from a worker thread: prometheus-client metrics are thread-safe.
        self._worker_time(stats.kind, stats.compute_s, "done")
        if stats.audio_s > 0:
            self.metrics.asr_rtf.labels(self._backend, stats.kind).observe(
                stats.compute_s / stats.audio_s
            )
        self.metrics.asr_wait.labels(stats.kind).observe(stats.waited_s)
        if stats.cut:
            self.metrics.asr_cut.labels(stats.kind, stats.cut).inc()

    def _on_abandon(self, kind: str, compute_s: float) -> None:
        # A worker thread. An abandoned speculative final held a worker as a final does.
        self._worker_time(kind, compute_s, "abandoned")

    def _worker_time(self, kind: str, compute_s: float, outcome: str) -> None:
        """A decode's compute time, done or abandoned: the load and the metric count both."""
        if self.load is not None:
            self.load.decoded(kind, compute_s)
        self.metrics.asr_compute.labels(kind, outcome).inc(compute_s)

    def new_call(
        self, start: speech_pb2.AudioStreamStart, trace_context: tracing.Context | None = None
    ) -> SpeechCall:
        assert self.pool is not None and self.synth is not None
        s = self.settings
        call = SpeechCall(
            start.session_id,
            self.pool,
            self.synth,
            start.playback_format.sample_rate_hz,
            self.metrics,
            vad=self._vad,
            streaming=self._streaming,
            voice_default=s.tts.default_voice,
            lead_ms=s.tts.lead_ms,
            buffered_updates=s.buffered_updates,
            trace_context=trace_context,
            languages=self.languages,
            language=start.language,
            turn_model=self.turn_model,
            turn_end=self._turn_end,
        )
        return call

    def endpoint(self) -> str:
        return f"{self.settings.advertised_host()}:{self.grpc_port}"

    async def ready(self) -> str | None:
        if self.pool is None or self.synth is None:
            return "loading models"
        return None if self.prompts_warmed.is_set() else "warming the prompt cache"

    async def drain(self, remaining_s: float) -> None:
        """Refuse new audio streams; let the calls in progress end within the grace period."""
        self.accepting = False
        if len(self.calls):
            log.info("waiting for calls to end", calls=len(self.calls))
        if not await self.calls.wait_empty(remaining_s):
            log.warning("calls still active at the end of the grace period", calls=len(self.calls))

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.calls.close_all()
        if self.synth is not None:
            await self.synth.aclose()
        if self.pool is not None:
            await asyncio.to_thread(self.pool.close)
        if self.turn_model is not None:
            self.turn_model.close()


def build_app(settings: SpeechSettings, registry: CollectorRegistry = REGISTRY) -> ServiceApp:
    service = SpeechService(settings, registry)
    servicer = SpeechGatewayServicer(
        service.calls,
        service.new_call,
        service.endpoint,
        settings.converse_wait_s,
        service.admit,
    )

    def listening(port: int) -> None:
        service.grpc_port = port

    return ServiceApp(
        name=SERVICE_NAME,
        settings=settings,
        grpc_registrations=[register(servicer)],
        readiness_checks={"models": service.ready},
        on_startup=[service.start],
        on_listening=[listening],
        on_drain=[service.drain],
        on_shutdown=[service.stop],
        accept_during_drain=True,  # runtimes may reconnect to calls that are finishing
    )
