"""A labelled set of caller turns with pauses in the middle, for measuring turn-taking.

What callers say to a phone bot, in the places they pause without having finished: an order
number before its digits, a card number read in groups, an address before the street, a date
before the year, a hesitation ("um", "uh"), a list between its items, a sentence trailing off on
"and", a yes or no before the rest of the answer. Each :data:`TEMPLATES` entry is the words cut
where such a pause goes; :data:`PAUSED` says each of them twice with pause lengths spread over
:data:`PAUSE_LENGTHS_MS` (every length equally often), :data:`COMPLETE` says each once without a
pause (turns that are finished when the caller stops). Every item names its voice: Piper's (the
project's caller voice, ``"piper"``) or an espeak-ng voice of :data:`.espeak.VOICES` by its label.

An item's :attr:`PauseItem.text` is in the scripted caller's form (``voicetyped call``): the
pieces joined by ``[pause 700ms]`` markers. Everything here is fixed: no randomness.
"""

from __future__ import annotations

from dataclasses import dataclass

PAUSE_LENGTHS_MS: tuple[int, ...] = (200, 400, 700, 1000, 1500)
VOICES: tuple[str, ...] = (
    "piper",
    "en-us-male",
    "en-gb-female",
    "en-scotland-male",
    "en-us-female",
    "en-caribbean-female",
    "en-gb-male",
)
"""The caller voices, in the order items take them: Piper and espeak-ng labels."""


@dataclass(frozen=True)
class Template:
    category: str
    pieces: tuple[str, ...]
    """The words, cut where the caller pauses (one or two places)."""


TEMPLATES: tuple[Template, ...] = (
    Template("order_number", ("My order number is", "four eight two one three.")),
    Template("order_number", ("It's order", "three one four", "nine two.")),
    Template(
        "card_number",
        ("The card number is four one two eight", "three three nine zero", "five five one two."),
    ),
    Template("card_number", ("The last four digits are", "six two", "nine four.")),
    Template("address", ("I live at", "twenty seven Harbour Road.")),
    Template("address", ("Please send it to fourteen Mill Lane", "in Bristol.")),
    Template("date", ("My appointment is on", "the third of April.")),
    Template("date", ("I was born on the twelfth of May", "nineteen eighty six.")),
    Template("hesitation", ("Um", "I think it was last Tuesday.")),
    Template("hesitation", ("I'd like to", "uh", "change my delivery address.")),
    Template("list", ("I ordered a lamp", "two cushions", "and a rug.")),
    Template("trailing_and", ("I want to cancel my order and", "get a refund.")),
    Template("trailing_and", ("It arrived late and", "the box was damaged.")),
    Template("yes_no", ("Yes", "that's the right address.")),
    Template("yes_no", ("No", "I already paid that bill.")),
)


@dataclass(frozen=True)
class PauseItem:
    id: str
    category: str
    pieces: tuple[str, ...]
    pauses_ms: tuple[int, ...]
    """One per gap between pieces; empty: said without a pause (a complete turn)."""
    voice: str
    """``"piper"`` or an espeak-ng voice label."""

    @property
    def paused(self) -> bool:
        return bool(self.pauses_ms)

    @property
    def text(self) -> str:
        """The scripted caller's ``say`` text: ``"It's order [pause 700ms] three one four …"``."""
        if not self.paused:
            return self.words
        out = self.pieces[0]
        for pause, piece in zip(self.pauses_ms, self.pieces[1:], strict=True):
            out += f" [pause {pause}ms] {piece}"
        return out

    @property
    def words(self) -> str:
        return " ".join(self.pieces)


def _paused() -> tuple[PauseItem, ...]:
    items: list[PauseItem] = []
    slot = 0  # every pause place in turn takes the next length
    for variant in ("a", "b"):
        for n, template in enumerate(TEMPLATES):
            gaps = len(template.pieces) - 1
            lengths = tuple(
                PAUSE_LENGTHS_MS[(slot + k) % len(PAUSE_LENGTHS_MS)] for k in range(gaps)
            )
            slot += gaps
            voice = VOICES[len(items) % len(VOICES)]
            items.append(
                PauseItem(
                    f"{template.category}-{n}-{variant}",
                    template.category,
                    template.pieces,
                    lengths,
                    voice,
                )
            )
    return tuple(items)


def _complete() -> tuple[PauseItem, ...]:
    return tuple(
        PauseItem(
            f"{t.category}-{n}-complete",
            t.category,
            (" ".join(t.pieces),),
            (),
            VOICES[(n + 3) % len(VOICES)],
        )
        for n, t in enumerate(TEMPLATES)
    )


PAUSED: tuple[PauseItem, ...] = _paused()
"""30 turns with one or two pauses where the caller has not finished."""
COMPLETE: tuple[PauseItem, ...] = _complete()
"""15 turns of the same words without a pause."""
_QUICK_IDS = (
    "order_number-0-a",
    "card_number-2-a",
    "address-4-a",
    "date-7-a",
    "hesitation-8-a",
    "trailing_and-11-a",
    "yes_no-14-a",
    "list-10-b",
    "order_number-1-complete",
    "address-4-complete",
    "date-6-complete",
    "trailing_and-12-complete",
)
QUICK: tuple[PauseItem, ...] = tuple(i for i in PAUSED + COMPLETE if i.id in _QUICK_IDS)
"""A subset for a quick run: 8 paused turns (every category and pause length) and 4 complete
ones, in four voices."""


def items(quick: bool = False) -> tuple[PauseItem, ...]:
    """The set: paused turns first, then the complete ones."""
    return QUICK if quick else PAUSED + COMPLETE
