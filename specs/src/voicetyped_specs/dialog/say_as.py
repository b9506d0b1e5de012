"""Values read aloud right: the words a prompt's ``{{ expr }}`` parts become before TTS.

Piper reads figures the way a book would: "order 48213" as "forty-eight thousand two hundred
thirteen", "555-0100" as "five hundred fifty-five dash zero one zero zero", "2026-12-03" as "two
thousand twenty-six dash twelve dash zero three". A template part names how its value is read
with a hint after a single ``|`` (the way SSML's ``say-as`` does)::

    "Order {{ vars.order_id | digits }} ships on {{ result.date | date }}."

==============  =============================================  ===============================
hint            reads                                          as
==============  =============================================  ===============================
``digits``      ``"48213"``, ``"0042"``                        "four eight two one three"
``number``      ``48213``, ``"3.5"``                           "forty-eight thousand, two
                                                               hundred and thirteen"
``ordinal``     ``3``                                          "third"
``currency``    ``12.5``, ``"$12.50"``, ``"12.50 EUR"``         "twelve dollars and fifty cents"
``currency:EUR``  a plain amount in that currency              "twelve euro and fifty cents"
``date``        ``"2026-12-03"`` (ISO date or date-time)       "December third, twenty
                                                               twenty-six"
``time``        ``"14:30"``, ``"09:05"``, ISO date-time        "two thirty PM", "nine oh five AM"
``telephone``   ``"+1 (555) 010-0199"``                        "plus one, five five five, zero
                                                               one zero, zero one nine nine"
``spell``       ``"AB12"``                                     "A, B, one, two"
==============  =============================================  ===============================

Without a hint, identifiers are read as identifiers: a string of digits with 4 or more digits
or a leading zero is read as ``digits`` (an order number is not a quantity), a code mixing
letters and digits (``"1Z999AA1"``) as ``spell``. Everything else, numbers included, goes to
the voice as it renders (Piper reads "2 days" and "3.5" well).

Number words come from ``num2words`` in the dialog's language (``settings.language``); the
English date, time and letter readings are written out here (no library reads clock times or
dates the way a phone prompt says them), so ``date``, ``time`` and ``spell`` need an English
dialog. Hints are checked when the dialog loads (:func:`parse_hint`); a value a hint cannot
read (``"soon" | date``) is spoken as it is rather than failing the call.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from num2words import CONVERTER_CLASSES, num2words

KINDS: Final = ("digits", "number", "ordinal", "currency", "date", "time", "telephone", "spell")
ENGLISH_ONLY: Final = frozenset({"date", "time", "spell"})
_MONTHS: Final = tuple(dt.date(2000, m, 1).strftime("%B") for m in range(1, 13))
"""English month names (``%B`` in the C locale, which the services run in)."""
_SYMBOLS: Final = {"$": "USD", "€": "EUR", "£": "GBP"}
_HINT = re.compile(r"(?<!\|)\|\s*([A-Za-z_][\w-]*)\s*(?::\s*([A-Za-z0-9_]+))?\s*$")
"""The hint at the end of a template part. CEL has no single-``|`` operator, and an expression
cannot end inside a string literal, so a trailing ``| name`` is always a hint."""


class SayAsError(ValueError):
    """A hint that does not exist, or that the dialog's language cannot read."""


@dataclass(frozen=True)
class SayAs:
    kind: str
    arg: str | None = None

    def __str__(self) -> str:
        return self.kind if self.arg is None else f"{self.kind}:{self.arg}"


def split_hint(part: str) -> tuple[str, str | None, str | None]:
    """``"vars.id | digits"`` -> ``("vars.id", "digits", None)``; no hint -> ``(part, None,
    None)``."""
    match = _HINT.search(part)
    if match is None:
        return part, None, None
    return part[: match.start()].strip(), match.group(1), match.group(2)


