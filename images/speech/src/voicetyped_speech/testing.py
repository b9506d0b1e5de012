"""Audio and scoring helpers for tests and benchmarks of the speech gateway.

- the telephone path: 16 kHz -> 8 kHz -> G.711 mu-law -> 8 kHz -> 16 kHz, as a call leg through
  the media gateway (G.711 here is the ITU reference / audioop bit-exact version in numpy);
- Piper speech at 16 kHz;
- word error rate with the normalisation Whisper's output needs (digits, contractions).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from voicetyped_speech.models.verify import synthesize_16k

if TYPE_CHECKING:
    from piper import PiperVoice, SynthesisConfig

SAMPLE_RATE = 16000
Pcm = NDArray[np.int16]
Audio = NDArray[np.float32]


def resample(audio: NDArray[np.floating[Any]], rate_in: int, rate_out: int) -> Audio:
    soxr: Any = importlib.import_module("soxr")
    return np.asarray(soxr.resample(audio, rate_in, rate_out), dtype=np.float32)


def to_pcm(audio: NDArray[np.floating[Any]]) -> Pcm:
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


def ulaw_encode(pcm: Pcm) -> NDArray[np.uint8]:
    """G.711 mu-law, as the ITU reference and CPython's audioop (14-bit magnitude, bias 33)."""
    v = pcm.astype(np.int32) >> 2
    negative = v < 0
    magnitude = np.minimum(np.where(negative, -v, v), 8159) + 33
    segment = np.frexp(magnitude.astype(np.float64))[1] - 6  # floor(log2(magnitude)) - 5
    code = (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ np.where(negative, 0x7F, 0xFF)).astype(np.uint8)


def ulaw_decode(code: NDArray[np.uint8]) -> Pcm:
    u = ~code.astype(np.int32) & 0xFF
    magnitude = ((((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def telephone(pcm: Pcm) -> Pcm:
    """16 kHz -> 8 kHz -> mu-law -> back -> 16 kHz, like a G.711 call leg (same length)."""
    narrow = to_pcm(resample(pcm.astype(np.float32) / 32768, SAMPLE_RATE, 8000))
    decoded = ulaw_decode(ulaw_encode(narrow)).astype(np.float32) / 32768
    wide = to_pcm(resample(decoded, 8000, SAMPLE_RATE))
    out = np.zeros_like(pcm)
    out[: min(len(wide), len(pcm))] = wide[: len(pcm)]
    return out


def phone_speech(voice: PiperVoice, text: str, config: SynthesisConfig | None = None) -> Pcm:
    """``text`` spoken by Piper, as the speech gateway receives it from a G.711 call."""
    return telephone(to_pcm(synthesize_16k(voice, text, config)))


def silence(ms: int) -> Pcm:
    return np.zeros(ms * SAMPLE_RATE // 1000, dtype=np.int16)


_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_CONTRACTIONS = {
    "there's": "there is",
    "it's": "it is",
    "that's": "that is",
    "don't": "do not",
    "i'm": "i am",
    "can't": "can not",
    "cannot": "can not",
}


def words(text: str) -> list[str]:
    """Words for WER, normalised the way Whisper writes (digits spelled, contractions split)."""
    out: list[str] = []
    for raw in text.lower().replace("\u2019", "'").split():
        word = raw.strip('.,?!;:"')
        for piece in _CONTRACTIONS.get(word, word).split():
            # Whisper groups spoken digits as it likes ("482-13", "4,821"): spell each digit.
            if piece and piece.replace("-", "").replace(",", "").isdigit():
                piece = piece.replace("-", "").replace(",", "")
            if piece.isdigit():
                out.extend(_DIGITS[int(d)] for d in piece)
            elif piece:
                out.append("".join(c for c in piece if c.isalnum()))
    return [w for w in out if w]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edit distance, reference word count)."""
    r, h = words(reference), words(hypothesis)
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, row[0] = row[0], i
        for j, hw in enumerate(h, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (rw != hw))
    return row[len(h)], len(r)
