"""A short first synthesis unit for text never synthesised before: fast first audio.

Piper voices one unit per ONNX run and nothing of it plays before the run ends, so the first
audio of a new reply waits for its whole first sentence (~0.2 s or more on one core for a
one-line backend answer). Cutting the first sentence after its opening phrase -- a few words --
lets that phrase play after a fraction of the time while the rest of the sentence is voiced
behind it (the worker is free again long before the phrase has been heard).

Where the cut goes (:func:`first_cut`, on the text, first sentence only)
    Candidate cuts lie between two words of the first sentence, with at least ``min_words``
    words before and ``min_rest_words`` words of the sentence after, and the opening at most
    ``max_words`` long. Best first: after clause punctuation (``, ; :`` and dashes), before a
    conjunction (``and``, ``but``, ``because``...), before a preposition, determiner or number
    (the start of a phrase); the earliest cut of the best kind wins. Never inside a number,
    ordinal, time, date or amount ("10:30 am", "March 3, 2026", "one hundred and five",
    "$42.50"): a cut between two such words (digits, number words, months, unit words) is not a
    candidate, nor one right after such a word unless punctuation ends it there. Words are never
    cut. A first sentence of ``max_words`` words or fewer is already a short unit and stays
    whole; a sentence without any candidate stays whole too.

Phonemes (:func:`cut_phonemes`)
    The whole text is phonemized once, as before; the opening is cut out of the *whole*
    sentence's phonemes when the opening phonemized alone is a prefix of them (espeak's stress
    and number reading then come from the whole sentence). Otherwise the opening and the rest
    are phonemized apart.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

CutKind = Literal["punctuation", "conjunction", "phrase"]

_CLAUSE_END: Final = frozenset(",;:\u2014\u2013")
_SENTENCE_END: Final = frozenset(".!?")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_DASHES: Final = frozenset({"-", "--", "\u2014", "\u2013"})
CONJUNCTIONS: Final = _words(
    "and but or so because while which who whose where when although though since unless "
    "until whereas then if"
)
PHRASE_STARTS: Final = _words(
    "to on at for with in from by about after before into through during within without "
    "between of until till under over around per "
    "the a an your my our their this that these those"
)
_NUMBER_WORDS: Final = _words(
    "zero oh one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
    "eighty ninety hundred thousand million billion point half quarter first second third "
    "fourth fifth sixth seventh eighth ninth tenth eleventh twelfth twentieth thirtieth "
    "double triple dozen"
)
_UNIT_WORDS: Final = _words(
    "am pm a.m. p.m. a.m p.m o'clock percent dollar dollars cent cents euro euros pound pounds "
    "minute minutes hour hours day days week weeks month months year years st nd rd th "
    "noon midnight"
)
_MONTHS: Final = _words(
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec"
)
_STRIP: Final = "\"'()[]{}\u201c\u201d\u2018\u2019"
_PUNCT_TAIL: Final = ",;:.!?\u2014\u2013"


@dataclass(frozen=True)
class FirstUnitPolicy:
    """Where a new reply's first unit may end (see the module documentation)."""

    max_words: int = 4
    """Longest opening voiced on its own; 0 turns the first-unit cut off."""
    min_words: int = 2
    min_rest_words: int = 3

    def __post_init__(self) -> None:
        if self.max_words < 0:
            raise ValueError("max_words must be >= 0 (0: off)")
        if self.min_words < 1 or self.min_rest_words < 1:
            raise ValueError("min_words and min_rest_words must be >= 1")

    @property
    def enabled(self) -> bool:
        return self.max_words >= self.min_words

    def settings(self) -> dict[str, int]:
        """What decides the cut: part of the prompt cache key."""
        if not self.enabled:
            return {"first_max_words": 0}
        return {
            "first_max_words": self.max_words,
            "first_min_words": self.min_words,
            "first_min_rest_words": self.min_rest_words,
        }


OFF: Final = FirstUnitPolicy(max_words=0)


@dataclass(frozen=True)
class Cut:
    offset: int
    """Where the rest starts in the text (after the opening's trailing spaces)."""
    head: str
    rest: str
    kind: CutKind


def _bare(token: str) -> str:
    return token.strip(_STRIP).rstrip(_PUNCT_TAIL).strip(_STRIP).lower()


def is_numeric(token: str) -> bool:
    """A digit, number word, ordinal, month or unit word: part of a number, time, date or
    amount that must be voiced in one piece."""
    bare = _bare(token)
    if any(c.isdigit() for c in bare):
        return True
    if bare in _UNIT_WORDS or bare in _MONTHS:
        return True
    parts = [p for p in re.split(r"[-\u2010]", bare) if p]  # "forty-two"
    return bool(parts) and all(p in _NUMBER_WORDS for p in parts)


