"""Spoken numbers as values: every way a caller reads them and a recogniser writes them."""

from __future__ import annotations

import pytest
from voicetyped_specs.dialog.spoken import spoken_digits, spoken_numbers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Digits read one by one, in words, figures or both.
        ("four eight two one three", "48213"),
        ("Four Eight TWO One Three", "48213"),
        ("4 8 2 one three", "48213"),
        ("four 8 two 1", "4821"),
        ("zero one two three four five six seven eight nine", "0123456789"),
        # Whole numbers and groups.
        ("forty-eight thousand two hundred thirteen", "48213"),
        ("forty eight thousand two hundred and thirteen", "48213"),
        ("Forty-eight thousand, two hundred thirteen.", "48213"),
        ("forty-eight two thirteen", "48213"),
        ("twenty one twelve", "2112"),
        ("nineteen eighty four", "1984"),
        ("48 twenty one", "4821"),
        ("a hundred and one", "101"),
        # "oh" and "o" as zero, next to digits only.
        ("five oh five", "505"),
        ("five o five", "505"),
        ("oh four two", "042"),
        ("nineteen oh five", "1905"),
        ("Oh, it's 4821.", "4821"),
        ("oh I see, four eight two one", "4821"),
        ("oh", ""),
        ("at five o'clock", "5"),
        # Repeats.
        ("double three", "33"),
        ("triple five", "555"),
        ("treble two", "222"),
        ("double oh seven", "007"),
        ("four double eight two", "4882"),
        ("double 3 4", "334"),
        ("double trouble", ""),
        ("The reference is double-3702.", "33702"),
        ("triple 8, 2", "8882"),
        # Phone numbers read the way people read them.
        ("eight hundred five five five oh one hundred", "8005550100"),
        ("eight hundred, five five five, zero one double oh", "8005550100"),
        ("five five five, oh one nine nine", "5550199"),
        # What Whisper writes.
        ("48,213", "48213"),
        ("48213.", "48213"),
        ("4-8-2-1-3", "48213"),
        ("4, 8, 2, 1, 3.", "48213"),
        ("482-13", "48213"),
        ("My order number is 4-8-2-1-3.", "48213"),
        ("Is it 48213?", "48213"),
        ("order #48213!", "48213"),
        ("it's (555) 0100", "5550100"),
        ("four-eight-two-one-three", "48213"),
        ("4821 3", "48213"),
        # Filler words do not count; homophones are not digits.
        ("my account number is seven seven one two", "7712"),
        ("I'm calling for order 4821", "4821"),
        ("I want to talk to someone", ""),
        ("I don't know", ""),
        ("", ""),
    ],
)
def test_spoken_digits(text: str, expected: str) -> None:
    assert spoken_digits(text) == expected


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("quatre huit deux un trois", "fr", "48213"),
        ("quarante-huit mille deux cent treize", "fr", "48213"),
        ("vier acht zwei eins drei", "de", "48213"),
        ("cuatro ocho dos uno tres", "es", "48213"),
        ("quattro otto due uno tre", "it", "48213"),
        ("fire otte to en tre", "da", "48213"),
        ("quatre huit deux", "fr-CA", "482"),
        ("4 8 2", "ja", "482"),  # no number words known: figures only
        ("four eight two", "ja", ""),
        ("oh quatre deux", "fr", "42"),  # "oh" is an English reading
        ("four eight two", "fr", ""),
    ],
)
def test_spoken_digits_in_other_languages(text: str, language: str, expected: str) -> None:
    assert spoken_digits(text, language) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("two", [2]),
        ("I want two tickets", [2]),
        ("forty-eight thousand two hundred thirteen", [48213]),
        ("Forty-eight thousand, two hundred thirteen", [48213]),
        ("48,213", [48213]),
        ("48213.", [48213]),
        ("four eight two one three", [48213]),
        ("4, 8, 2, 1, 3", [48213]),
        ("4-8-2-1-3", [48213]),
        ("room five oh five please", [505]),
        ("oh four two", [42]),
        ("double three", [33]),
        ("three and a half", [3]),
        ("three point five", [3.5]),
        ("3.5", [3.5]),
        ("$12.50", [12.5]),
        ("12,5", [12.5]),
        ("1,234,567", [1234567]),
        ("1.234.567", [1234567]),
        ("the 21st of May", [21]),
        ("the twenty-first", [21]),
        ("two adults and three children", [2, 3]),
        ("3 tickets for 48,213", [3, 48213]),
        ("one hundred and one dalmatians", [101]),
        ("seven hundred and fifty thousand", [750000]),
        ("no thanks", []),
        ("", []),
    ],
)
def test_spoken_numbers(text: str, expected: list[int | float]) -> None:
    result = spoken_numbers(text)
    assert result == expected
    assert [type(x) for x in result] == [type(x) for x in expected]


def test_spoken_digits_are_deterministic_and_cheap() -> None:
    text = "my order number is forty-eight thousand two hundred thirteen"
    assert {spoken_digits(text) for _ in range(50)} == {"48213"}
    long_text = "four eight two one " * 500
    assert spoken_digits(long_text) == "4821" * 500
