"""The pause set of the turn-taking benchmark: its shape, its labels, and that the scripted
caller reads every item as written (no audio)."""

from __future__ import annotations

from collections import Counter

from voicetyped_dev.caller.pauses import parse_said
from voicetyped_testkit import espeak, pause_set
from voicetyped_testkit.pause_set import COMPLETE, PAUSE_LENGTHS_MS, PAUSED, QUICK


def test_about_thirty_paused_and_fifteen_complete_turns() -> None:
    assert len(PAUSED) == 30
    assert len(COMPLETE) == 15
    assert pause_set.items() == PAUSED + COMPLETE
    assert all(i.paused for i in PAUSED) and not any(i.paused for i in COMPLETE)
    assert len({i.id for i in PAUSED + COMPLETE}) == 45


def test_every_pause_length_equally_often() -> None:
    lengths = Counter(ms for item in PAUSED for ms in item.pauses_ms)
    assert set(lengths) == set(PAUSE_LENGTHS_MS)
    assert len(set(lengths.values())) == 1
    assert all(1 <= len(i.pauses_ms) <= 2 for i in PAUSED)


def test_the_caller_reads_each_item_as_labelled() -> None:
    for item in PAUSED + COMPLETE:
        said = parse_said(item.text)
        assert said.pauses_ms == item.pauses_ms, item.id
        assert said.words == item.words


def test_complete_turns_are_the_same_words_without_pauses() -> None:
    assert {i.words for i in COMPLETE} == {i.words for i in PAUSED}
    assert all("[pause" not in i.text for i in COMPLETE)


def test_the_kinds_of_turns_callers_pause_in() -> None:
    assert {i.category for i in PAUSED} == {
        "order_number",
        "card_number",
        "address",
        "date",
        "hesitation",
        "list",
        "trailing_and",
        "yes_no",
    }


def test_voices_are_piper_and_espeak_voices_that_exist() -> None:
    labels = {v.name for v in espeak.VOICES}
    used = {i.voice for i in PAUSED + COMPLETE}
    assert "piper" in used
    assert used - {"piper"} <= labels
    assert len(used) >= 5


def test_the_quick_subset_covers_every_length_and_kind() -> None:
    assert set(QUICK) <= set(PAUSED + COMPLETE)
    paused = [i for i in QUICK if i.paused]
    assert {ms for i in paused for ms in i.pauses_ms} == set(PAUSE_LENGTHS_MS)
    assert {i.category for i in paused} == {i.category for i in PAUSED}
    assert any(not i.paused for i in QUICK)
    assert pause_set.items(quick=True) == QUICK


def test_the_set_is_fixed() -> None:
    first = PAUSED[0]
    assert first.text == "My order number is [pause 200ms] four eight two one three."
    assert first.voice == "piper"
