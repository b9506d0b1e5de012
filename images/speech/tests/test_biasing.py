"""Biasing by dialog state: the prompt a context makes, its bounds, and the guards against
Whisper's prompt failure modes (the prompt written back, a number of the wrong length)."""

from __future__ import annotations

from voicetyped.recognition import (
    MAX_CHOICES,
    MAX_HOTWORDS,
    MAX_ITEM_CHARS,
    MAX_PHRASES,
    MAX_PROMPT_CHARS,
    Expect,
    RecognitionContext,
)
from voicetyped_speech.asr.biasing import MAX_PROMPT_CHARS as MAX_WHISPER_PROMPT
from voicetyped_speech.asr.biasing import bias_for, digits_fit, echoed

DIGITS = RecognitionContext(
    state="ask_number",
    expect=Expect.DIGITS,
    min_digits=4,
    max_digits=10,
    phrases=("let me talk to a person",),
    prompt="What is your order number? You can also key it in followed by the hash key.",
)
MENU = RecognitionContext(
    state="menu",
    expect=Expect.CHOICE,
    choices=("appointments", "prescriptions", "opening hours", "reception"),
    prompt="For appointments press 1. For prescriptions press 2.",
)
YES_NO = RecognitionContext(
    state="holder",
    expect=Expect.YES_NO,
    choices=("speaking",),
    hotwords=("Amelia Okafor",),
    prompt="Am I speaking with Amelia Okafor?",
)


def test_no_context_or_an_empty_one_is_plain_recognition() -> None:
    assert bias_for(None) is None
    assert bias_for(RecognitionContext()) is None
    assert bias_for(RecognitionContext(state="lookup")) is None


def test_the_prompt_reads_like_a_transcript_of_question_and_answers() -> None:
    menu = bias_for(MENU)
    assert menu is not None
    assert menu.prompt == (
        "For appointments press 1. For prescriptions press 2. "
        "Appointments. Prescriptions. Opening hours. Reception."
    )
    yes_no = bias_for(YES_NO)
    assert yes_no is not None
    assert yes_no.prompt == "Am I speaking with Amelia Okafor? Yes. No. Speaking. Amelia Okafor."
    # faster-whisper takes the hotwords apart from the prompt.
    assert yes_no.core == "Am I speaking with Amelia Okafor? Yes. No. Speaking."
    assert yes_no.hotwords == "Amelia Okafor"


def test_digits_are_prompted_as_figures_of_the_expected_lengths() -> None:
    bias = bias_for(DIGITS)
    assert bias is not None
    numbers = list(bias.examples)
    assert [len(n) for n in numbers] == [4, 10]
    for n in numbers:
        assert " ".join(n) + "." in bias.prompt  # "3 0 7 5." : digits read one by one
    assert bias.digits == (4, 10)
    assert "Let me talk to a person." in bias.prompt
    # Exactly known: one example of that length.
    pin = bias_for(RecognitionContext(expect=Expect.DIGITS, min_digits=4, max_digits=4))
    assert pin is not None and [len(n) for n in pin.examples] == [4]


def test_the_largest_context_the_contract_allows_makes_a_bounded_prompt() -> None:
    item = "x" * (MAX_ITEM_CHARS - 4)
    ctx = RecognitionContext(
        expect=Expect.CHOICE,
        choices=tuple(f"{i:03d} {item}" for i in range(MAX_CHOICES)),
        phrases=tuple(f"{i:03d} {item}" for i in range(100, 100 + MAX_PHRASES)),
        hotwords=tuple(f"{i:03d} {item}" for i in range(200, 200 + MAX_HOTWORDS)),
        prompt="Which one? " * (MAX_PROMPT_CHARS // 11),
    )
    bias = bias_for(ctx)
    assert bias is not None
    assert len(bias.prompt) <= MAX_WHISPER_PROMPT
    assert bias.prompt.startswith("Which one?")  # the question first, then what fits
    assert f"000 {item}" in bias.prompt
    assert bias.answers and all(answer in bias.prompt for answer in bias.answers)
    assert len(bias.answers) < MAX_CHOICES + MAX_PHRASES + MAX_HOTWORDS  # the rest left out


def test_a_copy_of_the_question_is_an_echo_an_answer_that_shares_words_is_not() -> None:
    bias = bias_for(DIGITS)
    assert bias is not None
    assert echoed(bias, "What is your order number?")
    assert echoed(bias, "You can also key it in.")
    assert not echoed(bias, "My order number is 4 8 2 1 3.")
    assert not echoed(bias, "Let me talk to a person.")  # an answer the prompt offers
    assert not echoed(bias, "")


def test_options_run_together_are_an_echo_one_option_is_not() -> None:
    bias = bias_for(MENU)
    assert bias is not None
    assert echoed(bias, "Appointments. Prescriptions. Opening hours.")
    assert echoed(bias, "Opening hours, reception.")
    assert not echoed(bias, "Opening hours, please.")
    assert not echoed(bias, "Prescriptions.")
    yes_no = bias_for(YES_NO)
    assert yes_no is not None
    assert echoed(yes_no, "Yes. No.")
    assert not echoed(yes_no, "Yes, speaking.")  # not run together as in the prompt
    assert not echoed(yes_no, "No.")


def test_an_example_number_or_one_running_into_an_example_is_an_echo() -> None:
    bias = bias_for(DIGITS)
    assert bias is not None
    first, second = bias.examples
    assert echoed(bias, " ".join(first) + ".")
    assert echoed(bias, "5 6 1 2 8. " + " ".join(second[:3]) + ".")
    assert echoed(bias, first)  # written as one figure
    assert not echoed(bias, "5 6 1 2 8.")


def test_a_number_of_a_length_the_state_does_not_take_does_not_fit() -> None:
    bias = bias_for(DIGITS)
    assert bias is not None
    assert digits_fit(bias, "4 8 2 1 3")
    assert not digits_fit(bias, "4 8 2 1 3 4 8 2 1 3 4")  # 11 > 10: a loop
    assert not digits_fit(bias, "It's 1 3 8.")  # 3 < 4
    assert not digits_fit(bias, "4 8 2 1 3 4 8 2 1 3")  # the same block twice: a loop
    assert digits_fit(bias, "4 4 8 8")
    greet = bias_for(RecognitionContext(expect=Expect.DIGITS, min_digits=4))  # no upper bound
    assert greet is not None
    assert not digits_fit(greet, "3 8 5 1 9 3 8 5 1 9 3 8 5 1 9")  # seen on espeak's Scottish
    assert digits_fit(greet, "3 8 5 1 9")
    assert digits_fit(bias, "I want to talk to a person.")  # no number at all
    menu = bias_for(MENU)
    assert menu is not None and digits_fit(menu, "1 2 3 4 5 6 7 8 9 0 1 2")
