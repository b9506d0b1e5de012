"""The synthesis layer with the real bundled Piper voice (loaded once for the session)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import soxr
from voicetyped_speech.models.verify import transcribe
from voicetyped_speech.tts import (
    DEFAULT_VOICE,
    DuplicateRequestError,
    InvalidVoiceError,
    PromptCache,
    SynthesisBusyError,
    SynthesisOptions,
    Synthesizer,
    TTSHooks,
    UnknownVoiceError,
    UnsupportedSampleRateError,
    VoiceRegistry,
    is_fixed_prompt,
)
from voicetyped_speech.tts.first_unit import OFF
from voicetyped_speech.tts.prefix import PrefixIndex, fixed_prefix
from voicetyped_speech.tts.synth import trim_leading_silence
from voicetyped_speech.tts.units import split_sentence, split_units
from voicetyped_testkit.speech import words

if TYPE_CHECKING:
    from pywhispercpp.model import Model

SHORT = "Thank you for calling."
MULTI = (
    "Hello, thanks for calling Acme support. Please listen carefully, as our menu options have "
    "recently changed. For billing questions, press one. For technical support, press two. "
    "To speak with an agent, please stay on the line."
)
LONG_FIRST = (
    "Your account balance is forty two dollars and seventeen cents, and your next payment of "
    "twenty dollars is due on the fifteenth of December. Thank you."
)
LONG_LATER = (
    "Okay. I have found your account, and I can see that your last three payments arrived on "
    "time. Your next statement will be mailed on the first of the month, and it will include "
    "the late fee refund that we discussed earlier in this call. Is there anything else?"
)
# Noise off: Piper's output is then deterministic, so runs can be compared exactly.
EXACT = SynthesisOptions(noise_scale=0.0, noise_w_scale=0.0)
FRAME_MS = 20
CANCEL_BUDGET_S = 0.040


@pytest.fixture(scope="session")
def registry() -> VoiceRegistry:
    reg = VoiceRegistry()
    reg.get(DEFAULT_VOICE)  # load once for every test
    return reg


@pytest.fixture
async def synth(registry: VoiceRegistry) -> AsyncIterator[Synthesizer]:
    s = Synthesizer(registry, workers=2, frame_ms=FRAME_MS)
    yield s
    await s.aclose(wait=True)


@dataclass
class Run:
    frames: list[bytes]
    first_s: float | None
    total_s: float

    @property
    def pcm(self) -> bytes:
        return b"".join(self.frames)


async def consume(
    synth: Synthesizer, text: str, rate: int, rid: str, options: SynthesisOptions | None = None
) -> Run:
    t0 = time.perf_counter()
    frames: list[bytes] = []
    first: float | None = None
    stream = synth.synthesize(text, DEFAULT_VOICE, rate, rid, options=options)
    async with contextlib.aclosing(stream):
        async for frame in stream:
            if first is None:
                first = time.perf_counter() - t0
            frames.append(frame)
    return Run(frames, first, time.perf_counter() - t0)


def piper_original(registry: VoiceRegistry, text: str, options: SynthesisOptions) -> np.ndarray:
    """Piper's own output (22050 Hz int16) for ``text``, through PiperVoice.synthesize."""
    voice = registry.get(DEFAULT_VOICE)
    chunks = list(voice.piper.synthesize(text, syn_config=options.to_piper()))
    return np.concatenate([np.asarray(c.audio_int16_array, dtype=np.int16) for c in chunks])


def assert_framed(frames: list[bytes], rate: int, frame_ms: int = FRAME_MS) -> None:
    size = rate * frame_ms // 1000 * 2
    assert frames
    assert all(len(f) == size for f in frames[:-1])
    assert 0 < len(frames[-1]) <= size
    assert len(frames[-1]) % 2 == 0


@dataclass
class Ticker:
    """Measures the event loop's responsiveness: the largest gap between 5 ms ticks."""

    max_gap: float = 0.0
    ticks: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def _run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - last)
            self.ticks += 1
            last = now

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


