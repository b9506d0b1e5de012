"""The circuit breaker's state machine, driven by a fake clock (no sleeping)."""

from __future__ import annotations

import asyncio

import pytest
from voicetyped_integration.breaker import (
    BreakerOpenError,
    BreakerState,
    CircuitBreaker,
    Permit,
)
from voicetyped_specs.integration import CircuitBreaker as BreakerSpec

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(
    clock: Clock,
    *,
    threshold: float = 0.5,
    minimum_calls: int = 4,
    window_s: float = 10,
    open_s: float = 5,
    probes: int = 2,
    probe_timeout_s: float = 60,
) -> tuple[CircuitBreaker, list[tuple[BreakerState, BreakerState]]]:
    changes: list[tuple[BreakerState, BreakerState]] = []
    spec = BreakerSpec(
        failure_rate_threshold=threshold,
        minimum_calls=minimum_calls,
        window_s=window_s,
        open_s=open_s,
        half_open_probes=probes,
    )
    breaker = CircuitBreaker(
        spec,
        clock,
        on_change=lambda old, new: changes.append((old, new)),
        name="shop",
        probe_timeout_s=probe_timeout_s,
    )
    return breaker, changes


def call(breaker: CircuitBreaker, success: bool) -> None:
    permit = breaker.allow()
    assert permit is not None
    breaker.record(permit, success)


def trip(breaker: CircuitBreaker, n: int = 4) -> None:
    for _ in range(n):
        call(breaker, False)
    assert breaker.state is OPEN


def probe(breaker: CircuitBreaker) -> Permit:
    permit = breaker.allow()
    assert permit is not None
    assert permit.probe
    return permit


def test_closed_lets_calls_through_and_counts_them() -> None:
    breaker, changes = make(Clock())
    assert breaker.state is CLOSED
    call(breaker, True)
    call(breaker, False)
    assert breaker.window() == (2, 1)
    assert breaker.state is CLOSED
    assert breaker.retry_after_s() == 0
    assert changes == []


def test_opens_at_the_failure_rate_once_minimum_calls_are_in() -> None:
    breaker, changes = make(Clock(), threshold=0.5, minimum_calls=4)
    for _ in range(3):
        call(breaker, False)  # 100 % failures, but fewer than minimum_calls
    assert breaker.state is CLOSED
    call(breaker, True)  # 4 calls, 3 failed: 75 % >= 50 %
    assert breaker.state is OPEN
    assert changes == [(CLOSED, OPEN)]
    assert breaker.allow() is None


def test_stays_closed_below_the_threshold() -> None:
    breaker, _ = make(Clock(), threshold=0.5, minimum_calls=4)
    for success in [True, True, True, False, True, False, True]:
        call(breaker, success)
    assert breaker.window() == (7, 2)
    assert breaker.state is CLOSED
    call(breaker, False)
    call(breaker, False)  # 4 of 9
    assert breaker.state is CLOSED
    call(breaker, False)  # 5 of 10: exactly the threshold opens
    assert breaker.state is OPEN


def test_window_slides_old_outcomes_out() -> None:
    clock = Clock()
    breaker, _ = make(clock, minimum_calls=4, window_s=10)
    for _ in range(3):
        call(breaker, False)
    clock.advance(9)
    assert breaker.window() == (3, 3)  # still inside the window
    clock.advance(2)  # 11 s later: they slid out
    assert breaker.window() == (0, 0)
    call(breaker, False)  # one failure alone is below minimum_calls
    assert breaker.state is CLOSED
    clock.advance(5)
    for _ in range(3):
        call(breaker, False)  # all four within 10 s now
    assert breaker.state is OPEN


def test_window_memory_is_bounded() -> None:
    clock = Clock()
    breaker, _ = make(clock, minimum_calls=1_000_000, window_s=10)
    for _ in range(20_000):
        call(breaker, True)
        clock.advance(0.001)
    calls, failures = breaker.window()
    assert 10_000 <= calls <= 10_100  # window_s, plus at most one bucket
    assert failures == 0
    assert len(breaker._buckets) <= 101


def test_open_rejects_until_open_s_then_half_opens() -> None:
    clock = Clock()
    breaker, changes = make(clock, open_s=5)
    trip(breaker)
    assert breaker.retry_after_s() == pytest.approx(5)
    clock.advance(3)
    assert breaker.allow() is None
    assert breaker.retry_after_s() == pytest.approx(2)
    expected = r"circuit breaker 'shop' is open; retry in 2\.0 s"
    with pytest.raises(BreakerOpenError, match=expected) as caught, breaker.guard():
        pass
    assert caught.value.retry_after_s == pytest.approx(2)
    clock.advance(2)
    assert breaker.state is HALF_OPEN
    assert breaker.retry_after_s() == 0
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_half_open_admits_limited_probes_and_closes_when_all_succeed() -> None:
    clock = Clock()
    breaker, changes = make(clock, probes=2)
    trip(breaker)
    clock.advance(5)
    first, second = probe(breaker), probe(breaker)
    assert breaker.allow() is None  # both probe slots in flight
    with pytest.raises(BreakerOpenError, match="half-open"), breaker.guard():
        pass
    first.record(True)
    assert breaker.state is HALF_OPEN
    assert breaker.allow() is None  # a success uses its slot up: 2 probes in all
    second.record(True)
    assert breaker.state is CLOSED
    assert breaker.window() == (0, 0)  # a fresh window
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    permit = breaker.allow()
    assert permit is not None
    assert not permit.probe


