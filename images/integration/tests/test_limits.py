"""Rate limits: per integration, per call, bounded waits and per-call limiter eviction.

The limiters run on the event loop's clock, so the waiting tests use real time,
with rates slow enough that the margins are tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from voicetyped_integration.limits import RateLimited, RateLimiter, limiter_for
from voicetyped_specs.integration import Rate, RateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_maps_to_a_bucket_of_burst_draining_at_rps() -> None:
    limiter = limiter_for(Rate(rps=10, burst=5))
    assert limiter.max_rate == 5
    assert limiter.time_period == pytest.approx(0.5)  # 5 per 0.5 s = 10 per second


async def test_no_limits_configured_means_no_waiting_and_no_state() -> None:
    limiter = RateLimiter(RateLimit(max_wait_ms=0))
    for n in range(100):
        await limiter.acquire(f"call-{n}")
    assert len(limiter) == 0


async def test_per_integration_limit_allows_the_burst_then_fails_fast() -> None:
    spec = RateLimit(per_integration=Rate(rps=1, burst=3), max_wait_ms=0)
    limiter = RateLimiter(spec, name="shop")
    for n in range(3):
        await limiter.acquire(f"call-{n}")  # different calls share the integration's limit
    started = time.monotonic()
    with pytest.raises(RateLimited) as caught:
        await limiter.acquire("call-9")
    assert time.monotonic() - started < 0.05
    assert str(caught.value) == (
        "integration 'shop': rate limit perIntegration (1 requests/s, burst 3) exhausted; "
        "no capacity within maxWaitMs=0"
    )
    assert caught.value.limit == "perIntegration"
    assert caught.value.rate == Rate(rps=1, burst=3)


async def test_per_call_limit_applies_to_each_call_separately() -> None:
    spec = RateLimit(per_call=Rate(rps=2, burst=1), max_wait_ms=0)
    limiter = RateLimiter(spec)
    await limiter.acquire("call-a")
    with pytest.raises(RateLimited, match=r"rate limit perCall \(2 requests/s, burst 1\)"):
        await limiter.acquire("call-a")
    await limiter.acquire("call-b")  # another call has its own budget
    assert len(limiter) == 2


async def test_waits_for_capacity_within_max_wait() -> None:
    spec = RateLimit(per_integration=Rate(rps=10, burst=1), max_wait_ms=500)
    limiter = RateLimiter(spec)
    await limiter.acquire("a")
    started = time.monotonic()
    await limiter.acquire("a")  # the next token drips in after 100 ms
    elapsed = time.monotonic() - started
    assert 0.08 <= elapsed < 0.4


async def test_fails_after_max_wait_when_capacity_comes_too_late() -> None:
    spec = RateLimit(per_integration=Rate(rps=1, burst=1), max_wait_ms=100)
    limiter = RateLimiter(spec)
    await limiter.acquire("a")
    started = time.monotonic()
    with pytest.raises(RateLimited, match="maxWaitMs=100"):
        await limiter.acquire("a")  # the next token is 1 s away
    elapsed = time.monotonic() - started
    assert 0.09 <= elapsed < 0.4


async def test_max_wait_bounds_both_limits_together() -> None:
    spec = RateLimit(
        per_integration=Rate(rps=2.5, burst=2),  # a token every 400 ms
        per_call=Rate(rps=5, burst=1),  # a token every 200 ms
        max_wait_ms=300,
    )
    limiter = RateLimiter(spec)
    await limiter.acquire("a")
    await limiter.acquire("b")  # the integration's bucket is now full
    started = time.monotonic()
    with pytest.raises(RateLimited) as caught:
        # ~200 ms for call a's own limit, then the integration's would need ~200 ms
        # more: past the 300 ms budget, which is for both limits, not each.
        await limiter.acquire("a")
    elapsed = time.monotonic() - started
    assert caught.value.limit == "perIntegration"
    assert 0.28 <= elapsed < 0.45


async def test_many_waiters_each_get_capacity_or_a_clear_refusal() -> None:
    spec = RateLimit(per_integration=Rate(rps=20, burst=2), max_wait_ms=120)
    limiter = RateLimiter(spec)
    results = await asyncio.gather(
        *(limiter.acquire(f"call-{n}") for n in range(10)), return_exceptions=True
    )
    passed = sum(r is None for r in results)
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert passed + len(refused) == 10
    # 2 at once plus one every 50 ms for 120 ms: 4 (5 with timer slack), never all 10.
    assert 3 <= passed <= 5


async def test_idle_per_call_limiters_are_evicted() -> None:
    clock = Clock()
    spec = RateLimit(per_call=Rate(rps=10, burst=1), max_wait_ms=0)  # drains in 100 ms
    limiter = RateLimiter(spec, clock=clock)
    await limiter.acquire("a")
    await limiter.acquire("b")
    assert len(limiter) == 2
    clock.now = 0.05
    await limiter.acquire("c")  # a and b are not idle for long enough yet
    assert len(limiter) == 3
    clock.now = 0.12
    await limiter.acquire("d")  # a and b drained and idle: gone; c (at 0.05) stays
    assert len(limiter) == 2
    limiter.forget("c")
    limiter.forget("c")
    limiter.forget("never-seen")
    assert len(limiter) == 1


async def test_per_call_limiters_are_bounded() -> None:
    spec = RateLimit(per_call=Rate(rps=0.1, burst=1), max_wait_ms=0)
    limiter = RateLimiter(spec, max_calls=2)
    await limiter.acquire("a")
    await limiter.acquire("b")
    with pytest.raises(RateLimited):
        await limiter.acquire("b")
    await limiter.acquire("c")  # evicts a, the least recently used
    assert len(limiter) == 2
    await limiter.acquire("a")  # a fresh limiter for a: the memory bound wins over fairness
    with pytest.raises(RateLimited):
        await limiter.acquire("c")


def test_max_calls_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_calls"):
        RateLimiter(RateLimit(), max_calls=0)
