"""The recognition context: what the caller is expected to say in a dialog state.

The runtime derives one per dialog state (``voicetyped_runtime.recognition``) and sends it on
the call's Converse stream (``voicetyped.v1.RecognitionContext``); the speech gateway biases
Whisper with it (``voicetyped_speech.asr.biasing``). This model is the one place the contract's
bounds live, so both ends agree on them: the runtime builds contexts that fit (clipping what a
dialog offers, :meth:`RecognitionContext.fitted`), the gateway refuses anything larger
(:func:`context_from_proto` raises :class:`InvalidContextError` naming the field), so a hostile or
broken peer can never make an unbounded Whisper prompt.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from voicetyped.v1 import speech_pb2

YES_WORDS = frozenset({"yes", "yeah", "yep", "yup", "sure", "correct", "right", "ok", "okay"})
"""English words that answer yes: a state whose transitions test for them expects yes or no
(the runtime), a turn that starts with one is complete (the speech gateway's end of turn), and
over a prompt that asked they are an answer rather than a backchannel (its barge-in filter)."""
NO_WORDS = frozenset({"no", "nope", "nah"})
"""English words that answer no (the same three uses)."""

MAX_ITEM_CHARS = 80
"""One choice, phrase or hotword."""
MAX_PROMPT_CHARS = 300
"""The question the caller was asked."""
MAX_CHOICES = 16
MAX_PHRASES = 24
MAX_HOTWORDS = 24
MAX_DIGITS = 64
MAX_STATE_CHARS = 64

_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
Item = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ITEM_CHARS),
    Field(pattern=_NO_CONTROL),
]


class Expect(StrEnum):
    FREE = "free"
    DIGITS = "digits"
    YES_NO = "yes_no"
    CHOICE = "choice"


_EXPECT_TO_PROTO = {
    Expect.FREE: speech_pb2.RecognitionContext.EXPECT_UNSPECIFIED,
    Expect.DIGITS: speech_pb2.RecognitionContext.EXPECT_DIGITS,
    Expect.YES_NO: speech_pb2.RecognitionContext.EXPECT_YES_NO,
    Expect.CHOICE: speech_pb2.RecognitionContext.EXPECT_CHOICE,
}
_EXPECT_FROM_PROTO = {v: k for k, v in _EXPECT_TO_PROTO.items()}


class TurnEndMode(StrEnum):
    DEFAULT = "default"
    SEMANTIC = "semantic"
    SILENCE = "silence"


_MODE_TO_PROTO = {
    TurnEndMode.DEFAULT: speech_pb2.Endpointing.MODE_UNSPECIFIED,
    TurnEndMode.SEMANTIC: speech_pb2.Endpointing.MODE_SEMANTIC,
    TurnEndMode.SILENCE: speech_pb2.Endpointing.MODE_SILENCE,
}
_MODE_FROM_PROTO = {v: k for k, v in _MODE_TO_PROTO.items()}
MAX_TURN_END_MS = 30_000
MIN_TURN_END_MS = 50


class TurnEnd(BaseModel):
    """When a pause ends the caller's turn (a dialog state's endpointing); 0 ms: the gateway's
    default for that bound."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: TurnEndMode = TurnEndMode.DEFAULT
    min_ms: int = Field(0, ge=0, le=MAX_TURN_END_MS)
    max_ms: int = Field(0, ge=0, le=MAX_TURN_END_MS)

    @model_validator(mode="after")
    def _bounds(self) -> TurnEnd:
        if 0 < self.min_ms < MIN_TURN_END_MS:
            raise ValueError(f"min_ms must be 0 (default) or at least {MIN_TURN_END_MS}")
        if self.min_ms and self.max_ms and self.max_ms < self.min_ms:
            raise ValueError("max_ms must not be less than min_ms")
        return self


class InvalidContextError(ValueError):
    """A recognition context over a bound; the message names the field."""


