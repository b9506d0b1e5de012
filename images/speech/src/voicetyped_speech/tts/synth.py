"""Streaming speech synthesis for the media gateway: Piper in worker threads, paced-size frames.

``Synthesizer.synthesize(text, voice, rate, request_id)`` returns an async iterator of 16-bit
mono little-endian PCM frames at 8 or 16 kHz, each exactly ``frame_ms`` long except possibly the
last. Audio arrives unit by unit: the first frame is ready once Piper has voiced the first unit,
while later units are synthesized ahead of playback (at most ``max_ahead_seconds`` of unconsumed
audio) so the consumer can pace frames in real time.

First unit
    A live request for text not in the cache cuts a long first sentence after its opening
    phrase (``first_unit``, :mod:`.first_unit`): Piper voices those few words first, so the
    first frame waits for a fraction of the sentence, and the rest of the sentence next. Warm-up
    and the text after a cached opening are voiced without that cut (no latency to win there).

Threads and the event loop
    Piper runs in a pool of ``workers`` threads; one job is one synthesis unit (a sentence, long
    sentences cut by :mod:`.units`), so a request never holds a worker for more than one unit and
    concurrent requests interleave instead of queueing whole texts. Jobs pass a priority gate with
    exactly ``workers`` slots (the executor's own queue never holds waiting work): a request's
    first unit goes before later units of other requests, which go before :meth:`warm_up` work.
    The event loop only moves finished frames around.

Barge-in
    :meth:`cancel` marks the request, wakes its iterator and cancels its producer: the iterator
    yields nothing more and ends (``StopAsyncIteration``) on its next step, within one event loop
    turn. A unit already running in a worker thread finishes there (ONNX runs cannot be
    interrupted) and its output is dropped; units not yet started never start. Closing the
    iterator early (``aclose()``, ``break`` out of ``async for``) counts as a cancel.

Prompt cache
    A synthesis that completes (every unit voiced before any cancel) is stored under
    :func:`.cache.cache_key`; the same request later streams from memory, first frame without any
    await. :meth:`warm_up` pre-synthesizes a dialog's fixed prompts, and the fixed openings of
    its templated ones (:mod:`.prefix`): a rendered prompt that begins with a cached opening
    plays it from memory while Piper voices only the rest.

Resampling
    Piper voices speak at 22050 Hz; one ``soxr.ResampleStream`` per request converts all units, so
    sentence joins carry the filter state (no edge clicks). Quality ``HQ`` by default: measured
    cost ~0.12 ms (8 kHz) / ~0.26 ms (16 kHz) per second of audio, VHQ about twice that -- both
    negligible next to ~70 ms of Piper per second of audio -- but HQ's 20-bit precision already
    exceeds the 16-bit output, and it holds back less audio at each unit's end at 8 kHz
    (~55 ms versus ~90 ms) until the next unit or the final flush.

All methods must be called from the event loop thread that iterates the streams (from another
thread, use ``loop.call_soon_threadsafe(synth.cancel, request_id)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
import uuid
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import numpy as np
import soxr

from voicetyped_speech.tts.cache import DEFAULT_MAX_BYTES, PromptCache, cache_key
from voicetyped_speech.tts.first_unit import OFF, FirstUnitPolicy, cut_phonemes, first_cut
from voicetyped_speech.tts.prefix import PrefixIndex, fixed_prefix
from voicetyped_speech.tts.units import DEFAULT_MAX_PHONEMES, split_units
from voicetyped_speech.tts.voices import DEFAULT_VOICE, Voice, VoiceRegistry, VoiceSpec

if TYPE_CHECKING:
    from numpy.typing import NDArray
    from piper import SynthesisConfig

_LOGGER = logging.getLogger(__name__)

SUPPORTED_RATES: Final = (8000, 16000)
DEFAULT_FRAME_MS: Final = 20
PIPELINE_VERSION: Final = 2
"""Bump when the audio produced for the same inputs changes (it is part of the cache key)."""
DEFAULT_LEAD_IN_MS: Final = 10
"""Silence kept before the first sound of a synthesis; see :func:`trim_leading_silence`."""
SEAM_LEAD_MS: Final = 10
SEAM_TAIL_MS: Final = 40
"""Silence kept each side of a first-unit cut (see ``_Pipeline._seam``)."""
_ONSET_DBFS: Final = -40.0
"""A sample this far below the unit's peak (or quieter) counts as silence before the onset."""

