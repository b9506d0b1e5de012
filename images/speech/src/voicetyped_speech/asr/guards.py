"""Bounds on one decode by the audio it covers: how many tokens it may write and what text of
it is kept.

Whisper decoders sometimes loop: the same words again and again until something stops them
("Bye. Bye. Bye. ..." for "Goodbye."), mostly on unclear telephone audio. Whisper's own remedy,
the temperature fallback (decode again hotter, 5 candidates per temperature, up to 5 more
temperatures), costs 5-25 decodes: 3-15 s on 2 cores for a phrase that normally takes 0.3 s.
The backends allow two retries (:data:`FALLBACK_TEMPERATURE`), the pool's deadline bounds
their time, and the decode is bounded here:

- **tokens**: at most ``16 + 8`` per started second of audio (normal speech writes about 4 per
  second, timestamps and punctuation included), so a loop ends after a bounded number of steps;
- **text**: a transcript longer than the audio can hold (more than :data:`WORDS_PER_S` words per
  second, plus a few), more compressible than Whisper's own threshold (zlib ratio > 2.4), or
  with a group of words said :data:`LOOP_REPEATS` times in a row (a sentence: twice) is a
  loop or a hallucination: each run of repeated word groups is written once, and what is
  still too long is cut to the words the audio can hold.

Anything else is never touched, repeated words included ("no, no, no", "bye bye"); digits
may repeat any number of times ("1 1 1 1" is a number, not a loop).
Hand-written: Whisper's compression check only triggers a re-decode, and no library offers
the repair.
"""

from __future__ import annotations

import math
import re
import zlib
from typing import Literal

SAMPLE_RATE = 16_000
FALLBACK_TEMPERATURE = 0.4
"""When a greedy decode fails Whisper's own checks, retry at each multiple of this up to 1.0
(0.4, 0.8: two retries; 0: none). With none, Whisper base heard espeak's Spanish at WER 82 %,
with one (0.6) its words were still missed ("muchas curáteas"), with two as well as with
Whisper's five (0.2 steps). The deadline bounds what the retries cost."""


def fallback_temperatures(step: float = FALLBACK_TEMPERATURE) -> tuple[float, ...]:
    """The temperatures a decode may run at: 0, then each multiple of ``step`` up to 1.0 (as
    whisper.cpp steps them)."""
    if step <= 0:
        return (0.0,)
    return tuple(round(i * step, 4) for i in range(int(1.0 / step + 1e-6) + 1))


WORDS_PER_S = 5.0
"""Faster than people speak on the phone (call-style phrases: 2.5-3.5 words per second)."""
SPARE_WORDS = 3
COMPRESSION_RATIO = 2.4
"""Whisper's compression_ratio_threshold: text more repetitive than this is a loop."""
_COMPRESSION_MIN_CHARS = 40  # shorter texts do not compress (zlib's own overhead)
_MAX_UNIT = 16  # words in the longest repeated group looked for
LOOP_REPEATS = 4
"""A group of words said this many times in a row is a loop, however short the text."""
SENTENCE_REPEATS = 2
"""A sentence of two or more words written this many times in a row is a loop (a biased decode
wrote "Where is my order. Where is my order. Where is my order." for "where is my order");
a stutter ("I want to, I want to") is not a sentence."""
_SENTENCE_ENDS = (".", "?", "!")

Cut = Literal["", "repetition", "length"]


def max_tokens(n_samples: int) -> int:
    """The token cap of a decode of ``n_samples`` of 16 kHz audio."""
    return 16 + 8 * math.ceil(n_samples / SAMPLE_RATE)


def max_words(n_samples: int) -> int:
    """The most words ``n_samples`` of speech can plausibly hold."""
    return SPARE_WORDS + math.ceil(WORDS_PER_S * n_samples / SAMPLE_RATE)


def compression_ratio(text: str) -> float:
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _key(word: str) -> str:
    return re.sub(r"\W+", "", word.lower())


def _runs(keys: list[str]) -> list[tuple[int, int, int]]:
    """``(start, unit, end)`` of each run of two or more repeats of a group of 1-16 words,
    left to right, the shortest group first (so "bye bye bye bye" is a run of "bye", not of
    "bye bye"). A repeat the token cap cut short at the very end belongs to its run."""
    runs = []
    i = 0
    while i < len(keys):
        end = i + 1
        for unit in range(1, min(_MAX_UNIT, (len(keys) - i) // 2) + 1):
            group = keys[i : i + unit]
            repeats = 1
            while keys[i + repeats * unit : i + (repeats + 1) * unit] == group:
                repeats += 1
            if repeats >= 2:
                end = i + repeats * unit
                rest = keys[end:]
                if len(rest) < unit and rest == group[: len(rest)]:
                    end = len(keys)
                runs.append((i, unit, end))
                break
        i = end
    return runs


def _word_runs(keys: list[str]) -> list[tuple[int, int, int]]:
    """The runs of groups with a word in them (digits repeat in numbers)."""
    return [r for r in _runs(keys) if not all(k.isdigit() for k in keys[r[0] : r[0] + r[1]])]


def _loops(words: list[str]) -> bool:
    for start, unit, end in _word_runs([_key(w) for w in words]):
        sentence = unit >= 2 and words[start + unit - 1].endswith(_SENTENCE_ENDS)
        if (end - start) // unit >= (SENTENCE_REPEATS if sentence else LOOP_REPEATS):
            return True
    return False


def _collapse(words: list[str]) -> list[str]:
    """``words`` with each run of word groups written once."""
    out: list[str] = []
    i = 0
    for start, unit, end in _word_runs([_key(w) for w in words]):
        out += words[i : start + unit]
        i = end
    return out + words[i:]


def bound_text(text: str, n_samples: int) -> tuple[str, Cut]:
    """``text`` as kept for ``n_samples`` of audio, and what was cut from it ("" if nothing)."""
    words = text.split()
    limit = max_words(n_samples)
    compressible = (
        len(text) >= _COMPRESSION_MIN_CHARS and compression_ratio(text) > COMPRESSION_RATIO
    )
    if len(words) <= limit and not compressible and not _loops(words):
        return text, ""
    collapsed = _collapse(words)
    cut: Cut = "repetition" if len(collapsed) < len(words) else "length"
    if len(collapsed) > limit:
        collapsed = collapsed[:limit]
    elif len(collapsed) == len(words):
        cut = ""  # compressible, but nothing repeats in a row: kept
    return " ".join(collapsed), cut
