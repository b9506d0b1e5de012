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
import soxr
from piper import SynthesisConfig
from voicetyped_speech.asr.base import Audio, Transcription
from voicetyped_speech.asr.fasterwhisper import FasterWhisperRecognizer
from voicetyped_speech.asr.pool import Overloaded, RecognitionPool
from voicetyped_speech.asr.whispercpp import WhisperCppRecognizer

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


_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_CONTRACTIONS = {"there's": "there is", "it's": "it is", "that's": "that is", "don't": "do not"}


def _words(text: str) -> list[str]:
    """Words for WER, normalised the way Whisper writes (digits, contractions)."""
    out: list[str] = []
    for raw in text.lower().split():
        word = raw.strip('.,?!;:"')
        for piece in _CONTRACTIONS.get(word, word).split():
            if piece.isdigit():
                out.extend(_DIGITS[int(d)] for d in piece)
            elif piece:
                out.append("".join(c for c in piece if c.isalnum()))
    return [w for w in out if w]


def _wer(ref: str, hyp: str) -> tuple[int, int]:
    r, h = _words(ref), _words(hyp)
    d = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, d[0] = d[0], i
        for j, hw in enumerate(h, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (rw != hw))
    return d[len(h)], len(r)


def _mulaw_round_trip(audio16k: Audio) -> Audio:
    """16 kHz -> 8 kHz G.711 mu-law -> 16 kHz, as the media gateway's path does."""
    x = np.clip(soxr.resample(audio16k, 16000, 8000), -1, 1)
    mu = 255.0
    encoded = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    quantized = np.round((encoded + 1) / 2 * 255) / 255 * 2 - 1  # 8-bit code
    decoded = np.sign(quantized) * ((1 + mu) ** np.abs(quantized) - 1) / mu
    return np.asarray(soxr.resample(decoded.astype(np.float32), 8000, 16000), dtype=np.float32)


@pytest.fixture(scope="module")
def phone_audio(voice: PiperVoice) -> list[tuple[str, Audio]]:
    quiet = SynthesisConfig(noise_scale=0, noise_w_scale=0)
    out = []
    for text in PHRASES:
        pcm = b"".join(c.audio_int16_bytes for c in voice.synthesize(text, syn_config=quiet))
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
        audio16 = np.asarray(soxr.resample(audio, 22050, 16000), dtype=np.float32)
        out.append((text, _mulaw_round_trip(audio16)))
    return out


def _check_wer(transcribe: object, phone_audio: list[tuple[str, Audio]]) -> float:
    errors = total = 0
    for text, audio in phone_audio:
        result = transcribe(audio)  # type: ignore[operator]
        assert isinstance(result, Transcription)
        assert 0 <= result.confidence <= 1
        e, n = _wer(text, result.text)
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

    def transcribe(self, audio: Audio) -> Transcription:
        self.gate.wait(5)
        self.log.append(f"{audio[0]:.0f}")
        return Transcription(f"{audio[0]:.0f}", 1.0, 0.0)


def _mark(n: int) -> Audio:
    return np.full(4, n, dtype=np.float32)


async def test_pool_order_fairness_and_partials() -> None:
    log: list[str] = []
    gate = threading.Event()
    pool = RecognitionPool(lambda: _Slow(log, gate), workers=1)
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
