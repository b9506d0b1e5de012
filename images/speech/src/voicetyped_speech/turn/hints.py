"""What the transcript so far says about the end of the turn, given what the state expects.

A pure function of the text of the turn up to the pause (the speculative final) and the
dialog state's :class:`~voicetyped.recognition.RecognitionContext`:

- **continues** when the words end mid-phrase (an article, a preposition, a conjunction, a
  possessive, a filler such as "um": "my order number is", "twelve Oak Street and"), when
  Whisper marks the text as trailing off ("...", a comma, a dash), or when the state collects
  digits and the caller has begun but said fewer than it needs ("four eight" of five);
- **complete** when the state expects yes/no and the turn is a yes/no answer, or a choice and
  the turn names one (and does not end mid-phrase);
- **sentence** when none of that applies and Whisper closed the words as a sentence (".",
  "?", "!"): Whisper's punctuation is its own reading of the audio and the words, so the turn
  model then only has to not object (a lower bar, :func:`.decision.decide`);
- **unknown** otherwise: the turn model decides.

The word lists are English (the readings of other languages: unknown, so the model decides).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from voicetyped.recognition import NO_WORDS, YES_WORDS, Expect, RecognitionContext


class Hint(StrEnum):
    CONTINUES = "continues"
    COMPLETE = "complete"
    SENTENCE = "sentence"
    """Nothing in the state's expectation, but Whisper ended the words as a sentence."""
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class TextHint:
    hint: Hint
    reason: str = ""


UNKNOWN = TextHint(Hint.UNKNOWN)

# Words a phrase does not end on. Left out on purpose: words that often end a complete answer
# ("it is", "that's all", "I think so", "no thanks", "me too", "not yet").
_OPEN_ENDS = frozenset(
    " ".join(
        (
            "a an the my your his her our their its this these those that's",
            "and or but nor because so if then than when while whereas although though",
            "of to in on at for with from by about into onto over under between after before",
            "via per like as",
            "um uh er erm ah hmm mm eh",
            "is are was were am be been being",
            "i i'm we we're you you're they they're he she it's there's",
        )
    ).split(" ")
)
_TRAILING = re.compile(r"(?:\.\.\.|\u2026|,|-|\u2014|\u2013)\s*$")  # ... , - and dashes
_SENTENCE = re.compile(r"[.?!]\s*$")
_WORD = re.compile(r"[a-z0-9']+")
_DIGIT_WORDS = {
    "zero": 1, "oh": 1, "o": 1, "one": 1, "two": 1, "three": 1, "four": 1, "five": 1,
    "six": 1, "seven": 1, "eight": 1, "nine": 1,
}  # fmt: skip
_REPEAT = {"double": 2, "triple": 3}
_YES_NO = YES_WORDS | NO_WORDS


def count_digits(text: str) -> int:
    """Digits said in ``text``: figures and digit words ("double five" is two)."""
    n = 0
    repeat = 1
    for word in _WORD.findall(text.lower()):
        if word in _REPEAT:
            repeat = _REPEAT[word]
            continue
        if word.isdigit():
            n += len(word) + (repeat - 1)
        elif word in _DIGIT_WORDS:
            n += repeat
        repeat = 1
    return n


def read(text: str, context: RecognitionContext | None, english: bool = True) -> TextHint:
    """The hint for ``text``, the turn so far (see the module doc)."""
    stripped = text.strip()
    if not stripped:
        return UNKNOWN
    words = _WORD.findall(stripped.lower())
    if english and _TRAILING.search(stripped) and not stripped.endswith(("?", "!")):
        return TextHint(Hint.CONTINUES, "trails off")
    if english and words and words[-1] in _OPEN_ENDS:
        return TextHint(Hint.CONTINUES, f"ends on {words[-1]!r}")
    sentence = TextHint(Hint.SENTENCE, "a sentence") if _SENTENCE.search(stripped) else UNKNOWN
    if context is None:
        return sentence
    if context.expect == Expect.DIGITS:
        needed = context.min_digits or context.max_digits
        said = count_digits(stripped)
        # Only once digits have begun: a state that also takes other answers ("I don't know
        # it", "agent") must not make every non-digit turn wait for max_ms.
        if needed and 0 < said < needed:
            return TextHint(Hint.CONTINUES, f"{said} of {needed} digits")
        if needed and said >= needed:
            return TextHint(Hint.COMPLETE, f"{said} digits")
    yes_no = english and context.expect == Expect.YES_NO
    if yes_no and words and words[0] in _YES_NO and len(words) <= 4:
        return TextHint(Hint.COMPLETE, "a yes/no answer")
    if context.expect == Expect.CHOICE and len(words) <= 6:
        phrase = " ".join(words)
        for choice in context.choices:
            if f" {' '.join(_WORD.findall(choice.lower()))} " in f" {phrase} ":
                return TextHint(Hint.COMPLETE, f"names the choice {choice!r}")
    return sentence
