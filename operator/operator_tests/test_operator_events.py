"""Event messages fit the API server's limit (1,024 bytes); status keeps the full text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from voicetyped_operator import conditions, events
from voicetyped_operator.models.status import Condition


def test_a_message_that_fits_is_kept() -> None:
    assert events.fit("Dialog default/x: no way out of state 'greet'") == (
        "Dialog default/x: no way out of state 'greet'"
    )
    exactly = "é" * 512  # 1,024 bytes
    assert events.fit(exactly) == exactly


def test_multibyte_text_under_1024_characters_is_cut_by_bytes() -> None:
    message = "unknown intent '" + "€" * 700 + "'"  # 717 characters, 2,117 bytes
    cut = events.fit(message)
    assert len(cut.encode()) <= events.MESSAGE_LIMIT_BYTES
    assert cut.endswith(events.CUT_NOTE)
    assert message.startswith(cut.removesuffix(events.CUT_NOTE))


def test_a_lone_surrogate_counts_as_what_the_server_stores() -> None:
    cut = events.fit("bad \ud800 name")
    cut.encode()  # encodable: no lone surrogate left
    assert cut == "bad ? name"


@given(st.text(min_size=0, max_size=3000))
def test_any_text_fits(message: str) -> None:
    cut = events.fit(message)
    assert len(cut.encode()) <= events.MESSAGE_LIMIT_BYTES
    if cut.endswith(events.CUT_NOTE):
        kept = cut.removesuffix(events.CUT_NOTE)
        safe = message.encode("utf-8", "replace").decode()
        assert safe.startswith(kept)


@pytest.mark.parametrize("size", [10, conditions.MAX_MESSAGE, conditions.MAX_MESSAGE + 1, 10**6])
def test_condition_messages_stay_within_the_schema(size: int) -> None:
    message = "x" * size
    (ready, _, stalled) = conditions.merge([], 1, conditions.stalled("InvalidDialog", message))
    for cond in (ready, stalled):
        assert len(cond.message) <= conditions.MAX_MESSAGE
        Condition.model_validate(cond.model_dump())  # the CRD's maxLength, as pydantic checks it
        if size <= conditions.MAX_MESSAGE:
            assert cond.message == message
        else:
            assert cond.message.endswith(
                f"({size - (conditions.MAX_MESSAGE - 64)} more characters not shown)"
            )
