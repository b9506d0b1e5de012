"""Recognition backends and the shared worker pool, on the real models.

Both backends transcribe call-style phrases spoken by Piper after an 8 kHz
G.711 mu-law round trip (the telephone path); the pool serves finals before
partials, keeps one partial per call, and refuses with Overloaded instead of
queueing without bound.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import pytest
from piper import SynthesisConfig
from voicetyped.recognition import Expect, RecognitionContext
from voicetyped_speech.asr.base import AbortCheck, Aborted, Audio, DecodeOptions, Transcription
from voicetyped_speech.asr.fasterwhisper import FasterWhisperRecognizer
from voicetyped_speech.asr.pool import Deadline, DecodeStats, Overloaded, RecognitionPool
from voicetyped_speech.asr.whispercpp import WhisperCppRecognizer
from voicetyped_speech.vad import pcm16_to_float32
from voicetyped_testkit.espeak import EspeakVoice, speak_16k
from voicetyped_testkit.processes import eventually
from voicetyped_testkit.speech import phone_speech, silence, telephone, word_errors

if TYPE_CHECKING:
    from piper import PiperVoice
    from voicetyped_speech.models.ggml_converter import ConversionResult
    from voicetyped_speech.models.prepare import BundledModels

PHRASES = [
    "I want to check the status of my order.",
    "Can I speak to a person, please?",
    "My order number is four eight two one three.",
    "I need to cancel my appointment on Friday.",
    "Yes, that is correct.",
    "There is a charge on my card I do not recognize.",
]


@pytest.fixture(scope="module")
def phone_audio(voice: PiperVoice) -> list[tuple[str, Audio]]:
    quiet = SynthesisConfig(noise_scale=0, noise_w_scale=0)
    return [
        (text, pcm16_to_float32(phone_speech(voice, text, quiet).tobytes())) for text in PHRASES
    ]


def _check_wer(transcribe: object, phone_audio: list[tuple[str, Audio]]) -> float:
    errors = total = 0
    for text, audio in phone_audio:
        result = transcribe(audio)  # type: ignore[operator]
        assert isinstance(result, Transcription)
        assert 0 <= result.confidence <= 1
        e, n = word_errors(text, result.text)
        errors, total = errors + e, total + n
    return errors / total


def test_whispercpp_on_the_phone_path(
    converted: ConversionResult, phone_audio: list[tuple[str, Audio]]
) -> None:
    recognizer = WhisperCppRecognizer(converted.path)
    wer = _check_wer(recognizer.transcribe, phone_audio)
    assert wer <= 0.05, f"WER {wer:.1%}"


def test_faster_whisper_on_the_phone_path(
    bundled: BundledModels, phone_audio: list[tuple[str, Audio]]
) -> None:
    recognizer = FasterWhisperRecognizer(bundled.whisper_ct2_dir)
    wer = _check_wer(recognizer.transcribe, phone_audio)
    assert wer <= 0.05, f"WER {wer:.1%}"


class _Slow:
    """A recogniser that records the order of work (pool scheduling is what is tested)."""

    name = "order"

    def __init__(self, log: list[str], gate: threading.Event) -> None:
        self.log = log
        self.gate = gate

    def warm_up(self) -> None:
        pass  # nothing to warm: the pool's scheduling is what is tested

    def transcribe(
        self, audio: Audio, abort: object = None, options: DecodeOptions | None = None
    ) -> Transcription:
        self.gate.wait(5)
        self.log.append(f"{audio[0]:.0f}")
        return Transcription(f"{audio[0]:.0f}", 1.0, 0.0)


def _mark(n: int) -> Audio:
    return np.full(4, n, dtype=np.float32)


async def test_pool_order_fairness_and_partials() -> None:
    log: list[str] = []
    shed: list[str] = []
    gate = threading.Event()
    pool = RecognitionPool(lambda: _Slow(log, gate), workers=1, on_shed=shed.append)
    try:
        busy = asyncio.ensure_future(pool.final("a", _mark(0)))
        await asyncio.sleep(0.05)  # the worker is now held on job 0
        stale = asyncio.ensure_future(pool.partial("a", _mark(9)))
        await asyncio.sleep(0)
        fresh = asyncio.ensure_future(pool.partial("a", _mark(8)))
        finals = [
            asyncio.ensure_future(pool.final(s, _mark(n)))
            for s, n in [("a", 1), ("a", 2), ("b", 3)]
        ]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(busy, *finals)
        assert await stale is None, "a newer partial replaced it"
        assert (await fresh) is not None
        # finals first, call b's final taken before call a's second one; the partial last
        assert log == ["0", "1", "3", "2", "8"]
        assert shed == ["replaced"], "the stale partial, counted as shed under load"
    finally:
        gate.set()
        pool.close()


async def test_pool_refuses_when_finals_pile_up() -> None:
    gate = threading.Event()
    pool = RecognitionPool(lambda: _Slow([], gate), workers=1, max_waiting=2)
    try:
        running = asyncio.ensure_future(pool.final("a", _mark(0)))
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(pool.final("a", _mark(i))) for i in (1, 2)]
        await asyncio.sleep(0)
        started = time.monotonic()
        with pytest.raises(Overloaded):
            await pool.final("b", _mark(3))
        assert time.monotonic() - started < 0.05, "refused at once, not after waiting"
        gate.set()
        await asyncio.gather(running, *queued)
    finally:
        gate.set()
        pool.close()


def test_pool_reports_a_model_that_cannot_load(tmp_path: object) -> None:
    from pathlib import Path

    with pytest.raises(FileNotFoundError, match="voicetyped models prepare"):
        RecognitionPool(lambda: WhisperCppRecognizer(Path("/nonexistent/ggml.bin")))


class _Abortable:
    """A recogniser that works until released and honours its abort check every 5 ms."""

    name = "abortable"

    def __init__(self, release: threading.Event, log: list[str]) -> None:
        self.release = release
        self.log = log

    def warm_up(self) -> None:
        pass  # nothing to warm: the pool's scheduling is what is tested

    def transcribe(
        self, audio: Audio, abort: AbortCheck | None = None, options: DecodeOptions | None = None
    ) -> Transcription:
        while not self.release.wait(0.005):
            if abort is not None and abort():
                self.log.append(f"aborted {audio[0]:.0f}")
                raise Aborted
        self.log.append(f"done {audio[0]:.0f}")
        return Transcription(f"{audio[0]:.0f}", 1.0, 0.0)


async def test_a_running_partial_yields_to_a_final() -> None:
    release, log, shed = threading.Event(), list[str](), list[str]()
    abandoned: list[str] = []
    pool = RecognitionPool(
        lambda: _Abortable(release, log),
        workers=1,
        on_shed=shed.append,
        on_abandon=lambda kind, seconds: abandoned.append(kind),
    )
    try:
        partial = asyncio.ensure_future(pool.partial("a", _mark(1)))
        await asyncio.sleep(0.05)
        final = asyncio.ensure_future(pool.final("b", _mark(2)))
        assert await asyncio.wait_for(partial, 1) is None, "aborted for the final"
        release.set()
        assert (await final).text == "2"
        assert log == ["aborted 1", "done 2"]
        assert shed == ["aborted"]
        assert abandoned == ["partial"]
    finally:
        release.set()
        pool.close()


async def test_a_promoted_partial_becomes_a_final_and_is_not_aborted() -> None:
    release, log = threading.Event(), list[str]()
    pool = RecognitionPool(lambda: _Abortable(release, log), workers=1)
    try:
        running = pool.submit("a", _mark(1), "partial")
        await asyncio.sleep(0.05)
        queued = pool.submit("a", _mark(2), "partial")  # replaces nothing: the first one runs
        assert pool.promote(running)
        assert pool.promote(queued), "a waiting partial moves to the finals"
        other = asyncio.ensure_future(pool.final("b", _mark(3)))
        await asyncio.sleep(0.05)
        release.set()
        results = [await running.result(), await queued.result(), await other]
        assert [r.text if r else None for r in results] == ["1", "2", "3"]
        assert log == ["done 1", "done 2", "done 3"]
        done = pool.submit("c", _mark(4), "partial")
        await done.result()
        assert not pool.promote(done), "a finished job cannot be promoted"
    finally:
        release.set()
        pool.close()


async def test_cancelled_jobs_are_dropped_or_stopped() -> None:
    release, log = threading.Event(), list[str]()
    abandoned: list[tuple[str, float]] = []
    pool = RecognitionPool(
        lambda: _Abortable(release, log),
        workers=1,
        max_waiting=1,
        on_abandon=lambda kind, seconds: abandoned.append((kind, seconds)),
    )
    try:
        running = pool.submit("a", _mark(1), "final")
        await asyncio.sleep(0.05)
        waiting = pool.submit("b", _mark(2), "final")
        assert not pool.can_accept_final()
        waiting.cancel()
        assert pool.can_accept_final(), "a cancelled waiting final frees its place"
        running.cancel()
        assert await asyncio.wait_for(running.result(), 1) is None
        assert await waiting.result() is None
        assert log == ["aborted 1"]
        assert pool.queue_depth == 0
        # The stopped decode's compute time is reported (the dropped one never ran).
        assert [kind for kind, _ in abandoned] == ["final"]
        assert abandoned[0][1] >= 0.04
    finally:
        release.set()
        pool.close()


def test_whisper_cpp_writes_its_log_into_the_json_log(
    converted: ConversionResult, capfd: pytest.CaptureFixture[str]
) -> None:
    """whisper.cpp prints to fd 2 itself; the service routes it through structlog, so a
    decode we cancel (a stale speculative partial) leaves a debug record, not a plain line."""
    import _pywhispercpp
    import structlog
    from voicetyped_speech.asr.whispercpp import route_whisper_logs

    recognizer = WhisperCppRecognizer(converted.path)
    route_whisper_logs()
    try:
        with structlog.testing.capture_logs() as records:
            with pytest.raises(Aborted):
                recognizer.transcribe(np.zeros(48000, dtype=np.float32), abort=lambda: True)
            recognizer.transcribe(np.zeros(16000, dtype=np.float32))
    finally:
        _pywhispercpp.whisper_log_set(None)  # whisper.cpp's own printer for the other tests
    assert "failed to encode" not in capfd.readouterr().err
    failed = [r for r in records if r.get("message", "").endswith("failed to encode")]
    assert [(r["event"], r["log_level"]) for r in failed] == [("whisper.cpp", "debug")]
    assert not [r for r in records if r["log_level"] != "debug"], records


def test_biasing_fixes_what_plain_tiny_en_gets_wrong(converted: ConversionResult) -> None:
    """A case from bench/biasing.py's dev set where plain tiny.en is wrong over the phone and
    the state's context puts it right. whisper.cpp only: its decodes are deterministic (greedy,
    seeded fallback); faster-whisper's temperature fallback samples at random when a plain
    decode is unsure, as it is here (the bench measures both backends)."""
    recognizer = WhisperCppRecognizer(converted.path)
    pizza = RecognitionContext(
        state="choose",
        expect=Expect.CHOICE,
        choices=("margherita", "pepperoni", "vegetarian", "hawaiian"),
        prompt="Which pizza would you like: margherita, pepperoni, vegetarian or hawaiian?",
    )
    pad = silence(250)
    audio = telephone(np.concatenate([pad, speak_16k("pepperoni", EspeakVoice("en-us+f3")), pad]))
    clip = pcm16_to_float32(audio.tobytes())
    plain = recognizer.transcribe(clip).text
    biased = recognizer.transcribe(clip, options=DecodeOptions(context=pizza))
    assert "pepperoni" not in plain.lower(), plain
    assert "pepperoni" in biased.text.lower(), biased.text
    assert not biased.echoed
    # The model keeps no prompt between decodes: plain again is wrong again. (Not equal to
    # the first: whisper.cpp's first decode with a short audio_ctx differs from later ones.)
    assert "pepperoni" not in recognizer.transcribe(clip).text.lower()


async def test_a_decode_past_its_deadline_frees_the_worker() -> None:
    """One worker, two calls whose decodes never finish on their own: each is stopped at its
    deadline with an empty result marked "deadline", so the second call's final waits for the
    first one's budget only; the stats say so."""
    release, log, stats = threading.Event(), list[str](), list[DecodeStats]()
    pool = RecognitionPool(
        lambda: _Abortable(release, log),
        workers=1,
        on_decode=stats.append,
        deadline=Deadline(0.2, 0.1, factor=1.0),  # 0.2 s (+0.1 s per second of audio: ~0)
    )
    try:
        started = time.perf_counter()
        first = asyncio.ensure_future(pool.final("a", _mark(1)))
        second = asyncio.ensure_future(pool.final("b", _mark(2)))
        results = await asyncio.wait_for(asyncio.gather(first, second), 2)
        took = time.perf_counter() - started
        assert [(r.text, r.cut) for r in results] == [("", "deadline")] * 2
        assert 0.4 <= took < 1.0, f"two budgets of 0.2 s took {took:.2f}s"
        assert log == ["aborted 1", "aborted 2"]
        assert [(s.kind, s.cut) for s in stats] == [("final", "deadline")] * 2
        assert stats[1].waited_s >= 0.2, "the second waited for the first one's budget"
        release.set()
        assert (await pool.final("c", _mark(3))).text == "3", "the worker is free again"
    finally:
        release.set()
        pool.close()