ResampleQuality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]
Outcome = Literal["completed", "cancelled", "failed", "rejected"]

_PRIORITY_FIRST: Final = 0
_PRIORITY_NEXT: Final = 1
_PRIORITY_BACKGROUND: Final = 2
_YIELD_EVERY: Final = 50
"""Frames handed out back to back before the iterator lets the event loop run other tasks."""

_T = TypeVar("_T")


class TTSError(Exception):
    """Synthesis cannot be done as asked."""


class UnsupportedSampleRateError(TTSError, ValueError):
    def __init__(self, rate: int) -> None:
        rates = " or ".join(str(r) for r in SUPPORTED_RATES)
        super().__init__(f"unsupported output sample rate {rate!r} Hz: use {rates}")
        self.rate = rate


class DuplicateRequestError(TTSError, ValueError):
    """A synthesis with this request id is still active."""


class SynthesisBusyError(TTSError):
    """Too many syntheses are queued or running (``max_active``): shed load instead of making
    every caller wait longer."""


class SynthesisError(TTSError):
    """Piper failed on this text."""


@dataclass(frozen=True)
class SynthesisOptions:
    """Piper's synthesis settings (``None``: the voice's own default)."""

    length_scale: float | None = None
    """Phoneme length: > 1 speaks slower."""
    noise_scale: float | None = None
    noise_w_scale: float | None = None
    volume: float = 1.0
    speaker_id: int | None = None
    normalize_audio: bool = True

    def to_piper(self) -> SynthesisConfig:
        from piper import SynthesisConfig

        return SynthesisConfig(
            speaker_id=self.speaker_id,
            length_scale=self.length_scale,
            noise_scale=self.noise_scale,
            noise_w_scale=self.noise_w_scale,
            normalize_audio=self.normalize_audio,
            volume=self.volume,
        )


DEFAULT_OPTIONS: Final = SynthesisOptions()


@dataclass
class TTSHooks:
    """Metrics callbacks, called on the event loop thread; exceptions are logged and ignored."""

    on_cache_hit: Callable[[], None] | None = None
    on_cache_miss: Callable[[], None] | None = None
    on_first_audio: Callable[[float, bool], None] | None = None
    """``(seconds from synthesize() to the first frame, cached)``: time to first audio."""
    on_unit: Callable[[float, float], None] | None = None
    """``(audio seconds, compute seconds)`` per synthesized unit: real-time factor."""
    on_finished: Callable[[Outcome], None] | None = None


@dataclass
class TTSStats:
    """Counters since the synthesizer started (warm-up work counts only in the unit totals)."""

    requests: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    prefix_hits: int = 0
    """Cache misses whose opening came from the cache (a templated prompt's fixed part)."""
    first_cuts: int = 0
    """Uncached replies whose first sentence was cut after its opening (:mod:`.first_unit`)."""
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    rejected: int = 0
    units: int = 0
    audio_seconds: float = 0.0
    """Audio produced by Piper (all units, warm-up included)."""
    compute_seconds: float = 0.0
    """Worker time spent on it (phonemizing, Piper, resampling, framing)."""
    resample_seconds: float = 0.0
    ttfa_uncached: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    ttfa_cached: deque[float] = field(default_factory=lambda: deque(maxlen=1000))

    @property
    def rtf(self) -> float:
        """Real-time factor: compute seconds per second of audio (0 before any work)."""
        return self.compute_seconds / self.audio_seconds if self.audio_seconds else 0.0


@dataclass(frozen=True)
class WarmUpReport:
    synthesized: int = 0
    already_cached: int = 0
    skipped_templated: int = 0
    """Templated prompts (not cacheable whole)."""
    skipped_empty: int = 0
    prefixes: int = 0
    """Fixed openings of templated prompts registered (and cached) for :mod:`.prefix`."""