def parse_hint(kind: str, arg: str | None, language: str) -> SayAs:
    """A checked hint; :class:`SayAsError` names what is wrong and what would do."""
    if kind not in KINDS:
        close = difflib.get_close_matches(kind, KINDS, n=1)
        maybe = f" (did you mean {close[0]!r}?)" if close else ""
        raise SayAsError(f"unknown say_as {kind!r}{maybe}; known: {', '.join(KINDS)}")
    lang = num2words_language(language)
    if lang is None:
        raise SayAsError(f"say_as {kind!r}: no number words for language {language!r}")
    if kind in ENGLISH_ONLY and lang.split("_")[0] != "en":
        raise SayAsError(f"say_as {kind!r} reads English only; this dialog is {language!r}")
    if arg is not None:
        if kind != "currency":
            raise SayAsError(f"say_as {kind!r} takes no argument (got {arg!r})")
        known = sorted(getattr(CONVERTER_CLASSES[lang], "CURRENCY_FORMS", {}))
        if arg.upper() not in known:
            raise SayAsError(
                f"say_as currency: no words for currency {arg!r} in {language!r}; "
                f"known: {', '.join(known)}"
            )
        arg = arg.upper()
    return SayAs(kind, arg)


def num2words_language(language: str) -> str | None:
    """num2words' code for a dialog language ("en-US" -> "en"), None when it has none."""
    parts = language.replace("-", "_").split("_")
    full = "_".join([parts[0].lower(), *[p.upper() for p in parts[1:]]])
    for code in (full, parts[0].lower()):
        if code in CONVERTER_CLASSES:
            return code
    return None


def say(value: Any, hint: SayAs | None, language: str, text: str) -> str:
    """The words for ``value`` (``text`` is how it renders without a hint)."""
    lang = num2words_language(language)
    if lang is None:
        return text
    kind = hint.kind if hint is not None else _default_kind(value)
    if kind is None:
        return text
    try:
        return _READERS[kind](value, hint.arg if hint else None, lang)
    except (ValueError, ArithmeticError, NotImplementedError, KeyError, OverflowError):
        return text  # a value the hint cannot read: say it as it is, never fail the call


