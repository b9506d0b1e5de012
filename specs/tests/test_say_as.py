"""Values read aloud: say_as hints in prompts, the defaults for identifiers, load-time checks."""

from __future__ import annotations

from typing import Any

import pytest
from voicetyped_specs.dialog.compiled import DialogError, load_dialog
from voicetyped_specs.dialog.say_as import KINDS, SayAs, SayAsError, parse_hint, split_hint
from voicetyped_specs.dialog.template import Template


def speak(source: str, language: str = "en", **vars_: Any) -> str:
    return Template(source, language).render_speech({"vars": vars_})


@pytest.mark.parametrize(
    ("hint", "value", "expected"),
    [
        ("digits", "48213", "four eight two one three"),
        ("digits", 48213, "four eight two one three"),
        ("digits", "0042", "zero zero four two"),
        ("digits", "4 8 2 1 3", "four eight two one three"),
        ("digits", "4821-3", "four eight two one, three"),
        ("digits", "5550100199", "five five five, zero one zero, zero one nine nine"),
        ("digits", "12345678", "one two three four, five six seven eight"),
        ("digits", "AB-12", "A, B, one, two"),
        ("number", 48213, "forty-eight thousand, two hundred and thirteen"),
        ("number", "48,213", "forty-eight thousand, two hundred and thirteen"),
        ("number", "3.5", "three point five"),
        ("number", 2.0, "two"),
        ("number", -5, "minus five"),
        ("ordinal", 3, "third"),
        ("ordinal", "21", "twenty-first"),
        ("currency", 12.5, "twelve dollars and fifty cents"),
        ("currency", "$12.50", "twelve dollars and fifty cents"),
        ("currency", "$1", "one dollar"),
        ("currency", "12.50 EUR", "twelve euro and fifty cents"),
        ("currency", "£3.01", "three pounds sterling and one penny"),
        ("currency:EUR", "12", "twelve euro"),
        ("currency:GBP", 1, "one pound sterling"),
        ("currency", 1000000, "one million dollars"),
        ("date", "2026-12-03", "December third, twenty twenty-six"),
        ("date", "2026-12-03T14:30:00Z", "December third, twenty twenty-six"),
        ("date", "2000-01-01", "January first, two thousand"),
        ("time", "14:30", "two thirty PM"),
        ("time", "09:05", "nine oh five AM"),
        ("time", "09:00:00", "nine AM"),
        ("time", "12:00", "twelve noon"),
        ("time", "00:00", "twelve midnight"),
        ("time", "12:45", "twelve forty-five PM"),
        ("time", "2:15 pm", "two fifteen PM"),
        ("time", "2026-12-03T14:30:00Z", "two thirty PM"),
        (
            "telephone",
            "+1 (555) 010-0199",
            "plus one, five five five, zero one zero, zero one nine nine",
        ),
        ("telephone", "5550100", "five five five, zero one zero zero"),
        ("spell", "AB12", "A, B, one, two"),
        ("spell", "x-y", "X, Y"),
        # A value the hint cannot read is said as it is: never a failed call.
        ("date", "soon", "soon"),
        ("time", "25:00", "25:00"),
        ("number", "n/a", "n/a"),
        ("ordinal", 2.5, "2.5"),
        ("currency", "free", "free"),
        ("digits", "none", "N, O, N, E"),
    ],
)
def test_hint(hint: str, value: Any, expected: str) -> None:
    assert speak(f"{{{{ vars.v | {hint} }}}}", v=value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("48213", "four eight two one three"),  # an identifier: digit by digit
        ("0042", "zero zero four two"),
        ("07", "zero seven"),
        ("1Z999AA1", "one, Z, nine, nine, nine, A, A, one"),  # a code: spelled
        (48213, "48213"),  # a number: left to the voice
        (2, "2"),
        ("12", "12"),  # too short to be an identifier
        ("3.5", "3.5"),
        ("shipped", "shipped"),
        ("Tuesday at 10 am", "Tuesday at 10 am"),
        (True, "true"),
        (None, ""),
    ],
)
def test_defaults(value: Any, expected: str) -> None:
    assert speak("{{ vars.v }}", v=value) == expected


def test_prompt_text_around_the_parts_is_as_written() -> None:
    assert (
        speak("Order {{ vars.id }} (ref 48213) arrives in {{ vars.n }} days.", id="48213", n=2)
        == "Order four eight two one three (ref 48213) arrives in 2 days."
    )