def is_fixed_prompt(text: str) -> bool:
    """True for a prompt without ``{{`` templating: the same audio every time, worth caching."""
    return "{{" not in text


@dataclass(frozen=True)
class _UnitResult:
    frames: list[bytes]
    done: bool
    audio_seconds: float
    compute_seconds: float
    resample_seconds: float


class _End:
    pass


_END: Final = _End()
_Item = list[bytes] | _End | BaseException


@dataclass(eq=False)
class _Request:
    id: str
    created: float
    cancelled: bool = False
    queue: asyncio.Queue[_Item] = field(default_factory=asyncio.Queue)
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)
    space: asyncio.Event = field(default_factory=asyncio.Event)
    producer: asyncio.Task[None] | None = None
    frames_ahead: int = 0
    admitted: bool = False


class _PriorityGate:
    """``slots`` permits handed out lowest priority value first, FIFO within a priority."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def free(self) -> int:
        return self._free

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, fut in self._waiters if not fut.done())

    async def acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted just before the cancel: pass it on
            raise  # a cancelled waiter stays in the heap and is skipped by release()

    def release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1


class _Pipeline:
    """One request's worker-side state: its units, resampler and partial frame. Used by one
    worker thread at a time (the producer runs a request's units strictly in order)."""

    def __init__(
        self,
        voice: Voice,
        rate: int,
        options: SynthesisOptions,
        frame_bytes: int,
        quality: ResampleQuality,
        max_unit_phonemes: int,
        lead_in_ms: int | None,
        carry: bytes = b"",
        first_unit: FirstUnitPolicy = OFF,
    ) -> None:
        self._voice = voice
        self._first_unit = first_unit
        self.first_cut: str | None = None
        """The kind of first-unit cut made (None: the first sentence voiced whole)."""
        self._lead_in_ms = lead_in_ms
        self._config = options.to_piper()
        self._frame_bytes = frame_bytes
        self._max_unit_phonemes = max_unit_phonemes
        self._resampler = (
            soxr.ResampleStream(voice.sample_rate, rate, 1, dtype="float32", quality=quality)
            if voice.sample_rate != rate
            else None
        )
        self._units: list[list[str]] = []
        self._next = 0
        self._pending = bytearray(carry)  # a partial frame handed over (a cached opening's)

    def start(self, text: str) -> _UnitResult:
        """Phonemize and cut ``text``, then voice its first unit."""
        t0 = time.perf_counter()
        piper = self._voice.piper
        sentences = piper.phonemize(text)
        cut = first_cut(text, self._first_unit)
        parts = cut_phonemes(sentences, cut, piper.phonemize) if cut is not None else None
        if cut is not None and parts is not None:
            self.first_cut = cut.kind
            head, rest = parts
            self._units = [head, *split_units(rest, self._max_unit_phonemes)]
        else:
            self._units = split_units(sentences, self._max_unit_phonemes)
        return self.next_unit(time.perf_counter() - t0)

    def _seam(self, audio: NDArray[np.float32], rate: int) -> NDArray[np.float32]:
        """The opening's end and the rest's start at a first-unit cut: Piper closes every unit
        with silence and opens the next with its pre-roll, a pause the whole sentence does not
        have. The rest keeps :data:`SEAM_LEAD_MS` of its pre-roll; an opening cut without
        punctuation keeps :data:`SEAM_TAIL_MS` of its closing silence (after a comma Piper's
        own pause stays)."""
        if self._next == 2:
            return trim_leading_silence(audio, rate, SEAM_LEAD_MS)
        if self.first_cut != "punctuation":
            return trim_trailing_silence(audio, rate, SEAM_TAIL_MS)
        return audio

    def next_unit(self, extra_seconds: float = 0.0) -> _UnitResult:
        t0 = time.perf_counter()
        piper = self._voice.piper
        audio: NDArray[np.float32]
        if self._next < len(self._units):
            ids = piper.phonemes_to_ids(self._units[self._next])
            self._next += 1
            result = piper.phoneme_ids_to_audio(ids, self._config)
            raw = result[0] if isinstance(result, tuple) else result
            audio = np.asarray(raw, dtype=np.float32).reshape(-1)
            # What PiperVoice.synthesize does to each sentence's audio.
            if self._config.normalize_audio:
                peak = float(np.max(np.abs(audio))) if audio.size else 0.0
                audio = audio / peak if peak >= 1e-8 else np.zeros_like(audio)
            if self._config.volume != 1.0:
                audio = audio * self._config.volume
            audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
            sr = self._voice.sample_rate
            if self._next == 1 and self._lead_in_ms is not None:
                audio = trim_leading_silence(audio, sr, self._lead_in_ms)
            if self.first_cut is not None and self._next <= 2:
                audio = self._seam(audio, sr)
        else:
            audio = np.zeros(0, dtype=np.float32)
        done = self._next >= len(self._units)
        audio_seconds = audio.size / self._voice.sample_rate
        t1 = time.perf_counter()
        if self._resampler is not None:
            audio = np.asarray(self._resampler.resample_chunk(audio, last=done), dtype=np.float32)
        t2 = time.perf_counter()
        pcm = np.clip(audio * 32767.0, -32767.0, 32767.0).astype("<i2").tobytes()
        self._pending += pcm
        fb = self._frame_bytes
        full = len(self._pending) // fb * fb
        frames = [bytes(self._pending[i : i + fb]) for i in range(0, full, fb)]
        del self._pending[:full]
        if done and self._pending:
            frames.append(bytes(self._pending))
            self._pending.clear()
        compute = time.perf_counter() - t0 + extra_seconds
        return _UnitResult(frames, done, audio_seconds, compute, t2 - t1)


def trim_trailing_silence(
    audio: NDArray[np.float32], sample_rate: int, tail_ms: int
) -> NDArray[np.float32]:
    """``audio`` without the silence after its last sound, keeping ``tail_ms`` of it (the
    mirror of :func:`trim_leading_silence`)."""
    return np.ascontiguousarray(trim_leading_silence(audio[::-1], sample_rate, tail_ms)[::-1])


def trim_leading_silence(
    audio: NDArray[np.float32], sample_rate: int, lead_in_ms: int
) -> NDArray[np.float32]:
    """``audio`` without the silence before its first sound, keeping ``lead_in_ms`` of it.

    Piper voices open every synthesis with 30-60 ms of near-silence (the model's pre-roll); on a
    phone call that is pure added latency between the caller's turn and the first audible reply.
    The onset is the first sample within :data:`_ONSET_DBFS` of the peak, so the rule does not
    depend on one voice's level or noise floor. Audio that never rises above the threshold
    relative to itself (all silence) is returned unchanged.
    """
    if audio.size == 0:
        return audio
    peak = float(np.max(np.abs(audio)))
    if peak < 1e-8:
        return audio
    loud = np.flatnonzero(np.abs(audio) >= peak * 10 ** (_ONSET_DBFS / 20))
    start = max(0, int(loud[0]) - sample_rate * lead_in_ms // 1000)
    return audio[start:]


def _run_unless_cancelled(req: _Request, fn: Callable[[], _T]) -> _T | None:
    return None if req.cancelled else fn()


class Synthesizer:
    """Streams Piper speech as fixed-size PCM frames; see the module documentation.

    ``workers`` bounds the Piper threads (and so the CPU used for synthesis), ``max_active`` the
    syntheses running or queued for them at once (beyond it :class:`SynthesisBusyError`; cache
    hits do not count). One synthesizer belongs to one event loop.
    """

    def __init__(
        self,
        voices: VoiceRegistry | None = None,
        *,
        workers: int = 2,
        frame_ms: int = DEFAULT_FRAME_MS,
        cache: PromptCache | None = None,
        cache_max_bytes: int = DEFAULT_MAX_BYTES,
        resample_quality: ResampleQuality = "HQ",
        max_unit_phonemes: int = DEFAULT_MAX_PHONEMES,
        max_ahead_seconds: float = 10.0,
        max_active: int = 64,
        lead_in_ms: int | None = DEFAULT_LEAD_IN_MS,
        first_unit: FirstUnitPolicy | None = None,
        hooks: TTSHooks | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if not 1 <= frame_ms <= 1000:
            raise ValueError("frame_ms must be between 1 and 1000")
        if max_ahead_seconds <= 0:
            raise ValueError("max_ahead_seconds must be > 0")
        if max_unit_phonemes < 8:
            raise ValueError("max_unit_phonemes must be at least 8")
        if lead_in_ms is not None and not 0 <= lead_in_ms <= 1000:
            raise ValueError("lead_in_ms must be between 0 and 1000 (None: keep the voice's own)")
        self.voices = voices if voices is not None else VoiceRegistry()
        self.cache = cache if cache is not None else PromptCache(cache_max_bytes)
        self.hooks = hooks if hooks is not None else TTSHooks()
        self.stats = TTSStats()
        self.workers = workers
        self.frame_ms = frame_ms
        self.resample_quality: ResampleQuality = resample_quality
        self.max_unit_phonemes = max_unit_phonemes
        self.max_ahead_seconds = max_ahead_seconds
        self.max_active = max_active
        self.lead_in_ms = lead_in_ms
        """Leading silence kept before a synthesis's first sound (None: untrimmed)."""
        self.first_unit = first_unit if first_unit is not None else FirstUnitPolicy()
        """How a live uncached reply's first sentence is cut for fast first audio
        (:mod:`.first_unit`); warm-up and text after a cached opening are voiced uncut."""
        self.prefixes = PrefixIndex()
        """Fixed openings of templated prompts (registered by :meth:`warm_up`)."""
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="piper")
        self._gate = _PriorityGate(workers)
        self._active: weakref.WeakValueDictionary[str, _Request] = weakref.WeakValueDictionary()
        self._admitted = 0
        self._closed = False

    # -- public API --------------------------------------------------------------------------

    def frame_bytes(self, sample_rate_out: int) -> int:
        return sample_rate_out * self.frame_ms // 1000 * 2

    def synthesize(
        self,
        text: str,
        voice: str,
        sample_rate_out: int,
        request_id: str,
        *,
        options: SynthesisOptions | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """PCM frames of ``text`` spoken by ``voice`` at ``sample_rate_out`` (8000 or 16000).

        Checks the rate, the voice name and the request id at once (raising
        :class:`UnsupportedSampleRateError`, :class:`~.voices.UnknownVoiceError`,
        :class:`DuplicateRequestError`); the request is cancellable from this moment, though work
        starts only when iteration does. Iteration may raise :class:`SynthesisBusyError` or
        :class:`SynthesisError` before the first frame. Use ``contextlib.aclosing`` (or iterate
        to the end) so an abandoned stream releases its work promptly.
        """
        self._check_open()
        self._check_rate(sample_rate_out)
        spec = self.voices.resolve(voice)
        existing = self._active.get(request_id)
        if existing is not None and not existing.cancelled:
            raise DuplicateRequestError(f"synthesis request {request_id!r} is already active")
        req = _Request(request_id, time.perf_counter())
        self._active[request_id] = req
        self.stats.requests += 1
        return self._stream(req, text, spec, sample_rate_out, options or DEFAULT_OPTIONS)

    def cancel(self, request_id: str) -> bool:
        """Stop request ``request_id`` (barge-in): its iterator yields no further frame and ends
        at its next step. False when no such request is active."""
        req = self._active.get(request_id)
        if req is None or req.cancelled:
            return False
        self._cancel(req)
        return True

    @property
    def busy_workers(self) -> int:
        """Worker slots in use: jobs running in a thread (a cancelled request's last unit
        included, until its thread finishes it)."""
        return self.workers - self._gate.free

    @property
    def queued_jobs(self) -> int:
        """Synthesis units waiting for a worker."""
        return self._gate.waiting

    def active_requests(self) -> list[str]:
        return [rid for rid, req in list(self._active.items()) if not req.cancelled]

    async def warm_up(
        self,
        texts: Iterable[str],
        voice: str,
        sample_rate_out: int,
        *,
        options: SynthesisOptions | None = None,
    ) -> WarmUpReport:
        """Synthesize into the cache every fixed prompt of ``texts`` (those without ``{{``) not
        cached yet, one at a time and behind live requests, so loading a dialog never delays
        callers. Cancelling the awaiting task stops the warm-up."""
        self._check_open()
        self._check_rate(sample_rate_out)
        spec = self.voices.resolve(voice)
        opts = options or DEFAULT_OPTIONS
        loaded = await self.voices.aget(spec)
        synthesized = cached = templated = empty = prefixes = 0
        todo: list[str] = []
        for text in dict.fromkeys(texts):
            if is_fixed_prompt(text):
                todo.append(text)
                continue
            templated += 1
            opening = fixed_prefix(text)
            if opening is not None:
                self.prefixes.add(opening)
                prefixes += 1
                todo.append(opening)
        for text in dict.fromkeys(todo):
            if not text.strip():
                empty += 1
                continue
            key = self._key(text, loaded, sample_rate_out, opts)
            if key in self.cache:
                cached += 1
                continue
            req = _Request(f"warm-up:{uuid.uuid4().hex}", time.perf_counter())
            self._active[req.id] = req
            stream = self._stream(req, text, spec, sample_rate_out, opts, background=True)
            async with contextlib.aclosing(stream):
                async for _ in stream:
                    pass
            synthesized += key in self.cache
        return WarmUpReport(synthesized, cached, templated, empty, prefixes)

    def cache_key(
        self, text: str, voice: Voice, sample_rate_out: int, options: SynthesisOptions | None
    ) -> str:
        return self._key(text, voice, sample_rate_out, options or DEFAULT_OPTIONS)

    async def aclose(self, *, wait: bool = False) -> None:
        """Cancel every active request and stop the worker threads. Units already running in a
        thread finish there (their output is dropped); ``wait=True`` waits for them (at most one
        unit per worker), otherwise they finish in the background."""
        self._closed = True
        for req in list(self._active.values()):
            self._cancel(req)
        await asyncio.sleep(0)
        if wait:
            await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        else:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- internals ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the synthesizer is closed")

    @staticmethod
    def _check_rate(rate: int) -> None:
        if not isinstance(rate, int) or isinstance(rate, bool) or rate not in SUPPORTED_RATES:
            raise UnsupportedSampleRateError(rate)

    def _key(self, text: str, voice: Voice, rate: int, options: SynthesisOptions) -> str:
        synthesis: dict[str, object] = {
            **asdict(options),
            "resample_quality": self.resample_quality,
            "max_unit_phonemes": self.max_unit_phonemes,
            "lead_in_ms": self.lead_in_ms,
            **self.first_unit.settings(),
            "pipeline": PIPELINE_VERSION,
        }
        return cache_key(text, voice.name, voice.identity, rate, synthesis)

    def _cancel(self, req: _Request) -> None:
        req.cancelled = True
        req.cancel_event.set()
        req.queue.put_nowait(_END)  # wakes an iterator waiting for audio
        if req.producer is not None and not req.producer.done():
            req.producer.cancel()

    def _hook(self, hook: Callable[..., None] | None, *args: object) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            _LOGGER.exception("TTS metrics hook %r failed", hook)

    def _finish(self, req: _Request, outcome: Outcome, record: bool) -> None:
        if req.producer is not None and not req.producer.done():
            req.cancelled = True  # abandoned mid-synthesis: never cache it
            req.producer.cancel()
        if req.admitted:
            req.admitted = False
            self._admitted -= 1
        if self._active.get(req.id) is req:
            del self._active[req.id]
        if record:
            if outcome == "completed":
                self.stats.completed += 1
            elif outcome == "cancelled":
                self.stats.cancelled += 1
            elif outcome == "failed":
                self.stats.failed += 1
            else:
                self.stats.rejected += 1
            self._hook(self.hooks.on_finished, outcome)

    def _first_audio(self, req: _Request, cached: bool) -> None:
        ttfa = time.perf_counter() - req.created
        (self.stats.ttfa_cached if cached else self.stats.ttfa_uncached).append(ttfa)
        self._hook(self.hooks.on_first_audio, ttfa, cached)

    async def _voice(self, req: _Request, spec: VoiceSpec) -> Voice | None:
        """The loaded voice, or None when ``req`` is cancelled while it loads."""
        if self.voices.is_loaded(spec):
            return self.voices.get(spec)
        load = asyncio.ensure_future(self.voices.aget(spec))
        cancelled = asyncio.ensure_future(req.cancel_event.wait())
        try:
            await asyncio.wait({load, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
        if req.cancelled:
            # The load goes on in its thread (the registry keeps the voice); retrieve its
            # outcome so a failure is not reported as never retrieved.
            load.add_done_callback(lambda f: f.cancelled() or f.exception())
            return None
        return load.result()

    async def _stream(
        self,
        req: _Request,
        text: str,
        spec: VoiceSpec,
        rate: int,
        options: SynthesisOptions,
        *,
        background: bool = False,
    ) -> AsyncGenerator[bytes, None]:
        record = not background
        outcome: Outcome = "cancelled"
        try:
            if req.cancelled:
                return
            voice = await self._voice(req, spec)
            if voice is None:
                return
            key = self._key(text, voice, rate, options)
            pcm = self.cache.get(key) if record else None
            if pcm is not None:
                self.stats.cache_hits += 1
                self._hook(self.hooks.on_cache_hit)
                async for frame in self._cached_frames(req, pcm, self.frame_bytes(rate)):
                    yield frame
                if not req.cancelled:
                    outcome = "completed"
                return
            if record:
                self.stats.cache_misses += 1
                self._hook(self.hooks.on_cache_miss)
            if self._admitted >= self.max_active and not background:  # warm-up: one at a time
                outcome = "rejected"
                raise SynthesisBusyError(
                    f"{self._admitted} syntheses already running or queued (max_active)"
                )
            req.admitted = True
            self._admitted += 1
            fb = self.frame_bytes(rate)
            opening = self._cached_opening(text, voice, rate, options) if record else None
            head = carry = b""
            if opening is not None:
                self.stats.prefix_hits += 1
                pcm, text = opening
                full = len(pcm) // fb * fb
                head, carry = pcm[:full], pcm[full:]
            req.producer = asyncio.get_running_loop().create_task(
                self._produce(req, voice, text, rate, options, key, background, head, carry),
                name=f"tts-produce-{req.id}",
            )
            max_ahead = self._max_ahead_frames()
            async for frame in self._cached_frames(req, head, fb):  # while Piper goes on
                yield frame
            if req.cancelled:
                return
            n = len(head) // fb
            while True:
                item = await req.queue.get()
                if req.cancelled:
                    return
                if isinstance(item, _End):
                    outcome = "completed"
                    return
                if isinstance(item, BaseException):
                    outcome = "failed"
                    raise SynthesisError(
                        f"synthesis of request {req.id!r} failed: {item}"
                    ) from item
                for frame in item:
                    if n and n % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                    if req.cancelled:
                        return
                    if n == 0 and record:
                        self._first_audio(req, cached=False)
                    n += 1
                    yield frame
                    req.frames_ahead -= 1
                    if req.frames_ahead <= max_ahead:
                        req.space.set()
        except Exception:
            if outcome == "cancelled":
                outcome = "failed"
            raise
        finally:
            self._finish(req, outcome, record)

    async def _cached_frames(
        self, req: _Request, pcm: bytes, fb: int
    ) -> AsyncGenerator[bytes, None]:
        """Already synthesized audio in frames, yielding to the loop now and then; stops at
        once when ``req`` is cancelled."""
        for n, offset in enumerate(range(0, len(pcm), fb)):
            if n and n % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if req.cancelled:
                return
            if n == 0:
                self._first_audio(req, cached=True)
            yield pcm[offset : offset + fb]

    def _cached_opening(
        self, text: str, voice: Voice, rate: int, options: SynthesisOptions
    ) -> tuple[bytes, str] | None:
        """The cached audio of ``text``'s registered fixed opening and the text still to voice,
        or None."""
        match = self.prefixes.match(text)
        if match is None:
            return None
        pcm = self.cache.get(self._key(match[0], voice, rate, options))
        return (pcm, match[1]) if pcm else None

    def _max_ahead_frames(self) -> int:
        return max(1, int(self.max_ahead_seconds * 1000 / self.frame_ms))

    async def _run(
        self, req: _Request, priority: int, fn: Callable[[], _UnitResult]
    ) -> _UnitResult | None:
        """``fn()`` in a worker thread once a slot is free; None if ``req`` was cancelled first.
        The slot is released when the thread is done with it, not when the awaiting task stops
        waiting, so the pool never runs more than ``workers`` jobs."""
        await self._gate.acquire(priority)
        loop = asyncio.get_running_loop()
        try:
            cf: Future[_UnitResult | None] = self._executor.submit(_run_unless_cancelled, req, fn)
        except BaseException:
            self._gate.release()
            raise

        def release(_: Future[_UnitResult | None]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._gate.release)

        cf.add_done_callback(release)
        return await asyncio.wrap_future(cf)

    async def _produce(
        self,
        req: _Request,
        voice: Voice,
        text: str,
        rate: int,
        options: SynthesisOptions,
        key: str,
        background: bool,
        head: bytes = b"",
        carry: bytes = b"",
    ) -> None:
        """Voice ``text`` into ``req``'s queue and cache the whole (``head``, audio already
        handed out from the cache, first; ``carry``, a partial frame of it, starts the first
        frame of ``text``)."""
        try:
            pipeline = _Pipeline(
                voice,
                rate,
                options,
                self.frame_bytes(rate),
                self.resample_quality,
                self.max_unit_phonemes,
                self.lead_in_ms,
                carry,
                OFF if background or head or carry else self.first_unit,
            )
            max_ahead = self._max_ahead_frames()
            collected: list[bytes] = []
            first = True
            while True:
                if first:
                    prio = _PRIORITY_BACKGROUND if background else _PRIORITY_FIRST
                    result = await self._run(req, prio, lambda: pipeline.start(text))
                else:
                    while req.frames_ahead > max_ahead and not req.cancelled:
                        req.space.clear()
                        await req.space.wait()
                    prio = _PRIORITY_BACKGROUND if background else _PRIORITY_NEXT
                    result = await self._run(req, prio, pipeline.next_unit)
                if result is None or req.cancelled:
                    return
                self.stats.units += 1
                if first and pipeline.first_cut is not None:
                    self.stats.first_cuts += 1
                self.stats.audio_seconds += result.audio_seconds
                self.stats.compute_seconds += result.compute_seconds
                self.stats.resample_seconds += result.resample_seconds
                self._hook(self.hooks.on_unit, result.audio_seconds, result.compute_seconds)
                collected.extend(result.frames)
                req.frames_ahead += len(result.frames)
                req.queue.put_nowait(result.frames)
                first = False
                if result.done:
                    break
            pcm = head + b"".join(collected)
            if pcm and not req.cancelled:
                self.cache.put(key, pcm)
            req.queue.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            _LOGGER.exception("synthesis of request %r failed", req.id)
            req.queue.put_nowait(e)


__all__ = [
    "DEFAULT_FRAME_MS",
    "DEFAULT_VOICE",
    "SUPPORTED_RATES",
    "DuplicateRequestError",
    "SynthesisBusyError",
    "SynthesisError",
    "SynthesisOptions",
    "Synthesizer",
    "TTSError",
    "TTSHooks",
    "TTSStats",
    "UnsupportedSampleRateError",
    "WarmUpReport",
    "is_fixed_prompt",
    "trim_leading_silence",
    "trim_trailing_silence",
]