class RecognitionContext(BaseModel):
    """What the caller is expected to say next. The default (all empty) is plain recognition."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: str = Field("", max_length=MAX_STATE_CHARS, pattern=_NO_CONTROL)
    expect: Expect = Expect.FREE
    min_digits: int = Field(0, ge=0, le=MAX_DIGITS, description="digits: 0 = unknown")
    max_digits: int = Field(0, ge=0, le=MAX_DIGITS, description="digits: 0 = unknown")
    choices: tuple[Item, ...] = Field((), max_length=MAX_CHOICES)
    phrases: tuple[Item, ...] = Field((), max_length=MAX_PHRASES)
    hotwords: tuple[Item, ...] = Field((), max_length=MAX_HOTWORDS)
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS, pattern=_NO_CONTROL)
    endpointing: TurnEnd = TurnEnd()

    @model_validator(mode="after")
    def _digit_bounds(self) -> RecognitionContext:
        if self.min_digits and self.max_digits and self.min_digits > self.max_digits:
            raise ValueError("min_digits must not exceed max_digits")
        return self

    @property
    def empty(self) -> bool:
        """Nothing to bias with: plain recognition."""
        return self.expect == Expect.FREE and not (
            self.choices or self.phrases or self.hotwords or self.prompt
        )

    @classmethod
    def fitted(
        cls,
        *,
        state: str = "",
        expect: Expect = Expect.FREE,
        min_digits: int = 0,
        max_digits: int = 0,
        choices: list[str] | tuple[str, ...] = (),
        phrases: list[str] | tuple[str, ...] = (),
        hotwords: list[str] | tuple[str, ...] = (),
        prompt: str = "",
        endpointing: TurnEnd | None = None,
    ) -> RecognitionContext:
        """A context from what a dialog offers, clipped to the bounds instead of refused:
        whitespace and control characters collapsed, duplicates dropped (first kept), items
        cut at a word boundary, lists and the prompt cut to their limits."""
        return cls(
            state=clean(state)[:MAX_STATE_CHARS],
            expect=expect,
            min_digits=min(max(min_digits, 0), MAX_DIGITS),
            max_digits=min(max(max_digits, 0), MAX_DIGITS),
            choices=_items(choices, MAX_CHOICES),
            phrases=_items(phrases, MAX_PHRASES),
            hotwords=_items(hotwords, MAX_HOTWORDS),
            prompt=_cut(clean(prompt), MAX_PROMPT_CHARS, keep="end"),
            endpointing=endpointing or TurnEnd(),
        )


def clean(text: str) -> str:
    """Control characters and runs of whitespace become one space."""
    return re.sub(r"[\s\x00-\x1f\x7f]+", " ", text).strip()


def _cut(text: str, limit: int, keep: str = "start") -> str:
    """At most ``limit`` characters, cut at a word boundary (the end kept for a prompt: the
    question is last)."""
    if len(text) <= limit:
        return text
    if keep == "end":
        tail = text[-limit:]
        return tail.split(" ", 1)[1] if " " in tail else tail
    head = text[: limit + 1]
    return head.rsplit(" ", 1)[0] if " " in head else head[:limit]


def _items(values: list[str] | tuple[str, ...], limit: int) -> tuple[str, ...]:
    out: list[str] = []
    seen: set[str] = set()
    for value in values:
        item = _cut(clean(value), MAX_ITEM_CHARS)
        if item and item.lower() not in seen:
            seen.add(item.lower())
            out.append(item)
        if len(out) == limit:
            break
    return tuple(out)


def context_to_proto(ctx: RecognitionContext) -> speech_pb2.RecognitionContext:
    return speech_pb2.RecognitionContext(
        state=ctx.state,
        expect=_EXPECT_TO_PROTO[ctx.expect],
        min_digits=ctx.min_digits,
        max_digits=ctx.max_digits,
        choices=list(ctx.choices),
        phrases=list(ctx.phrases),
        hotwords=list(ctx.hotwords),
        prompt=ctx.prompt,
        endpointing=speech_pb2.Endpointing(
            mode=_MODE_TO_PROTO[ctx.endpointing.mode],
            min_ms=ctx.endpointing.min_ms,
            max_ms=ctx.endpointing.max_ms,
        ),
    )


def context_from_proto(msg: speech_pb2.RecognitionContext) -> RecognitionContext:
    """Validate a received context; :class:`InvalidContextError` names the first bad field
    (``RecognitionContext.phrases[3]: String should have at most 80 characters``)."""
    expect = _EXPECT_FROM_PROTO.get(msg.expect)
    if expect is None:
        raise InvalidContextError(f"RecognitionContext.expect: unknown value {msg.expect}")
    mode = _MODE_FROM_PROTO.get(msg.endpointing.mode)
    if mode is None:
        raise InvalidContextError(
            f"RecognitionContext.endpointing.mode: unknown value {msg.endpointing.mode}"
        )
    try:
        return RecognitionContext.model_validate(
            {
                "state": msg.state,
                "expect": expect,
                "min_digits": msg.min_digits,
                "max_digits": msg.max_digits,
                "choices": tuple(msg.choices),
                "phrases": tuple(msg.phrases),
                "hotwords": tuple(msg.hotwords),
                "prompt": msg.prompt,
                # a dict, so its errors carry the field path (endpointing.min_ms)
                "endpointing": {
                    "mode": mode,
                    "min_ms": msg.endpointing.min_ms,
                    "max_ms": msg.endpointing.max_ms,
                },
            }
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "string_pattern_mismatch":
            message = "control characters are not allowed"
        raise InvalidContextError(f"RecognitionContext{where}: {message}") from None
