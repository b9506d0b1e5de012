"""The caller's ``expect``: a phrase matches what its recogniser heard when a stretch of it sounds
like the phrase (voicetyped_dev.caller.match), with numbers and negations exact.

The mishearings below are real: whisper.cpp tiny.en on the bot's Piper voice through G.711, in
CI and in the measurement of docs/decisions/2026-12-04-caller-expect-matching.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from voicetyped_dev.caller.match import DEFAULT_THRESHOLD, says, words

HEARD = json.loads((Path(__file__).parent / "data" / "tiny_en_heard.json").read_text())["heard"]

MISHEARD = [
    ("Hello, this is the city library. Would you like our opening nowers?", "opening hours"),
    ("Hello, this is the city library. Would you like our opening now?", "opening hours"),
    ("One moment while I look up Porter 48213. Good news.", "look up order"),
    ("One moment while I look up Horter 48213.", "look up order 4 8 2 1 3"),
    ("We are open Monday, the Friday from 9 to 6. Goodbye.", "Monday to Friday"),
    ("We are open Monday. The Friday from nine to six.", "monday to friday from 9 to 6"),
    ("You can save our key in your order number", "say or key in your order number"),
]


@pytest.mark.parametrize(("heard", "phrase"), MISHEARD)
def test_a_word_misheard_by_the_caller_is_not_a_failure(heard: str, phrase: str) -> None:
    match = says(heard, phrase)
    assert match.matched, match
    assert DEFAULT_THRESHOLD <= match.similarity < 1.0


DIFFERENT = [
    ("Sorry, please say yes or no.", "opening hours"),
    ("Sorry, all our agents are busy right now.", "connecting you"),
    ("Order 48214 has shipped.", "order 4 8 2 1 3"),
    ("Order 48213 has not shipped.", "has shipped"),
    ("Your order has not shipped yet.", "your order has shipped"),
    ("Your order has shipped.", "your order has not shipped"),
    ("Press 2 to cancel it.", "press 1"),
    ("Your appointment has been cancelled.", "has shipped"),
    ("Thanks for calling. Goodbye!", "look up order"),
    ("", "thanks for calling"),
]


@pytest.mark.parametrize(("heard", "phrase"), DIFFERENT)
def test_something_else_said_is_a_failure(heard: str, phrase: str) -> None:
    match = says(heard, phrase)
    assert not match.matched, match


def test_an_exact_occurrence_needs_no_phonemes() -> None:
    match = says("Good news: Order 48213 has shipped!", "order four eight two one three")
    assert match.matched and match.similarity == 1.0
    assert match.describe() == ""


def test_a_failure_names_the_closest_stretch() -> None:
    match = says("Would you like our opening days?", "opening hours")
    assert not match.matched
    assert match.stretch == "opening days"
    assert match.describe() == f"closest: 'opening days', {match.similarity:.0%} alike"


@pytest.mark.parametrize(
    "heard",
    ["look up order 4821 3.", "look up order 482-13.", "look up order four eight two one three"],
)
def test_a_number_is_its_digits_however_written(heard: str) -> None:
    assert says(heard, "look up order 4 8 2 1 3").similarity == 1.0


def test_digits_and_digit_words_are_one_number() -> None:
    assert words("Order 4 8, two one-3 is late") == ["order", "#48213", "is", "late"]
    assert words("I couldn\u2019t find it") == ["i", "couldn't", "find", "it"]


def _phrases(text: str) -> list[str]:
    """Every run of 2-4 words of ``text`` (a number is one word)."""
    ws = [" ".join(w[1:]) if w.startswith("#") else w for w in words(text)]
    return sorted({" ".join(ws[i : i + n]) for n in (2, 3, 4) for i in range(len(ws) - n + 1)})


def test_recorded_transcripts_match_their_prompts_and_not_the_others() -> None:
    """Over what the recogniser really wrote: every phrase of a prompt without a number (whose
    digits the recogniser does get wrong: "9999999" for five nines) is found in almost every
    transcript of it, and almost never in another prompt's (those near misses share words)."""
    misses = exact_misses = found_elsewhere = positives = negatives = 0
    for prompt, transcripts in HEARD.items():
        for phrase in _phrases(prompt):
            if any(c.isdigit() for c in phrase):
                continue
            for heard in transcripts:
                positives += 1
                misses += not says(heard, phrase).matched
                exact_misses += " ".join(words(phrase)) not in " ".join(words(heard))
            for other, theirs in HEARD.items():
                if other == prompt or " ".join(words(phrase)) in " ".join(words(other)):
                    continue
                negatives += 1
                found_elsewhere += says(theirs[0], phrase).matched
    assert positives > 2000 and negatives > 4000
    assert misses / positives < 0.01, (misses, positives)
    assert misses < exact_misses / 4, (misses, exact_misses)
    assert found_elsewhere / negatives < 0.01, (found_elsewhere, negatives)
