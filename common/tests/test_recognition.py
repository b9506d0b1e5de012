"""The recognition context contract: bounded at the boundary, clipped by the sender."""

from __future__ import annotations

import pytest
from voicetyped.recognition import (
    MAX_CHOICES,
    MAX_ITEM_CHARS,
    MAX_PHRASES,
    MAX_PROMPT_CHARS,
    Expect,
    InvalidContextError,
    RecognitionContext,
    context_from_proto,
    context_to_proto,
)
from voicetyped.v1 import speech_pb2


def test_round_trip_keeps_every_field() -> None:
    ctx = RecognitionContext(
        state="ask_number",
        expect=Expect.DIGITS,
        min_digits=4,
        max_digits=10,
        choices=("agent",),
        phrases=("where is my order",),
        hotwords=("Amelia Okafor",),
        prompt="What is your order number?",
    )
    assert context_from_proto(context_to_proto(ctx)) == ctx


def test_absent_context_is_plain_recognition() -> None:
    ctx = context_from_proto(speech_pb2.RecognitionContext())
    assert ctx.empty
    assert not RecognitionContext(expect=Expect.YES_NO).empty


@pytest.mark.parametrize(
    ("msg", "field", "problem"),
    [
        (
            speech_pb2.RecognitionContext(phrases=["ok", "x" * (MAX_ITEM_CHARS + 1)]),
            "RecognitionContext.phrases[1]",
            "at most 80 characters",
        ),
        (
            speech_pb2.RecognitionContext(choices=[f"option {i}" for i in range(MAX_CHOICES + 1)]),
            "RecognitionContext.choices",
            "at most 16 items",
        ),
        (
            speech_pb2.RecognitionContext(prompt="y" * (MAX_PROMPT_CHARS + 1)),
            "RecognitionContext.prompt",
            "at most 300 characters",
        ),
        (
            speech_pb2.RecognitionContext(hotwords=["fine", "new\nline"]),
            "RecognitionContext.hotwords[1]",
            "control characters",
        ),
        (
            speech_pb2.RecognitionContext(min_digits=8, max_digits=4),
            "RecognitionContext",
            "min_digits must not exceed max_digits",
        ),
        (
            speech_pb2.RecognitionContext(max_digits=1000),
            "RecognitionContext.max_digits",
            "less than or equal to 64",
        ),
        (
            speech_pb2.RecognitionContext(expect=42),  # type: ignore[arg-type]
            "RecognitionContext.expect",
            "unknown",
        ),
        (
            speech_pb2.RecognitionContext(phrases=["   "]),
            "RecognitionContext.phrases[0]",
            "at least 1",
        ),
    ],
)
def test_a_context_over_a_bound_is_refused_naming_the_field(
    msg: speech_pb2.RecognitionContext, field: str, problem: str
) -> None:
    with pytest.raises(InvalidContextError) as info:
        context_from_proto(msg)
    assert str(info.value).startswith(field + ":"), str(info.value)
    assert problem in str(info.value)


def test_a_huge_hostile_context_is_refused_not_truncated() -> None:
    msg = speech_pb2.RecognitionContext(phrases=["word " * 10_000] * 10_000)
    with pytest.raises(InvalidContextError):
        context_from_proto(msg)


def test_fitted_clips_what_a_dialog_offers_to_the_bounds() -> None:
    long = " ".join(f"word{i}" for i in range(60))
    ctx = RecognitionContext.fitted(
        state="s" * 100,
        expect=Expect.CHOICE,
        choices=[f"Option {i}" for i in range(40)] + ["option 1"],
        phrases=["  spaced\tout\n phrase ", "Spaced out phrase", long],
        prompt="First sentence. " * 40 + "What now?",
        max_digits=999,
    )
    assert len(ctx.choices) == MAX_CHOICES
    assert ctx.phrases[0] == "spaced out phrase"
    assert len(ctx.phrases) == 2  # the duplicate (any case) dropped
    assert len(ctx.phrases[1]) <= MAX_ITEM_CHARS and long.startswith(ctx.phrases[1])
    assert len(ctx.prompt) <= MAX_PROMPT_CHARS and ctx.prompt.endswith("What now?")
    assert ctx.max_digits == 64 and len(ctx.state) == 64
    # What the sender clips, the receiver accepts.
    assert context_from_proto(context_to_proto(ctx)) == ctx
    assert len(ctx.phrases) <= MAX_PHRASES
