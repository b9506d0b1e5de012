"""Audio and scoring helpers for tests and benchmarks of the speech gateway.

- the telephone path: 16 kHz -> 8 kHz -> G.711 mu-law -> 8 kHz -> 16 kHz, as a call leg through
  the media gateway (G.711 here is the ITU reference / audioop bit-exact version in numpy);
- Piper speech at 16 kHz;
- word error rate with the normalisation Whisper's output needs (digits, contractions);
  :class:`Score` adds it up over many utterances.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
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
_ORDINALS = {"ninth": "9th"}  # the one ordinal word the normaliser leaves (it knows "nineth")
_normalizer: Any = None
_basic_normalizer: Any = None


def words(text: str, language: str = "en") -> list[str]:
    """Words for WER: Whisper's own English normaliser (the one its WER figures use:
    contractions, spellings, "forty-two" -> "42", fillers dropped), then every digit spelled
    ("12" and "one two" both read "one two"; Whisper groups spoken digits as it likes)
    and "ninth" as "9th" (it converts every other ordinal), "good bye" as "goodbye". Other
    languages: Whisper's basic normaliser (lower case, punctuation and symbols out, diacritics
    kept)."""
    global _normalizer, _basic_normalizer
    if language != "en":
        if _basic_normalizer is None:
            basic: Any = importlib.import_module("whisper_normalizer.basic")
            _basic_normalizer = basic.BasicTextNormalizer()
        return str(_basic_normalizer(text)).split()
    if _normalizer is None:
        english: Any = importlib.import_module("whisper_normalizer.english")
        _normalizer = english.EnglishTextNormalizer()
    out: list[str] = []
    for word in str(_normalizer(text)).replace("good bye", "goodbye").split():
        word = _ORDINALS.get(word, word)
        if word.isdigit():
            out.extend(_DIGITS[int(d)] for d in word)
        elif any(c.isalnum() for c in word):  # it keeps the dots of "so..." (for "3.5")
            out.append(word)
    return out


def word_errors(reference: str, hypothesis: str, language: str = "en") -> tuple[int, int]:
    """(word edit distance, reference word count)."""
    r, h = words(reference, language), words(hypothesis, language)
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, row[0] = row[0], i
        for j, hw in enumerate(h, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (rw != hw))
    return row[len(h)], len(r)


@dataclass
class Score:
    """Word errors added up over utterances (WER = edit distance / reference words)."""

    errors: int = 0
    words: int = 0
    utterances: int = 0
    wrong: int = 0
    """Utterances with at least one word error."""

    def add(self, reference: str, hypothesis: str) -> int:
        """Count one utterance; returns its word errors."""
        errors, n = word_errors(reference, hypothesis)
        self.errors += errors
        self.words += n
        self.utterances += 1
        self.wrong += errors > 0
        return errors

    @property
    def wer(self) -> float:
        return self.errors / self.words if self.words else 0.0

    def summary(self) -> dict[str, float | int]:
        return {
            "wer": round(self.wer, 4),
            "errors": self.errors,
            "words": self.words,
            "utterances": self.utterances,
            "wrong_utterances": self.wrong,
        }
