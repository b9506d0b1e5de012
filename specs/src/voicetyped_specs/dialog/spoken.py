"""Numbers a caller said, as values: the digits of an order number, the quantities in a turn.

Callers read numbers in many ways and recognisers write them in as many: "four eight two one
three", "forty-eight thousand two hundred thirteen", "double three", "oh" for zero, "4 8 2 one
three"; Whisper writes "48,213", "48213.", "4-8-2-1-3", "4, 8, 2, 1, 3". Two functions turn any
of these into values, deterministically (no model, same text -> same value):

- :func:`spoken_digits` -- every digit said, in order, as a string: ``"48213"``. For
  identifiers (order, account and phone numbers, PINs), where "oh" is zero, "double three" is
  "33" and "eight hundred" in "eight hundred five five five" is "800".
- :func:`spoken_numbers` -- the numbers said, as values: ``[48213]``, ``[2, 3.5]``. Digits read
  one by one ("five oh five", "4, 8, 2") make one number.

Number words are parsed by ``text2num`` (English, French, Spanish, Portuguese, German, Dutch,
Danish, Italian); in other languages only figures count. "oh", "o", "double", "triple" are
English readings and apply to English only. Homophones ("for", "to", "won") never count: "I'm
calling for order 4821" must not start with a 4.

Dialogs use them as the CEL functions ``spokenDigits(text)`` and ``spokenNumbers(text)`` (in
the dialog's ``settings.language``); ``collect_digits`` accepts spoken digits through
:func:`spoken_digits`. Other code imports them from here.
"""

from __future__ import annotations

import re
from functools import lru_cache

from num2words import num2words
from text_to_num import alpha2digit

TEXT2NUM_LANGUAGES = frozenset({"en", "fr", "es", "pt", "de", "nl", "da", "it"})
"""Languages whose number words are understood (text2num's); others: figures only."""

_EN_DIGITS = tuple(num2words(d) for d in range(10))
_EN_ZERO = frozenset({"oh", "o"})
_EN_REPEAT = {"double": 2, "triple": 3, "treble": 3}
_EN_SCALES = frozenset({"hundred", "thousand", "million", "billion"})
_EN_NUMBER_WORDS = frozenset({num2words(n) for n in (*range(20), *range(20, 100, 10))} | _EN_SCALES)
"""The words that can go on a number ("two hundred" + "thirteen")."""

# A token: a word (letters and apostrophes: "o'clock" is not "o"), a figure with the
# separators Whisper puts inside numbers ("48,213", "12.50", "4-8-2"), or one other character.
_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*|\d+(?:[.,\-]\d+)*|\S")
_FIGURE = re.compile(r"\d+(?:[.,\-]\d+)*")


def _language(language: str) -> str:
    return language.lower().replace("_", "-").split("-")[0]


def _english_readings(text: str) -> str:
    """English readings text2num does not know, rewritten: "double three" -> "three three",
    "oh" between digits -> "zero", and a break after "eight hundred" when digits are read
    one by one after it ("eight hundred five five five" is 800 555, not 805 5 5)."""
    tokens = _TOKEN.findall(text)
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok in _EN_REPEAT and (_is_digit_word(nxt) or _is_single_figure(nxt) or nxt in _EN_ZERO):
            out.extend([nxt] * _EN_REPEAT[tok])
            i += 2
            continue
        if tok in _EN_REPEAT and nxt.isdigit():
            # Whisper writes "double three seven oh two" as "double-3702": the first digit.
            out.extend([nxt[0]] * _EN_REPEAT[tok] + [nxt[1:]])
            i += 2
            continue
        out.append(tok)
        i += 1
    # "oh"/"o" is a zero only next to another digit (spaces between, no punctuation):
    # "Oh, it's 4821" keeps its "Oh"; "five oh five" and "oh four two" have a zero.
    spoken = [_is_digit_word(t) or _is_single_figure(t) or t in _EN_ZERO for t in out]
    for k, tok in enumerate(out):
        if tok in _EN_ZERO:
            left = k > 0 and spoken[k - 1] and out[k - 1] not in _EN_ZERO
            right = k + 1 < len(out) and spoken[k + 1]
            run = _zero_run_has_digit(out, spoken, k)
            if (left or right) and run:
                out[k] = "zero"
    for k in range(len(out) - 2):
        if out[k] not in _EN_SCALES:
            continue
        after = k + 2 if out[k + 1] == "," else k + 1
        if after + 1 < len(out) and _is_digit_word(out[after]) and _is_digit_word(out[after + 1]):
            # "eight hundred, five five five": digits read one by one close the number (800).
            out[k] += " ;"
        elif out[k + 1] == "," and out[k + 2] in _EN_NUMBER_WORDS:
            # "forty-eight thousand, two hundred" is one number (num2words writes that comma).
            out[k + 1] = ""
    return " ".join(t for t in out if t)