def test_other_languages_read_numbers_in_their_words() -> None:
    assert speak("{{ vars.v | number }}", "fr", v="48213") == "quarante-huit mille deux cent treize"
    assert speak("{{ vars.v | digits }}", "de", v="482") == "vier acht zwei"
    assert speak("{{ vars.v }}", "es", v="0042") == "cero cero cuatro dos"
    assert speak("{{ vars.v | currency:EUR }}", "de", v="12.5") == "zwölf Euro, fünfzig Cent"
    assert speak("{{ vars.v | digits }}", "en-GB", v="482") == "four eight two"
    # No number words for the language: values are left as they render.
    assert speak("{{ vars.v }}", "xx", v="48213") == "48213"


def test_render_text_ignores_nothing_and_adds_nothing() -> None:
    # Transfers, payloads and LLM prompts render values as they are.
    assert Template("{{ vars.v }}").render_text({"vars": {"v": "48213"}}) == "48213"


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        ("vars.id | digits", ("vars.id", "digits", None)),
        ("vars.total|currency:EUR", ("vars.total", "currency", "EUR")),
        ("vars.a || vars.b", ("vars.a || vars.b", None, None)),
        ("ok || digits", ("ok || digits", None, None)),
        ('"a | b"', ('"a | b"', None, None)),
        ('vars.x + " | digits"', ('vars.x + " | digits"', None, None)),
        ("vars.id", ("vars.id", None, None)),
    ],
)
def test_split_hint(part: str, expected: tuple[str, str | None, str | None]) -> None:
    assert split_hint(part) == expected


def test_parse_hint() -> None:
    assert [parse_hint(k, None, "en") for k in KINDS] == [SayAs(k) for k in KINDS]
    assert parse_hint("currency", "eur", "en-US") == SayAs("currency", "EUR")
    assert str(SayAs("currency", "EUR")) == "currency:EUR"
    for kind, arg, language, message in [
        ("digts", None, "en", "unknown say_as 'digts' (did you mean 'digits'?); known: digits,"),
        ("currency", "XYZ", "en", "say_as currency: no words for currency 'XYZ' in 'en'"),
        ("digits", "3", "en", "say_as 'digits' takes no argument (got '3')"),
        ("date", None, "fr", "say_as 'date' reads English only; this dialog is 'fr'"),
        ("number", None, "xx", "say_as 'number': no number words for language 'xx'"),
    ]:
        with pytest.raises(SayAsError) as info:
            parse_hint(kind, arg, language)
        assert str(info.value).startswith(message)


def dialog(text: str, payload: str = "{}", language: str = "en") -> dict[str, Any]:
    return {
        "name": "t",
        "initial": "a",
        "settings": {"language": language},
        "vars": {"id": ""},
        "states": {
            "a": {
                "on_enter": [
                    {"play_tts": {"text": "Hello."}},
                    {"play_tts": {"text": text}},
                    {"call_hook": {"service": "s", "method": "m", "payload": {"id": payload}}},
                    {"transfer": {"target": "sip:{{ vars.id | digits }}@pbx"}},
                ],
                "terminal": True,
            }
        },
    }


def test_hints_are_checked_when_the_dialog_loads() -> None:
    with pytest.raises(DialogError) as info:
        load_dialog(dialog("Order {{ vars.id | digts }}.", "{{ vars.id | digits }}"))
    assert [str(i) for i in info.value.issues] == [
        "states.a.on_enter[1].play_tts.text: unknown say_as 'digts' (did you mean 'digits'?); "
        "known: digits, number, ordinal, currency, date, time, telephone, spell",
        "states.a.on_enter[2].call_hook.payload: say_as hints ('| digits') only apply to "
        "play_tts text",
        "states.a.on_enter[3].transfer.target: say_as hints ('| digits') only apply to play_tts "
        "text",
    ]
    with pytest.raises(DialogError) as info:
        load_dialog(dialog("On {{ vars.id | date }}.", language="fr"))
    assert "states.a.on_enter[1].play_tts.text: say_as 'date' reads English only" in str(info.value)


def test_a_dialog_with_hints_speaks_them() -> None:
    spec = dialog("Order {{ vars.id | digits }} on {{ '2026-12-03' | date }}.")
    spec["states"]["a"]["on_enter"][2:] = []
    loaded = load_dialog(spec)
    action = loaded.states["a"].on_enter[1]
    text = action.text.render_speech({"vars": {"id": "48213"}})  # type: ignore[union-attr]
    assert text == "Order four eight two one three on December third, twenty twenty-six."