# -- output format ------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_output_rate_length_and_frames(
    synth: Synthesizer, registry: VoiceRegistry, rate: int
) -> None:
    synth.lead_in_ms = None  # Piper's audio untouched (trimming: see the lead-in tests)
    synth.first_unit = OFF  # whole sentences, as Piper voices them (cut: test_tts_first_unit)
    run = await consume(synth, MULTI, rate, f"fmt-{rate}", options=EXACT)
    assert_framed(run.frames, rate)
    out = np.frombuffer(run.pcm, dtype="<i2")
    original = piper_original(registry, MULTI, EXACT)
    # Same duration as Piper's 22050 Hz original (to within a sample or two: resampling keeps it).
    expected = len(original) * rate / 22050
    assert abs(len(out) - expected) <= 0.10 * expected
    assert abs(len(out) - expected) <= 2
    # And the same audio: a one-shot soxr conversion of the original matches the streamed one.
    reference = soxr.resample(original.astype(np.float32) / 32767.0, 22050, rate, quality="HQ")
    n = min(len(reference), len(out))
    corr = np.corrcoef(out[:n].astype(np.float64), reference[:n].astype(np.float64))[0, 1]
    assert corr > 0.99
    assert np.abs(out).max() > 8000  # speech, not silence


@pytest.mark.parametrize("frame_ms", [10, 30])
async def test_other_frame_sizes(registry: VoiceRegistry, frame_ms: int) -> None:
    s = Synthesizer(registry, frame_ms=frame_ms)
    try:
        run = await consume(s, SHORT, 8000, "frames")
    finally:
        await s.aclose(wait=True)
    assert_framed(run.frames, 8000, frame_ms)


async def test_empty_text_yields_nothing(synth: Synthesizer) -> None:
    run = await consume(synth, "   ", 8000, "empty")
    assert run.frames == []
    assert len(synth.cache) == 0


async def test_first_sentence_streams_before_the_last_is_synthesized(synth: Synthesizer) -> None:
    units_at_first_frame: int | None = None
    t0 = time.perf_counter()
    first = None
    async for _ in synth.synthesize(MULTI, DEFAULT_VOICE, 8000, "stream"):
        if first is None:
            first = time.perf_counter() - t0
            units_at_first_frame = synth.stats.units
    total = time.perf_counter() - t0
    assert first is not None
    assert units_at_first_frame is not None
    assert synth.stats.units == 6  # one unit per sentence, the first cut after "Hello,"
    assert units_at_first_frame < synth.stats.units
    assert first < total / 2, (first, total)
    assert synth.stats.ttfa_uncached[-1] == pytest.approx(first, abs=0.01)


# -- cancel (barge-in) ------------------------------------------------------------------------


@dataclass
class CancelProbe:
    frames_before: int = 0
    frames_after: int = 0
    latency: float = 0.0


async def run_and_cancel(
    synth: Synthesizer, text: str, rid: str, when: str, delay: float
) -> CancelProbe:
    """Consume ``text`` as fast as frames come; cancel either before the first frame
    (``when="first"``, after ``delay``) or while a later unit is being synthesized
    (``when="later"``: ``delay`` after the first unit's frames arrived)."""
    probe = CancelProbe()
    cancel_returned = False
    got_frame = asyncio.Event()
    done_at = 0.0

    async def consumer() -> None:
        nonlocal done_at
        async for _ in synth.synthesize(text, DEFAULT_VOICE, 8000, rid):
            if cancel_returned:
                probe.frames_after += 1
            else:
                probe.frames_before += 1
            got_frame.set()
        done_at = time.perf_counter()

    task = asyncio.create_task(consumer())
    if when == "later":
        await got_frame.wait()
        assert synth.stats.units >= 1
    await asyncio.sleep(delay)
    if when == "first":
        assert probe.frames_before == 0, "cancel meant to land mid-first-sentence"
    else:
        assert not task.done(), "cancel meant to land mid-later-sentence"
        assert synth.busy_workers >= 1
    t0 = time.perf_counter()
    assert synth.cancel(rid)
    cancel_returned = True
    await task
    probe.latency = done_at - t0
    return probe


@pytest.mark.parametrize("attempt", range(4))
async def test_cancel_mid_first_sentence_stops_within_40ms(
    synth: Synthesizer, attempt: int
) -> None:
    probe = await run_and_cancel(
        synth, LONG_FIRST, f"c1-{attempt}", "first", random.uniform(0.0, 0.08)
    )
    assert probe.frames_after == 0
    assert probe.latency < CANCEL_BUDGET_S, probe
    assert synth.stats.cancelled == 1
    assert len(synth.cache) == 0