def test_a_failed_probe_reopens_for_a_new_period() -> None:
    clock = Clock()
    breaker, changes = make(clock, open_s=5, probes=2)
    trip(breaker)
    clock.advance(5)
    first, second = probe(breaker), probe(breaker)
    first.record(True)
    clock.advance(1)
    second.record(False)
    assert breaker.state is OPEN
    assert breaker.retry_after_s() == pytest.approx(5)  # counted from the failure
    assert changes[-2:] == [(OPEN, HALF_OPEN), (HALF_OPEN, OPEN)]
    clock.advance(5)
    assert breaker.state is HALF_OPEN


def test_a_released_probe_gives_its_slot_back() -> None:
    clock = Clock()
    breaker, _ = make(clock, probes=1)
    trip(breaker)
    clock.advance(5)
    permit = probe(breaker)
    assert breaker.allow() is None
    permit.release()
    again = probe(breaker)
    again.record(True)
    assert breaker.state is CLOSED


async def test_a_cancelled_probe_in_guard_does_not_wedge_the_breaker() -> None:
    clock = Clock()
    breaker, _ = make(clock, probes=1)
    trip(breaker)
    clock.advance(5)
    started = asyncio.Event()

    async def hanging_call() -> None:
        with breaker.guard() as permit:
            assert permit.probe
            started.set()
            await asyncio.Event().wait()  # a backend that never answers

    task = asyncio.create_task(hanging_call())
    await started.wait()
    assert breaker.allow() is None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is HALF_OPEN
    with breaker.guard() as permit:
        permit.record(True)
    assert breaker.state is CLOSED


def test_an_exception_escaping_guard_releases_the_permit() -> None:
    clock = Clock()
    breaker, _ = make(clock, probes=1)
    trip(breaker)
    clock.advance(5)
    with pytest.raises(RuntimeError), breaker.guard():
        raise RuntimeError("unclassified")
    assert breaker.state is HALF_OPEN
    assert breaker.allow() is not None


def test_a_leaked_probe_counts_as_failed_after_probe_timeout() -> None:
    clock = Clock()
    breaker, changes = make(clock, probes=1, probe_timeout_s=30)
    trip(breaker)
    clock.advance(5)
    probe(breaker)  # never recorded nor released
    clock.advance(29)
    assert breaker.allow() is None
    assert breaker.state is HALF_OPEN
    clock.advance(1)
    assert breaker.state is OPEN
    clock.advance(5)
    probe(breaker).record(True)
    assert breaker.state is CLOSED
    assert changes.count((HALF_OPEN, OPEN)) == 1


def test_outcomes_of_permits_from_an_earlier_state_are_ignored() -> None:
    clock = Clock()
    breaker, _ = make(clock, minimum_calls=2, probes=1)
    slow = breaker.allow()  # issued while closed
    assert slow is not None
    call(breaker, False)
    call(breaker, False)
    assert breaker.state is OPEN
    clock.advance(5)
    assert breaker.state is HALF_OPEN
    slow.record(True)  # must not count as the probe
    assert breaker.state is HALF_OPEN
    probe(breaker).record(True)
    assert breaker.state is CLOSED
    slow.record(False)  # a second report is ignored too
    assert breaker.window() == (0, 0)


def test_a_permit_reports_once() -> None:
    breaker, _ = make(Clock(), minimum_calls=1, threshold=1.0)
    permit = breaker.allow()
    assert permit is not None
    permit.record(True)
    permit.record(False)
    permit.release()
    assert permit.done
    assert breaker.window() == (1, 0)
    assert breaker.state is CLOSED


def test_a_permit_belongs_to_its_breaker() -> None:
    one, _ = make(Clock())
    other, _ = make(Clock())
    permit = one.allow()
    assert permit is not None
    with pytest.raises(ValueError, match="another circuit breaker"):
        other.record(permit, True)


def test_a_failing_on_change_callback_does_not_break_the_breaker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom(old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("metrics down")

    spec = BreakerSpec(minimum_calls=1, failure_rate_threshold=1.0)
    breaker = CircuitBreaker(spec, Clock(), on_change=boom, name="shop")
    call(breaker, False)
    assert breaker.state is OPEN
    assert "on_change callback failed" in caplog.text


def test_spec_defaults_and_aliases() -> None:
    spec = BreakerSpec.model_validate(
        {"failureRateThreshold": 0.25, "minimumCalls": 2, "openSeconds": 1, "halfOpenProbes": 1}
    )
    clock = Clock()
    breaker = CircuitBreaker(spec, clock)
    call(breaker, True)
    call(breaker, True)
    call(breaker, True)
    call(breaker, False)  # 1 of 4 = 25 %
    assert breaker.state is OPEN
    clock.advance(1)
    probe(breaker).record(True)
    assert breaker.state is CLOSED


def test_probe_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="probe_timeout_s"):
        CircuitBreaker(BreakerSpec(), Clock(), probe_timeout_s=0)
