"""Whether what the caller heard says an expected phrase, allowing for the caller's own ears.

The caller hears the bot through whisper.cpp (tiny.en) over G.711, and tiny.en mishears a word
of a phrase now and then even when the bot said it clearly: over 480 renderings of 16 of our
prompts it wrote "opening nowers" for "opening hours", "look up porter" / "quarter" for "look
up order", "Monday, the Friday" for "Monday to Friday" (docs/decisions/2026-12-04-caller-expect-
matching.md has the figures). Compared word for word, every ``expect`` failed a few times in a
hundred on audio that was right.

So a phrase matches when a stretch of the transcript *sounds* like it, the way commercial IVR
prompt checks match within a tolerance: both are phonemized with espeak-ng (the phonemizer Piper
ships), and the stretch of whole words whose phonemes are closest to the phrase's (Levenshtein
over phoneme symbols, :mod:`rapidfuzz`) must be at least :data:`DEFAULT_THRESHOLD` alike, with at
least half the phonemes of each of the phrase's words (but the shortest) in place: a misheard
word is forgiven, a missing or different one is not.
Numbers are never approximate: a run of digits or digit words (``4 8 2 1 3``, ``four eight two
one three``, ``482-13``) is one symbol that only the same digits equal, and each of the phrase's
numbers must be in the stretch; so must its negations (``not``, ``never``, ``don't``...) and no
others, so "has shipped" never matches "has not shipped". An exact word-for-word occurrence is
a match without phonemizing anything.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Final

from rapidfuzz.distance import Levenshtein, Opcodes

DEFAULT_THRESHOLD: Final = 0.7
"""Least phoneme similarity of a match (see the decision note for how it was chosen)."""

MIN_CHECKED_PHONEMES: Final = 3
"""Words this long or longer must be heard (half their phonemes in place) for a match."""
_DIGIT_WORDS: Final = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
_NEGATION_LIST: Final = (
    "not no never nothing nobody none nowhere cannot can't won't don't doesn't didn't isn't "
    "aren't wasn't weren't couldn't wouldn't shouldn't haven't hasn't hadn't"
)
NEGATIONS: Final = frozenset(_NEGATION_LIST.split())
"""Words that turn a sentence around: a stretch must have the same ones as the phrase."""
_DROP: Final = frozenset("ˈˌː' .,;:!?-\u2014\u2013\u0303")
"""Stress and length marks, spaces and punctuation: not what makes two words sound apart."""
if TYPE_CHECKING:
    from piper.phonemize_espeak import EspeakPhonemizer

_ESPEAK_VOICE: Final = "en-us"
_espeak_lock = threading.Lock()


@dataclass(frozen=True)
class PhraseMatch:
    """How close the closest stretch of a transcript comes to a phrase."""

    matched: bool
    similarity: float
    """1.0 for an exact occurrence; otherwise the phoneme similarity of :attr:`stretch`."""
    stretch: str
    """The transcript's words that came closest (empty when none could, e.g. a missing
    number)."""

    def describe(self) -> str:
        if self.matched or not self.stretch:
            return ""
        return f"closest: {self.stretch!r}, {self.similarity:.0%} alike"


def words(text: str) -> list[str]:
    """``text`` as lowercase words, each run of digits and digit words as one ``#digits``
    word (``"order 4 8, two"`` -> ``["order", "#482"]``)."""
    out: list[str] = []
    for raw in re.findall(r"[a-z0-9']+", text.lower().replace("\u2019", "'")):
        word = raw.strip("'")
        if not word:
            continue
        digits = _DIGIT_WORDS.get(word, word)
        if digits.isdigit():
            if out and out[-1].startswith("#"):
                out[-1] += digits
            else:
                out.append("#" + digits)
        else:
            out.append(word)
    return out


@lru_cache(maxsize=4096)
def phonemes(word: str) -> tuple[str, ...]:
    """The phoneme symbols of one word from :func:`words` (a number is one symbol)."""
    if word.startswith("#"):
        return (word,)
    with _espeak_lock:  # espeak-ng keeps its voice in global state
        sentences = _espeak().phonemize(_ESPEAK_VOICE, word)
    symbols = (unicodedata.normalize("NFC", "".join(s)) for s in sentences)
    return tuple(c for s in symbols for c in s if c not in _DROP)


@lru_cache(maxsize=1)
def _espeak() -> EspeakPhonemizer:
    from piper.phonemize_espeak import EspeakPhonemizer

    return EspeakPhonemizer()


def says(heard: str, phrase: str, threshold: float = DEFAULT_THRESHOLD) -> PhraseMatch:
    """Whether ``heard`` (a transcript) says ``phrase``; see the module documentation."""
    want, got = words(phrase), words(heard)
    if not want:
        return PhraseMatch(True, 1.0, "")
    n = len(want)
    for i in range(len(got) - n + 1):
        if got[i : i + n] == want:
            return PhraseMatch(True, 1.0, " ".join(want))
    numbers = [w for w in want if w.startswith("#")]
    negations = sorted(w for w in want if w in NEGATIONS)
    spoken = [phonemes(w) for w in want]
    target = [p for symbols in spoken for p in symbols]
    owner = [i for i, symbols in enumerate(spoken) for _ in symbols]
    best = PhraseMatch(False, 0.0, "")
    # Stretches of whole words, up to two words shorter or longer than the phrase (a word
    # heard as two, two as one, a short word lost).
    for size in range(max(1, n - 2), n + 3):
        for i in range(len(got) - size + 1):
            stretch = got[i : i + size]
            if any(number not in stretch for number in numbers):
                continue
            if sorted(w for w in stretch if w in NEGATIONS) != negations:
                continue
            candidate = [p for w in stretch for p in phonemes(w)]
            similarity = Levenshtein.normalized_similarity(target, candidate)
            if similarity <= best.similarity:
                continue
            matched = similarity >= threshold and _every_word_heard(
                spoken, owner, Levenshtein.opcodes(target, candidate)
            )
            shown = " ".join(w.removeprefix("#") for w in stretch)
            best = PhraseMatch(matched, similarity, shown)
    return best


def _every_word_heard(spoken: list[tuple[str, ...]], owner: list[int], opcodes: Opcodes) -> bool:
    """Whether at least half the phonemes of each of the phrase's words of
    :data:`MIN_CHECKED_PHONEMES` or more are in the stretch, aligned: a phrase must not match a
    stretch that lacks one of its words ("your order has shipped" in "your order has been
    cancelled" is 79 % alike by phonemes alone). Shorter words ("to", "a", "up") are free."""
    kept = [0] * len(spoken)
    for op in opcodes:
        if op.tag == "equal":
            for position in range(op.src_start, op.src_end):
                kept[owner[position]] += 1
    return all(
        2 * kept[i] >= len(symbols)
        for i, symbols in enumerate(spoken)
        if len(symbols) >= MIN_CHECKED_PHONEMES
    )


__all__ = ["DEFAULT_THRESHOLD", "PhraseMatch", "phonemes", "says", "words"]