@pytest.mark.parametrize("attempt", range(4))
async def test_cancel_mid_later_sentence_stops_within_40ms(
    synth: Synthesizer, attempt: int
) -> None:
    probe = await run_and_cancel(
        synth, LONG_LATER, f"c2-{attempt}", "later", random.uniform(0.0, 0.1)
    )
    assert probe.frames_before > 0
    assert probe.frames_after == 0
    assert probe.latency < CANCEL_BUDGET_S, probe
    assert len(synth.cache) == 0


async def test_cancel_frees_the_worker_after_at_most_one_unit(registry: VoiceRegistry) -> None:
    s = Synthesizer(registry, workers=1)
    try:
        text = " ".join([LONG_LATER] * 3)
        stream = s.synthesize(text, DEFAULT_VOICE, 8000, "hog")
        await stream.__anext__()  # first unit done, the second is running
        assert s.busy_workers == 1
        t0 = time.perf_counter()
        s.cancel("hog")
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()
        for _ in range(300):  # the running unit finishes in its thread; nothing follows it
            if not s.busy_workers:
                break
            await asyncio.sleep(0.005)
        freed = time.perf_counter() - t0
        assert freed < 1.5
        assert s.queued_jobs == 0
        run = await consume(s, SHORT, 8000, "next")  # the pool serves the next caller
        assert run.frames
    finally:
        await s.aclose(wait=True)


async def test_cancel_before_iteration_and_unknown_ids(synth: Synthesizer) -> None:
    stream = synth.synthesize(SHORT, DEFAULT_VOICE, 8000, "early")
    assert synth.cancel("early")
    assert not synth.cancel("early")  # already cancelled
    assert not synth.cancel("never-started")
    assert [f async for f in stream] == []
    assert synth.busy_workers == 0
    assert "early" not in synth.active_requests()
    unstarted = synth.synthesize(SHORT, DEFAULT_VOICE, 8000, "reuse")
    assert synth.cancel("reuse")
    assert (await consume(synth, SHORT, 8000, "reuse")).frames  # a cancelled id can be reused
    await unstarted.aclose()


async def test_abandoned_stream_is_not_cached(synth: Synthesizer) -> None:
    stream = synth.synthesize(MULTI, DEFAULT_VOICE, 8000, "abandon")
    await stream.__anext__()
    await stream.aclose()
    assert len(synth.cache) == 0
    assert synth.stats.cancelled == 1
    again = await consume(synth, MULTI, 8000, "abandon")  # the id is free again
    assert again.frames
    assert len(synth.cache) == 1


async def test_synthesis_runs_at_most_max_ahead_of_the_consumer(registry: VoiceRegistry) -> None:
    s = Synthesizer(registry, max_ahead_seconds=0.2)
    try:
        stream = s.synthesize(MULTI, DEFAULT_VOICE, 8000, "slow")
        frames = [await stream.__anext__()]
        await asyncio.sleep(0.8)  # a consumer that has not caught up: no more synthesis
        assert s.stats.units == 1
        assert s.busy_workers == 0
        frames += [f async for f in stream]
        assert s.stats.units == 6
        assert_framed(frames, 8000)
        assert len(s.cache) == 1
    finally:
        await s.aclose(wait=True)


# -- prompt cache -------------------------------------------------------------------------------


async def test_cache_hit_is_fast_and_identical(synth: Synthesizer) -> None:
    events: list[tuple[str, object]] = []
    synth.hooks = TTSHooks(
        on_cache_hit=lambda: events.append(("hit", None)),
        on_cache_miss=lambda: events.append(("miss", None)),
        on_first_audio=lambda s, cached: events.append(("ttfa", cached)),
        on_unit=lambda audio, compute: events.append(("unit", audio > compute)),
        on_finished=lambda outcome: events.append(("done", outcome)),
    )
    for rate in (8000, 16000):
        miss = await consume(synth, MULTI, rate, f"miss-{rate}")
        hits = [await consume(synth, MULTI, rate, f"hit-{rate}-{i}") for i in range(3)]
        for hit in hits:
            assert hit.pcm == miss.pcm
            assert hit.frames == miss.frames
            assert hit.first_s is not None
            assert hit.first_s <= 0.010, hit.first_s
    assert synth.stats.cache_misses == 2
    assert synth.stats.cache_hits == 6
    assert len(synth.stats.ttfa_cached) == 6
    assert max(synth.stats.ttfa_cached) <= 0.010
    kinds = [k for k, _ in events]
    assert kinds.count("miss") == 2
    assert kinds.count("hit") == 6
    assert kinds.count("unit") == 12
    assert ("ttfa", True) in events
    assert ("ttfa", False) in events
    assert ("unit", True) in events  # faster than real time
    assert kinds.count("done") == 8
    assert synth.stats.completed == 8