def test_deadline_budget_grows_with_the_audio_and_the_typical_decode() -> None:
    assert Deadline(2.0, 0.1).budget_s(10.0) == pytest.approx(3.0)
    assert Deadline(2.0, 0.1, factor=3).budget_s(1.0, typical_s=0.3) == pytest.approx(2.1)
    assert Deadline(2.0, 0.1, factor=3).budget_s(1.0, typical_s=1.5) == pytest.approx(4.5)
    assert Deadline(0, 0.1).budget_s(10.0, 5.0) == float("inf")


def test_whisper_cpp_stops_when_asked_mid_decode(
    converted: ConversionResult, phone_audio: list[tuple[str, Audio]]
) -> None:
    """A real decode whose abort check turns true part-way (as at the pool's deadline) stops
    at the next check whisper.cpp makes: after the encoder, before the words."""
    recognizer = WhisperCppRecognizer(converted.path)
    audio = np.concatenate([a for _, a in phone_audio])  # ~20 s: a full-window decode
    checks = 0

    def after_first_check() -> bool:
        nonlocal checks
        checks += 1
        return checks > 1

    with pytest.raises(Aborted):
        recognizer.transcribe(audio, after_first_check)
    assert checks == 2, "stopped at the first check that asked"
    assert recognizer.transcribe(audio).text, "the next decode runs normally"