def _ends_sentence(token: str) -> bool:
    core = token.rstrip(_STRIP)
    return bool(core) and core[-1] in _SENTENCE_END


def _ends_clause(token: str) -> bool:
    core = token.rstrip(_STRIP)
    return bool(core) and core[-1] in _CLAUSE_END


def first_cut(text: str, policy: FirstUnitPolicy) -> Cut | None:
    """Where to end the first unit of ``text``, or None to voice its first sentence whole."""
    if not policy.enabled:
        return None
    tokens = list(re.finditer(r"\S+", text))
    sentence: list[re.Match[str]] = []
    for m in tokens:
        sentence.append(m)
        if _ends_sentence(m.group()):
            break
    words = [m.group() for m in sentence if m.group() not in _DASHES]
    if len(words) <= policy.max_words:
        return None
    ranks: dict[CutKind, int] = {"punctuation": 0, "conjunction": 1, "phrase": 2}
    best: tuple[int, int, CutKind] | None = None  # (rank, last word of the opening, kind)
    count = 0
    for i in range(len(sentence) - 1):
        here, after = sentence[i].group(), sentence[i + 1].group()
        if here in _DASHES:
            continue
        count += 1
        rest = sum(1 for m in sentence[i + 1 :] if m.group() not in _DASHES)
        if count > policy.max_words:
            break
        if count < policy.min_words or rest < policy.min_rest_words:
            continue
        kind = _kind(here, after, sentence[i + 2].group() if i + 2 < len(sentence) else "")
        if kind is not None and (best is None or ranks[kind] < best[0]):
            best = (ranks[kind], i, kind)
    if best is None:
        return None
    _, i, kind = best
    if sentence[i + 1].group() in _DASHES:  # a spaced dash ends the opening
        i += 1
    end = sentence[i].end()
    offset = sentence[i + 1].start()
    return Cut(offset, text[:end], text[offset:], kind)


def _kind(here: str, after: str, then: str) -> CutKind | None:
    """The kind of cut between words ``here`` and ``after`` (``then`` follows), or None."""
    here_number, after_number = is_numeric(here), is_numeric(after)
    if here_number and after_number:  # inside "March 3, 2026", "ten thirty am"
        return None
    if _ends_clause(here) or after in _DASHES:
        return "punctuation"
    if here_number:  # "4 | at 3 pm" may still belong to the expression: only after punctuation
        return None
    if after_number:  # before a number, time, date or amount: "is | forty two dollars"
        if _bare(here) in PHRASE_STARTS or _bare(after) in _UNIT_WORDS:
            return None  # not "on | Monday 3rd", nor "every | day"
        return "phrase"
    word = _bare(after)
    if word in CONJUNCTIONS:
        if is_numeric(then):  # "two and three", "five or six"
            return None
        return "conjunction"
    if word in PHRASE_STARTS:
        return "phrase"
    return None


_PHONEME_PUNCT: Final = frozenset(",;:.!?\u2014\u2013")


def cut_phonemes(
    sentences: Sequence[Sequence[str]],
    cut: Cut,
    phonemize: Callable[[str], list[list[str]]],
) -> tuple[list[str], list[list[str]]] | None:
    """The first unit's phonemes and the rest's sentences, given the whole text's phonemized
    ``sentences``; the opening is taken from the whole first sentence when it aligns there,
    else both parts are phonemized apart. None when the opening is not one sentence."""
    head = phonemize(cut.head)
    if len(head) != 1 or not sentences:
        return None
    opening = list(head[0])
    while opening and (opening[-1] == " " or opening[-1] in _PHONEME_PUNCT):
        opening.pop()
    first = list(sentences[0])
    n = len(opening)
    if n and first[:n] == opening and n < len(first) and first[n] in _PHONEME_PUNCT | {" "}:
        end = n
        while end < len(first) and first[end] in _PHONEME_PUNCT:
            end += 1
        tail = first[end:]
        while tail and tail[0] == " ":
            tail.pop(0)
        if any(p != " " and p not in _PHONEME_PUNCT for p in tail):
            return first[:end], [tail, *map(list, sentences[1:])]
    rest = phonemize(cut.rest)
    return list(head[0]), rest


__all__ = [
    "CONJUNCTIONS",
    "OFF",
    "PHRASE_STARTS",
    "Cut",
    "CutKind",
    "FirstUnitPolicy",
    "cut_phonemes",
    "first_cut",
    "is_numeric",
]