def _zero_run_has_digit(tokens: list[str], spoken: list[bool], k: int) -> bool:
    """Whether the run of digit-like tokens around ``tokens[k]`` holds a real digit."""
    lo = k
    while lo > 0 and spoken[lo - 1]:
        lo -= 1
    hi = k
    while hi + 1 < len(tokens) and spoken[hi + 1]:
        hi += 1
    return any(tokens[j] not in _EN_ZERO for j in range(lo, hi + 1))


def _is_digit_word(token: str) -> bool:
    return token in _EN_DIGITS  # "zero" included; "oh" only once rewritten


def _is_single_figure(token: str) -> bool:
    return len(token) == 1 and token.isdigit()


@lru_cache(maxsize=256)  # a condition and the set after it often read the same turn
def _prepare(text: str, language: str) -> str:
    lang = _language(language)
    text = text.lower().replace("\u2019", "'")
    # Hyphens join words ("forty-eight", "four-eight-two"): text2num reads them apart as well.
    text = re.sub(r"(?<=[^\W\d_])-(?=[^\W\d_]|\d)", " ", text)
    if lang == "en":
        text = _english_readings(text)
    if lang in TEXT2NUM_LANGUAGES:
        # threshold 0: a lone "one" or "two" is a number here (the caller was asked for one).
        text = str(alpha2digit(text, lang, threshold=0))
    return text


def spoken_digits(text: str, language: str = "en") -> str:
    """Every digit in ``text``, in order, as a string of 0-9: "four eight two one three",
    "forty-eight thousand two hundred thirteen", "48,213.", "4-8-2-1-3", "double four
    eight two one" -> "48213"/"44821"; "" when none. Words that are not numbers are skipped
    ("my order number is ...")."""
    return "".join(re.findall(r"\d", _prepare(text, language)))


def spoken_numbers(text: str, language: str = "en") -> list[int | float]:
    """The numbers in ``text``, in order: "two tickets for 48,213" -> [2, 48213];
    "48,213" -> [48213]; "3.5" -> [3.5]; "the 21st" -> [21]. Digits read one by one ("five
    oh five", "4, 8, 2", "4 8 2") make one number (505, 482). A comma followed by three
    digits groups thousands ("48,213"); otherwise "," and "." before digits are decimal
    points only when not followed by a space."""
    prepared = _prepare(text, language)
    tokens = _TOKEN.findall(prepared)
    numbers: list[int | float] = []
    run: list[str] = []  # single digits read one by one

    def close_run() -> None:
        if run:
            numbers.append(int("".join(run)))
            run.clear()

    for tok in tokens:
        if _FIGURE.fullmatch(tok):
            if tok.isdigit() and (len(tok) == 1 or tok.startswith("0")):
                run.append(tok)
                continue
            close_run()
            numbers.append(_figure_value(tok))
        elif tok == "," and run:
            continue  # "4, 8, 2, 1, 3": Whisper's way of writing digits read one by one
        else:
            close_run()
    close_run()
    return numbers


def _figure_value(token: str) -> int | float:
    """ "48,213" -> 48213, "12.50" -> 12.5, "4-8-2" -> 482, "3,5" -> 3.5."""
    if "-" in token:
        return int(token.replace("-", "").replace(",", "").replace(".", ""))
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", token):
        token = token.replace(",", "")
    elif re.fullmatch(r"\d{1,3}(?:\.\d{3}){2,}", token):
        token = token.replace(".", "")  # 1.234.567
    elif token.count(",") == 1 and "." not in token:
        token = token.replace(",", ".")  # a decimal comma
    elif token.count(",") + token.count(".") > 1:
        return int(re.sub(r"\D", "", token))
    value = float(token)
    return int(value) if "." not in token else value