def test_whisper_cpp_loop_is_written_once(converted: ConversionResult, voice: PiperVoice) -> None:
    """whisper.cpp loops on "Bye." when its window holds no silence after the speech
    ("Bye. Bye. Bye. ..." up to the token cap); the guard keeps one "Bye."."""
    quiet = SynthesisConfig(noise_scale=0, noise_w_scale=0)
    recognizer = WhisperCppRecognizer(converted.path, min_audio_ctx=256, ctx_margin=0)
    audio = pcm16_to_float32(phone_speech(voice, "Bye.", quiet).tobytes())
    result = recognizer.transcribe(audio)
    assert result.cut == "repetition", result
    assert result.text.strip(".").lower() == "bye", result


class _Threads:
    """Records the compute threads each decode was given; works until released."""

    name = "threads"

    def __init__(self, release: threading.Event, seen: list[tuple[float, int | None]]) -> None:
        self.release = release
        self.seen = seen

    def warm_up(self) -> None:
        pass

    def transcribe(
        self, audio: Audio, abort: AbortCheck | None = None, options: DecodeOptions | None = None
    ) -> Transcription:
        self.seen.append((float(audio[0]), options.threads if options else None))
        self.release.wait(5)
        return Transcription("", 1.0, 0.0)


async def test_running_decodes_share_the_pools_threads() -> None:
    release, seen = threading.Event(), list[tuple[float, int | None]]()
    pool = RecognitionPool(lambda: _Threads(release, seen), workers=2, shared_threads=2)
    try:
        first = asyncio.ensure_future(pool.final("a", _mark(1)))
        await eventually(lambda: len(seen) == 1, 5, "decode 1 started")
        second = asyncio.ensure_future(pool.final("b", _mark(2)))
        await eventually(lambda: len(seen) == 2, 5, "decode 2 started")
        release.set()
        await first, await second
        # A worker hands back the result before it leaves the running set: wait for both.
        await eventually(lambda: pool.busy_workers == 0, 5, "both workers idle")
        release.clear()
        third = asyncio.ensure_future(pool.final("c", _mark(3)))
        await eventually(lambda: len(seen) == 3, 5, "decode 3 started")
        release.set()
        await third
        # Alone: both threads; beside a running decode: one; alone again: both.
        assert seen == [(1.0, 2), (2.0, 1), (3.0, 2)]
    finally:
        release.set()
        pool.close()
    unshared = RecognitionPool(lambda: _Threads(release, seen), workers=1)
    try:
        await unshared.final("d", _mark(4))
        assert seen[-1] == (4.0, None), "not shared: the recogniser's own threads"
    finally:
        unshared.close()
    with pytest.raises(ValueError, match="shared_threads"):
        RecognitionPool(lambda: _Threads(release, seen), shared_threads=-1)


def test_whisper_cpp_decodes_with_the_threads_it_is_given(
    converted: ConversionResult, voice: PiperVoice
) -> None:
    recognizer = WhisperCppRecognizer(converted.path, n_threads=2)
    audio = phone_speech(voice, "I would like to check the status of my order.")
    one = recognizer.transcribe(pcm16_to_float32(audio.tobytes()), options=DecodeOptions(threads=1))
    assert "status of my order" in one.text.lower(), one.text
    assert recognizer._model._params.n_threads == 1
    both = recognizer.transcribe(pcm16_to_float32(audio.tobytes()))
    assert recognizer._model._params.n_threads == 2, "its own threads again"
    assert both.text == one.text
