"""When a speech replica takes no new call (voicetyped_speech.load): the saturation rule on a
fake clock. The rule in a running gateway: test_speech_service.py; the whole stack refusing a
call with 503 while its running calls go on: tests/test_overload.py."""

from __future__ import annotations

from typing import Any

import pytest
from voicetyped_speech.load import CapacityRule, LoadMonitor


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def monitor(**rule: Any) -> tuple[LoadMonitor, Clock]:
    clock = Clock()
    return LoadMonitor(CapacityRule(**rule), workers=2, clock=clock), clock


def test_finals_decode_time_per_worker_over_the_window_is_the_load() -> None:
    load, clock = monitor(load_threshold=0.8, queue_threshold=0, window_s=5)
    load.decoded("final", 2.0)
    load.decoded("final", 2.0)
    load.decoded("partial", 10.0)  # partials are shed first: not load
    reading = load.reading()
    assert reading.load == pytest.approx(0.4)  # 4 s of 2 workers x 5 s
    assert reading.saturated is None
    clock.now += 1
    load.decoded("final", 4.0)
    assert load.reading().load == pytest.approx(0.8)
    assert load.reading().saturated == "load"
    clock.now += 4.5  # the first two decodes leave the window
    assert load.reading().load == pytest.approx(0.4)
    assert load.reading().saturated is None
    clock.now += 1
    assert load.reading().load == 0


def test_a_backlog_of_finals_refuses_only_once_it_lasts() -> None:
    load, clock = monitor(load_threshold=0, queue_threshold=2, sustain_s=2, window_s=5)

    def samples(waiting: int, seconds: float) -> None:
        for _ in range(int(seconds / 0.25)):
            load.sample(waiting, 2)
            clock.now += 0.25

    samples(5, 1.0)  # a burst that clears
    samples(0, 1.5)
    assert load.reading().saturated is None
    samples(3, 1.75)
    load.sample(3, 2)
    assert load.reading().saturated is None, "not yet 2 s"
    clock.now += 0.25
    load.sample(2, 2)
    assert load.reading().saturated == "queue"
    clock.now += 0.25
    load.sample(1, 2)  # one sample under the threshold: the backlog is clearing
    assert load.reading().saturated is None


def test_a_backlog_right_after_start_waits_for_the_sustain_period() -> None:
    load, clock = monitor(load_threshold=0, queue_threshold=1, sustain_s=2)
    load.sample(4, 2)
    clock.now += 0.5
    load.sample(4, 2)
    assert load.reading().saturated is None


def test_a_full_queue_and_the_stream_ceiling_refuse_at_once() -> None:
    load, _ = monitor(max_streams=3, load_threshold=0, queue_threshold=0)
    assert load.reading(streams=2).saturated is None
    assert load.reading(streams=3).saturated == "max_streams"
    assert load.reading(streams=0, queue_full=True).saturated == "queue_full"


def test_nothing_refuses_with_every_threshold_off() -> None:
    load, clock = monitor(max_streams=0, load_threshold=0, queue_threshold=0)
    for _ in range(20):
        load.decoded("final", 5.0)
        load.sample(50, 2)
        clock.now += 0.25
    assert load.reading(streams=1000).saturated is None


def test_busy_ratio_averages_the_samples_of_the_window() -> None:
    load, clock = monitor(window_s=1)
    assert load.reading().busy_ratio == 0
    load.sample(0, 2)
    clock.now += 0.5
    load.sample(0, 0)
    assert load.reading().busy_ratio == pytest.approx(0.5)
    clock.now += 0.75  # the first sample is out of the window
    assert load.reading().busy_ratio == 0


@pytest.mark.parametrize(
    "rule",
    [{"max_streams": -1}, {"load_threshold": -0.1}, {"window_s": 0}, {"sustain_s": -1}],
)
def test_a_nonsensical_rule_is_refused(rule: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        CapacityRule(**rule)