async def test_cache_key_covers_voice_rate_and_options(synth: Synthesizer) -> None:
    await consume(synth, SHORT, 8000, "a")
    await consume(synth, SHORT, 8000, "b", options=SynthesisOptions(length_scale=1.2))
    await consume(synth, SHORT + " ", 8000, "c")
    assert synth.stats.cache_misses == 3
    assert len(synth.cache) == 3
    voice = synth.voices.get(DEFAULT_VOICE)
    base = synth.cache_key(SHORT, voice, 8000, None)
    assert base in synth.cache
    assert synth.cache_key(SHORT, voice, 16000, None) not in synth.cache
    assert synth.cache_key(SHORT, voice, 8000, SynthesisOptions(volume=0.5)) != base


async def test_cancelled_synthesis_is_not_cached(synth: Synthesizer) -> None:
    await run_and_cancel(synth, LONG_FIRST, "cx", "first", 0.02)
    await asyncio.sleep(0.6)  # let the discarded unit finish in its thread
    assert len(synth.cache) == 0
    run = await consume(synth, LONG_FIRST, 8000, "cx")
    assert synth.stats.cache_misses == 2
    assert synth.stats.cache_hits == 0
    assert run.frames
    assert len(synth.cache) == 1


async def test_warm_up_makes_fixed_prompts_hits(synth: Synthesizer) -> None:
    prompts = [
        "Welcome to Acme.",
        "Hello {{caller.name}}, how can I help?",
        "Please hold.",
        "",
        "Welcome to Acme.",
    ]
    assert [is_fixed_prompt(p) for p in prompts] == [True, False, True, True, True]
    report = await synth.warm_up(prompts, DEFAULT_VOICE, 8000)
    assert report.synthesized == 2
    assert report.skipped_templated == 1
    assert report.skipped_empty == 1
    assert report.already_cached == 0
    assert synth.stats.requests == 0  # warm-up is not caller traffic
    again = await synth.warm_up(prompts, DEFAULT_VOICE, 8000)
    assert again.already_cached == 2
    assert again.synthesized == 0
    for i, text in enumerate(["Welcome to Acme.", "Please hold."]):
        run = await consume(synth, text, 8000, f"w{i}")
        assert run.first_s is not None
        assert run.first_s <= 0.010
    assert synth.stats.cache_hits == 2
    assert synth.stats.cache_misses == 0


def onset_ms(pcm: bytes, rate: int) -> float:
    """Where the sound starts: the first sample within 40 dB of the peak."""
    a = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.float64))
    return float(np.flatnonzero(a >= a.max() * 0.01)[0]) * 1000 / rate


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_leading_silence_is_cut_to_the_lead_in(
    synth: Synthesizer, registry: VoiceRegistry, rate: int
) -> None:
    texts = [SHORT, "Okay.", "Please enter your order number.", "Hello! How can I help?"]
    trimmed = [await consume(synth, t, rate, f"t{i}", EXACT) for i, t in enumerate(texts)]
    untrimmed_synth = Synthesizer(registry, lead_in_ms=None)
    try:
        untrimmed = [
            await consume(untrimmed_synth, t, rate, f"u{i}", EXACT) for i, t in enumerate(texts)
        ]
    finally:
        await untrimmed_synth.aclose(wait=True)
    for text, cut, whole in zip(texts, trimmed, untrimmed, strict=True):
        assert_framed(cut.frames, rate)
        # Piper opens with tens of ms of near-silence; what is left is the 10 ms lead-in plus
        # the resampler's smearing of the onset.
        assert onset_ms(whole.pcm, rate) >= 25, text
        assert onset_ms(cut.pcm, rate) <= 13, text
        removed_ms = (len(whole.pcm) - len(cut.pcm)) / 2 * 1000 / rate
        assert removed_ms == pytest.approx(
            onset_ms(whole.pcm, rate) - onset_ms(cut.pcm, rate), abs=3
        )


