"""Cut Piper's phonemized sentences into bounded synthesis units.

Piper synthesizes one sentence per ONNX run, and a run cannot be interrupted: a 14 s sentence
keeps a worker busy for about a second, even when the caller barged in long ago. Sentences longer
than ``max_phonemes`` (Piper speaks ~20 phonemes per second, so 100 is ~5 s of audio and ~0.35 s
of compute on one core) are cut, preferably after clause punctuation (``, ; :``), else between
words, into near-equal pieces. Short sentences, the usual prompt, are left whole: a cut costs a
little prosody (each piece is voiced as if it ended a phrase).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

DEFAULT_MAX_PHONEMES = 100
CLAUSE_PUNCTUATION = frozenset(",;:\u2014\u2013")
_SPACE = " "


def split_sentence(phonemes: Sequence[str], max_phonemes: int) -> list[list[str]]:
    """``phonemes`` (one sentence, as Piper's ``phonemize`` returns it) in pieces of at most
    ``max_phonemes``, cut at clause punctuation or spaces when possible."""
    if max_phonemes < 8:
        raise ValueError("max_phonemes must be at least 8")
    ph = list(phonemes)
    pieces: list[list[str]] = []
    start = 0
    while len(ph) - start > max_phonemes:
        remaining = len(ph) - start
        target = math.ceil(remaining / math.ceil(remaining / max_phonemes))
        lo, hi = start + max(1, max_phonemes // 3), start + max_phonemes
        clause = [i + 1 for i in range(lo, hi) if ph[i] in CLAUSE_PUNCTUATION]
        words = [i for i in range(lo, hi + 1) if ph[i] == _SPACE]
        if clause:
            end = min(clause, key=lambda i: abs(i - start - target))
        elif words:
            end = min(words, key=lambda i: abs(i - start - target))
        else:
            end = hi
        pieces.append(ph[start:end])
        start = end
        while start < len(ph) and ph[start] == _SPACE:
            start += 1
    pieces.append(ph[start:])
    return [p for p in pieces if any(x != _SPACE for x in p)]


def split_units(sentences: Sequence[Sequence[str]], max_phonemes: int) -> list[list[str]]:
    """Every non-empty sentence of ``sentences``, long ones cut by :func:`split_sentence`."""
    units: list[list[str]] = []
    for sentence in sentences:
        if sentence:
            units.extend(split_sentence(sentence, max_phonemes))
    return units