def _default_kind(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    figures = re.sub(r"[\s\-.]", "", text)
    if figures.isdigit() and (len(figures) >= 4 or (len(figures) > 1 and figures[0] == "0")):
        return "digits"
    if re.fullmatch(r"(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9\-]{3,}", text):
        return "spell"
    return None


# ---- readers -----------------------------------------------------------------------------


def _digit_words(digits: str, lang: str) -> str:
    return " ".join(num2words(int(d), lang=lang) for d in digits)


def _groups(text: str) -> list[str]:
    """Digit groups as written ("555-0100" -> 555, 0100); a long run without separators in
    threes with a last four ("5550100199" -> 555 010 0199), the way people read them."""
    groups = re.findall(r"\d+", text)
    if all(len(g) == 1 for g in groups):
        groups = ["".join(groups)]  # "4 8 2 1 3": digits spaced out, not groups
    if len(groups) != 1 or len(groups[0]) <= 6:
        return [g for g in groups if g]
    run, sizes = groups[0], [3] * ((len(groups[0]) - 4) // 3) + [4]
    extra = (len(run) - 4) % 3  # 8 digits: 4 + 4; 9: 2 + 3 + 4
    if extra == 1:
        sizes[0] += 1
    elif extra == 2:
        sizes.insert(0, 2)
    out, at = [], 0
    for size in sizes:
        out.append(run[at : at + size])
        at += size
    return out


def _read_digits(value: Any, _arg: str | None, lang: str) -> str:
    text = _plain(value)
    if re.search(r"[^\W\d_]", text):
        return _read_spell(value, None, lang)
    groups = _groups(text)
    if not groups:
        raise ValueError("no digits")
    return ", ".join(_digit_words(g, lang) for g in groups)


def _read_telephone(value: Any, _arg: str | None, lang: str) -> str:
    text = _plain(value)
    groups = _groups(text)
    if not groups:
        raise ValueError("no digits")
    words = [_digit_words(g, lang) for g in groups]
    if text.lstrip().startswith("+") and lang.startswith("en"):
        words[0] = "plus " + words[0]
    return ", ".join(words)


def _read_number(value: Any, _arg: str | None, lang: str) -> str:
    return str(num2words(_decimal(value), lang=lang))


def _read_ordinal(value: Any, _arg: str | None, lang: str) -> str:
    number = _decimal(value)
    if number != number.to_integral_value():
        raise ValueError("an ordinal is a whole number")
    return str(num2words(int(number), lang=lang, to="ordinal"))


def _read_currency(value: Any, arg: str | None, lang: str) -> str:
    text = _plain(value).strip()
    code = arg
    for symbol, symbol_code in _SYMBOLS.items():
        if symbol in text:
            code, text = code or symbol_code, text.replace(symbol, "")
    written = re.search(r"\b([A-Za-z]{3})\b", text)
    if written:
        code, text = code or written.group(1).upper(), text.replace(written.group(0), "")
    amount = _decimal(text)
    code = code or "USD"
    converter = CONVERTER_CLASSES[lang]
    major, _minor = converter.CURRENCY_FORMS[code]
    if amount == amount.to_integral_value():
        whole = int(amount)
        return f"{num2words(whole, lang=lang)} {converter.pluralize(abs(whole), major)}"
    separator = " and" if lang.startswith("en") else ","
    return str(num2words(amount, lang=lang, to="currency", currency=code, separator=separator))


def _read_date(value: Any, _arg: str | None, lang: str) -> str:
    text = _plain(value).strip()
    day = dt.datetime.fromisoformat(text).date() if "T" in text else dt.date.fromisoformat(text)
    year = num2words(day.year, lang=lang, to="year")
    ordinal = num2words(day.day, lang=lang, to="ordinal")
    return f"{_MONTHS[day.month - 1]} {ordinal}, {year}"


def _read_time(value: Any, _arg: str | None, lang: str) -> str:
    text = _plain(value).strip()
    match = re.search(r"(\d{1,2}):(\d{2})(?::\d{2}(?:\.\d+)?)?\s*([AaPp])?\.?\s*[Mm]?\.?", text)
    if match is None:
        raise ValueError("not a time")
    hour, minute = int(match.group(1)), int(match.group(2))
    if match.group(3):
        hour = hour % 12 + (12 if match.group(3).lower() == "p" else 0)
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ValueError("not a time")
    if minute == 0 and hour in (0, 12):
        return "twelve midnight" if hour == 0 else "twelve noon"
    clock = num2words(hour % 12 or 12, lang=lang)
    half = "AM" if hour < 12 else "PM"
    if minute == 0:
        return f"{clock} {half}"
    if minute < 10:
        return f"{clock} oh {num2words(minute, lang=lang)} {half}"
    return f"{clock} {num2words(minute, lang=lang)} {half}"


def _read_spell(value: Any, _arg: str | None, lang: str) -> str:
    # Letters as capitals between commas: Piper says "A, B" as the letters (as "A B" its first
    # "A" is the article); digits as words.
    out = []
    for char in _plain(value):
        if char.isdigit():
            out.append(num2words(int(char), lang=lang))
        elif char.isalpha():
            out.append(char.upper())
    if not out:
        raise ValueError("nothing to spell")
    return ", ".join(out)


def _plain(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        raise ValueError("not a readable value")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _decimal(value: Any) -> Decimal:
    text = re.sub(r"[\s,](?=\d{3}\b)", "", _plain(value).strip())  # "48,213", "1 000"
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None


_READERS: Final = {
    "digits": _read_digits,
    "number": _read_number,
    "ordinal": _read_ordinal,
    "currency": _read_currency,
    "date": _read_date,
    "time": _read_time,
    "telephone": _read_telephone,
    "spell": _read_spell,
}