def test_trim_leading_silence_rules() -> None:
    rate = 22050
    rng = np.random.default_rng(7)
    silence = (rng.standard_normal(rate // 10) * 1e-4).astype(np.float32)  # 100 ms, -80 dB
    tone = (0.5 * np.cos(np.arange(rate // 5) * 2 * np.pi * 440 / rate)).astype(np.float32)
    out = trim_leading_silence(np.concatenate([silence, tone]), rate, 10)
    assert len(out) == len(tone) + rate // 100  # 10 ms of the silence kept
    assert np.array_equal(trim_leading_silence(tone, rate, 10), tone)  # nothing to cut
    assert np.array_equal(trim_leading_silence(silence, rate, 10)[: rate // 100], silence[:220])
    empty = np.zeros(0, dtype=np.float32)
    assert trim_leading_silence(empty, rate, 10).size == 0
    zeros = np.zeros(100, dtype=np.float32)
    assert np.array_equal(trim_leading_silence(zeros, rate, 10), zeros)  # all silence: kept
    # A quiet voice is trimmed relative to its own level, not an absolute threshold.
    quiet = np.concatenate([silence * 0.01, tone * 0.01])
    assert len(trim_leading_silence(quiet, rate, 0)) == len(tone)


def test_fixed_prefix_of_templates() -> None:
    assert fixed_prefix("One moment while I look up order {{ vars.order_id }}.") == (
        "One moment while I look up order"
    )
    assert (
        fixed_prefix("Good news: order {{ n }} has shipped in {{ d }} days.") == "Good news: order"
    )
    assert fixed_prefix("Hello {{ caller.name }}, welcome.") is None  # one word: too short
    assert fixed_prefix("{{ greeting }} and welcome.") is None
    assert fixed_prefix("No template here.") is None
    # A word glued to the template part goes with the rest.
    assert fixed_prefix("Your reference is ref#{{ r }}.") == "Your reference is"
    assert fixed_prefix("Please say   {{x}}") == "Please say"


def test_prefix_index_matches_longest_on_word_boundaries() -> None:
    index = PrefixIndex(max_entries=3)
    index.add("Your order")
    index.add("Your order number")
    assert index.match("Your order number 42 is ready.") == ("Your order number", "42 is ready.")
    assert index.match("Your order 42 is ready.") == ("Your order", "42 is ready.")
    assert index.match("Your orders are ready.") is None  # not a word boundary
    assert index.match("Your order") is None  # nothing left to voice
    assert index.match("Your order   ") is None
    index.add("a b")
    index.add("c d")  # evicts the oldest
    assert "Your order" not in index
    assert len(index) == 3


async def test_templated_prompt_starts_from_its_cached_opening(
    synth: Synthesizer, whisper_cpp: Model
) -> None:
    template = "One moment while I look up order {{ vars.order_id }}."
    report = await synth.warm_up([template], DEFAULT_VOICE, 16000)
    assert (report.skipped_templated, report.prefixes, report.synthesized) == (1, 1, 1)
    voice = synth.voices.get(DEFAULT_VOICE)
    opening = synth.cache.get(
        synth.cache_key("One moment while I look up order", voice, 16000, None)
    )
    assert opening is not None
    rendered = "One moment while I look up order 4 8 2 1 3."
    run = await consume(synth, rendered, 16000, "lookup")
    assert run.first_s is not None
    assert run.first_s <= 0.010, run.first_s  # from the cache, not after Piper's first sentence
    assert synth.stats.prefix_hits == 1
    assert synth.stats.cache_misses == 1
    assert_framed(run.frames, 16000)
    assert run.pcm.startswith(opening[: len(opening) // 640 * 640])
    assert len(run.pcm) > len(opening) + 16000 * 2 * 1  # and then the number, > 1 s of it
    heard = transcribe(
        whisper_cpp, np.frombuffer(run.pcm, dtype="<i2").astype(np.float32) / np.float32(32768)
    )
    assert words(heard)[-5:] == ["four", "eight", "two", "one", "three"], heard
    assert words(heard)[:3] == ["one", "moment", "while"], heard
    # The whole rendered prompt is now cached as one: the next call is a plain hit.
    again = await consume(synth, rendered, 16000, "lookup-2")
    assert again.pcm == run.pcm
    assert synth.stats.cache_hits == 1
    # Another rate has no cached opening: voiced whole, as before.
    await consume(synth, rendered, 8000, "lookup-8k")
    assert synth.stats.prefix_hits == 1


async def test_barge_in_during_a_cached_opening(synth: Synthesizer) -> None:
    await synth.warm_up(["Please wait while I check {{ x }} for you."], DEFAULT_VOICE, 8000)
    stream = synth.synthesize(
        "Please wait while I check your balance for you.", DEFAULT_VOICE, 8000, "b"
    )
    first = await stream.__anext__()
    assert first
    assert synth.cancel("b")
    assert [f async for f in stream] == []
    await asyncio.sleep(0.6)  # the rest's unit finishes in its thread, dropped
    assert synth.stats.prefix_hits == 1
    voice = synth.voices.get(DEFAULT_VOICE)
    rendered_key = synth.cache_key(
        "Please wait while I check your balance for you.", voice, 8000, None
    )
    assert rendered_key not in synth.cache  # cancelled: never cached


def test_prompt_cache_is_bounded_by_bytes_lru() -> None:
    cache = PromptCache(max_bytes=1000)
    cache.put("a", b"x" * 400)
    cache.put("b", b"x" * 400)
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", b"x" * 400)  # evicts b
    assert "b" not in cache
    assert "a" in cache
    assert "c" in cache
    assert cache.total_bytes == 800
    assert not cache.put("huge", b"x" * 1001)
    cache.put("a", b"y" * 100)  # replacing an entry updates the byte count
    assert cache.total_bytes == 500
    assert cache.stats.evictions == 1
    assert cache.stats.rejected == 1
    assert cache.get("zzz") is None
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)


# -- errors -----------------------------------------------------------------------------------


async def test_unknown_voice_and_bad_rates_are_rejected_at_call(synth: Synthesizer) -> None:
    with pytest.raises(UnknownVoiceError, match=r"unknown voice 'en_GB-nobody'.*en_US-joe-medium"):
        synth.synthesize(SHORT, "en_GB-nobody", 8000, "x")
    with pytest.raises(UnknownVoiceError):
        synth.synthesize(SHORT, "/nonexistent/voice.onnx", 8000, "x")
    for rate in (22050, 44100, 48000, 0, 8000.0, True):
        with pytest.raises(UnsupportedSampleRateError, match="use 8000 or 16000"):
            synth.synthesize(SHORT, DEFAULT_VOICE, rate, "x")  # type: ignore[arg-type]
    with pytest.raises(UnsupportedSampleRateError):
        await synth.warm_up([SHORT], DEFAULT_VOICE, 11025)
    with pytest.raises(UnknownVoiceError):
        await synth.warm_up([SHORT], "nobody", 8000)
    assert synth.active_requests() == []


async def test_duplicate_active_request_id(synth: Synthesizer) -> None:
    stream = synth.synthesize(SHORT, DEFAULT_VOICE, 8000, "dup")
    with pytest.raises(DuplicateRequestError):
        synth.synthesize(SHORT, DEFAULT_VOICE, 8000, "dup")
    assert [f async for f in stream]
    assert (await consume(synth, SHORT, 8000, "dup")).frames  # reusable once finished


async def test_too_many_active_syntheses_are_refused(registry: VoiceRegistry) -> None:
    s = Synthesizer(registry, workers=1, max_active=1)
    try:
        first = s.synthesize(MULTI, DEFAULT_VOICE, 8000, "one")
        await first.__anext__()
        with pytest.raises(SynthesisBusyError):
            await consume(s, SHORT, 8000, "two")
        assert s.stats.rejected == 1
        await first.aclose()
        assert (await consume(s, SHORT, 8000, "three")).frames
    finally:
        await s.aclose(wait=True)


# -- voices -------------------------------------------------------------------------------------


def test_voices_by_path_share_the_loaded_model(registry: VoiceRegistry, tmp_path: Path) -> None:
    bundled = registry.get(DEFAULT_VOICE)
    by_dir = registry.get(str(bundled.spec.model_path.parent))
    by_file = registry.get(str(bundled.spec.model_path))
    assert by_dir.piper is bundled.piper
    assert by_file.piper is bundled.piper
    assert by_dir.name == str(bundled.spec.model_path)
    assert by_dir.identity == bundled.identity
    assert bundled.sample_rate == 22050
    assert len(bundled.identity) == 64

    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidVoiceError, match="exactly one"):
        registry.resolve(str(tmp_path / "empty"))
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(b"")
    with pytest.raises(InvalidVoiceError, match="no config"):
        registry.resolve(str(lonely))
    strict = VoiceRegistry(allow_paths=False)
    with pytest.raises(UnknownVoiceError):
        strict.resolve(str(bundled.spec.model_path))


async def test_synthesize_with_a_voice_given_by_path(
    synth: Synthesizer, registry: VoiceRegistry
) -> None:
    directory = str(registry.get(DEFAULT_VOICE).spec.model_path.parent)
    frames = [f async for f in synth.synthesize(SHORT, directory, 16000, "by-path")]
    assert_framed(frames, 16000)
    await consume(synth, SHORT, 16000, "by-name")
    assert synth.stats.cache_misses == 2  # another voice name, another cache entry
    assert len(synth.cache) == 2


def test_registry_loads_a_voice_once_across_threads(
    registry: VoiceRegistry, tmp_path: Path
) -> None:
    bundled = registry.get(DEFAULT_VOICE).spec
    # A copy under another name: distinct files, so a fresh load (not shared with the session).
    model = tmp_path / "copy.onnx"
    shutil.copyfile(bundled.model_path, model)
    shutil.copyfile(bundled.config_path, tmp_path / "copy.onnx.json")
    fresh = VoiceRegistry({"copy": model}, include_bundled=False)
    assert fresh.names() == ["copy"]
    assert not fresh.is_loaded("copy")
    results: list[object] = []
    barrier = threading.Barrier(4)

    def load() -> None:
        barrier.wait()
        results.append(fresh.get("copy").piper)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    assert all(r is results[0] for r in results)
    assert fresh.is_loaded("copy")
    copy = fresh.get("copy")
    assert copy.identity == registry.get(DEFAULT_VOICE).identity  # same bytes, same identity
    assert copy.name == "copy"


# -- concurrency and the event loop -------------------------------------------------------------


async def test_four_syntheses_on_two_workers_queue_and_complete(registry: VoiceRegistry) -> None:
    texts = [MULTI, LONG_FIRST, LONG_LATER, SHORT + " " + SHORT]
    s = Synthesizer(registry, workers=2, cache_max_bytes=0)
    busy: list[int] = []
    s.hooks.on_unit = lambda *_: busy.append(s.busy_workers)
    try:
        runs = await asyncio.gather(
            *(consume(s, t, 16000, f"par-{i}", options=EXACT) for i, t in enumerate(texts))
        )
        assert max(busy) <= 2
        assert s.stats.completed == 4
        assert s.stats.failed == 0
        for run in runs:
            assert_framed(run.frames, 16000)
        # Each concurrent result equals a lone synthesis of the same text: no cross-talk.
        for i, (text, run) in enumerate(zip(texts, runs, strict=True)):
            alone = await consume(s, text, 16000, f"alone-{i}", options=EXACT)
            assert alone.pcm == run.pcm
    finally:
        await s.aclose(wait=True)


async def test_event_loop_stays_responsive_during_synthesis(synth: Synthesizer) -> None:
    texts = [MULTI, LONG_FIRST, LONG_LATER, MULTI]
    with Ticker() as ticker:
        await asyncio.gather(*(consume(synth, t, 8000, f"tick-{i}") for i, t in enumerate(texts)))
    assert ticker.ticks > 20
    assert ticker.max_gap < 0.050, ticker.max_gap


# -- sentence splitting ------------------------------------------------------------------------


def test_split_sentence_prefers_clause_breaks_then_words() -> None:
    clause = list("aaaa bbbb cccc, dddd eeee ffff")
    assert ["".join(p) for p in split_sentence(clause, 20)] == ["aaaa bbbb cccc,", "dddd eeee ffff"]
    words = list("aaaa bbbb cccc dddd eeee ffff")
    pieces = ["".join(p) for p in split_sentence(words, 20)]
    assert pieces == ["aaaa bbbb cccc", "dddd eeee ffff"]
    assert split_sentence(list("short"), 20) == [list("short")]
    assert [len(p) for p in split_sentence(["x"] * 50, 20)] == [20, 20, 10]
    assert split_units([[], list("ab"), [" "]], 20) == [list("ab")]


def test_long_sentences_are_cut_into_bounded_units(registry: VoiceRegistry) -> None:
    piper = registry.get(DEFAULT_VOICE).piper
    sentences = piper.phonemize(" ".join([LONG_LATER] * 2))
    units = split_units(sentences, 100)
    assert len(units) > len(sentences)
    assert all(0 < len(u) <= 100 for u in units)
    joined = [p for u in units for p in u if p != " "]
    assert joined == [p for s in sentences for p in s if p != " "]  # nothing lost or added
