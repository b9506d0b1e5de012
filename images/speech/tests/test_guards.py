"""Decode bounds: the token cap and what text of a decode is kept for the audio it covers."""

from __future__ import annotations

import pytest
from voicetyped_speech.asr.guards import (
    bound_text,
    compression_ratio,
    fallback_temperatures,
    max_tokens,
    max_words,
)

SECOND = 16000


def test_the_token_cap_grows_with_the_audio() -> None:
    assert max_tokens(SECOND) == 24
    assert max_tokens(SECOND + 1) == 32
    assert max_tokens(5 * SECOND) == 56


@pytest.mark.parametrize(
    ("text", "seconds", "kept", "cut"),
    [
        # loops, as whisper.cpp wrote them for "Goodbye.", "Hello?", "Talk to an agent."
        ("Bye. " * 12, 1.1, "Bye.", "repetition"),
        ("Thanks for calling. " + "Bye. " * 11, 2.3, "Thanks for calling. Bye.", "repetition"),
        ("Hello? Hello? Hello? Hello? Hello?", 1.0, "Hello?", "repetition"),
        ("Talk to an agent, talk to an agent, talk to an agent, talk to", 1.5,
         "Talk to an agent,", "repetition"),
        # more words than the audio can hold, nothing repeated: cut to what it can
        ("Thank you for watching. Please subscribe to my channel and ring the bell.", 1.0,
         "Thank you for watching. Please subscribe to my", "length"),
        # plausible texts are kept as they are, repetitions included
        ("No, no, no.", 1.0, "No, no, no.", ""),
        ("Bye bye.", 1.0, "Bye bye.", ""),
        ("Yes.", 1.0, "Yes.", ""),
        ("My number is 4 4 4 4 and 1 2 1 2 1 2 1 2", 4.0,
         "My number is 4 4 4 4 and 1 2 1 2 1 2 1 2", ""),
        ("1 1 1 1 1", 1.0, "1 1 1 1 1", ""),
        # a loop after a number: the number stays whole
        ("My number is 4 4 4 4. Bye. Bye. Bye. Bye.", 3.0, "My number is 4 4 4 4. Bye.",
         "repetition"),
        # a sentence written again: a loop already at two (seen with a biasing prompt)
        ("Where is my order. Where is my order. Where is my order.", 1.9,
         "Where is my order.", "repetition"),
        ("Thank you. Thank you.", 1.2, "Thank you.", "repetition"),
        ("Yes. Yes.", 1.0, "Yes. Yes.", ""),
        ("", 1.0, "", ""),
    ],
)  # fmt: skip
def test_loops_are_written_once_and_plausible_text_is_kept(
    text: str, seconds: float, kept: str, cut: str
) -> None:
    assert bound_text(text.strip(), round(seconds * SECOND)) == (kept, cut)


def test_a_compressible_text_is_a_loop_even_within_the_word_limit() -> None:
    text = "I want to, I want to, I want to go"  # 3 repeats: under the loop count
    assert bound_text(text, 10 * SECOND) == (text, "")
    phrase = "I would like to check the status of my order please "
    looping = (phrase * 3).strip()  # 33 words in 10 s: plausible, 3 repeats: not a count
    assert compression_ratio(looping) > 2.4
    assert bound_text(looping, 10 * SECOND) == (phrase.strip(), "repetition")


def test_words_per_second_bound() -> None:
    assert max_words(SECOND) == 8
    assert max_words(3 * SECOND) == 18


def test_fallback_temperatures_step_as_whisper_cpp_does() -> None:
    assert fallback_temperatures(0.4) == (0.0, 0.4, 0.8)
    assert fallback_temperatures(0.2) == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert fallback_temperatures(0.6) == (0.0, 0.6)
    assert fallback_temperatures(0) == (0.0,)
