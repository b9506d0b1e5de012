"""Rate limits on calls to a backend: per integration and per call (session).

Both limits are leaky buckets (aiolimiter). A :class:`~voicetyped_specs.integration.Rate`
``{rps, burst}`` maps to ``AsyncLimiter(max_rate=burst, time_period=burst / rps)``:
the bucket holds ``burst`` requests and drains at ``burst / (burst / rps) = rps``
per second, so ``burst`` requests may go at once and then ``rps`` per second
sustained (``burst: 1`` is strict pacing at ``1 / rps`` apart).

:meth:`RateLimiter.acquire` waits at most ``maxWaitMs`` *in total* for both
limits, then raises :class:`RateLimited`: a voice call is better served by a
fast "busy, try later" than by silence. The per-call limit is taken first: it
is the caller's own budget, so when the shared per-integration limit then turns
the request away, only the caller's capacity is spent, never the other calls'.
(aiolimiter cannot give capacity back.)

Per-call limiters live in a bounded LRU dict. An entry unused for longer than
its bucket takes to drain (``burst / rps``) plus ``maxWaitMs`` is evicted: a
drained bucket is the same as a new one, so that eviction loses nothing. Beyond
``max_calls`` entries the least recently used is dropped anyway (memory bound
over fairness). :meth:`RateLimiter.forget` drops a call's entry when it ends.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

from aiolimiter import AsyncLimiter
from voicetyped_specs import integration as spec

MAX_CALLS = 10_000

LimitName = Literal["perIntegration", "perCall"]


class RateLimited(Exception):  # noqa: N818 (the name other modules use)
    """No capacity within the allowed wait."""

    def __init__(
        self, integration: str, limit: LimitName, rate: spec.Rate, max_wait_ms: int
    ) -> None:
        self.integration = integration
        self.limit = limit
        self.rate = rate
        self.max_wait_ms = max_wait_ms
        subject = f"integration {integration!r}" if integration else "integration"
        super().__init__(
            f"{subject}: rate limit {limit} ({rate.rps:g} requests/s, burst {rate.burst}) "
            f"exhausted; no capacity within maxWaitMs={max_wait_ms}"
        )


def limiter_for(rate: spec.Rate) -> AsyncLimiter:
    """The leaky bucket for ``rate`` (see the module documentation for the mapping)."""
    return AsyncLimiter(max_rate=rate.burst, time_period=rate.burst / rate.rps)


class RateLimiter:
    """The rate limits of one integration. Use from one event loop."""

    def __init__(
        self,
        spec: spec.RateLimit,
        *,
        name: str = "",
        max_calls: int = MAX_CALLS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_calls < 1:
            raise ValueError(f"max_calls must be >= 1, got {max_calls!r}")
        self.spec = spec
        self.name = name
        self._max_calls = max_calls
        self._clock = clock
        self._max_wait_s = spec.max_wait_ms / 1000
        self._integration = (
            limiter_for(spec.per_integration) if spec.per_integration is not None else None
        )
        self._idle_s = (
            spec.per_call.burst / spec.per_call.rps + self._max_wait_s
            if spec.per_call is not None
            else 0.0
        )
        # call key -> (limiter, last used); least recently used first.
        self._calls: OrderedDict[str, tuple[AsyncLimiter, float]] = OrderedDict()

    def __len__(self) -> int:
        """Per-call limiters currently kept."""
        return len(self._calls)

    async def acquire(self, call_key: str) -> None:
        """Take one request's capacity from both limits, or raise RateLimited."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait_s
        if self.spec.per_call is not None:
            await self._take(self._call_limiter(call_key), "perCall", self.spec.per_call, deadline)
            self._touch(call_key)
        if self._integration is not None and self.spec.per_integration is not None:
            await self._take(
                self._integration, "perIntegration", self.spec.per_integration, deadline
            )

    def forget(self, call_key: str) -> None:
        """The call ended: drop its limiter (idempotent)."""
        self._calls.pop(call_key, None)

    async def _take(
        self, limiter: AsyncLimiter, limit: LimitName, rate: spec.Rate, deadline: float
    ) -> None:
        if limiter.has_capacity():
            await limiter.acquire()  # has capacity: returns without suspending
            return
        if deadline > asyncio.get_running_loop().time():
            try:
                async with asyncio.timeout_at(deadline):
                    await limiter.acquire()
                return
            except TimeoutError:
                pass
        raise RateLimited(self.name, limit, rate, self.spec.max_wait_ms)

    def _call_limiter(self, call_key: str) -> AsyncLimiter:
        assert self.spec.per_call is not None
        now = self._clock()
        self._evict(now)
        entry = self._calls.get(call_key)
        if entry is None:
            while len(self._calls) >= self._max_calls:
                self._calls.popitem(last=False)
            limiter = limiter_for(self.spec.per_call)
        else:
            limiter = entry[0]
        self._calls[call_key] = (limiter, now)
        self._calls.move_to_end(call_key)
        return limiter

    def _touch(self, call_key: str) -> None:
        entry = self._calls.get(call_key)
        if entry is not None:
            self._calls[call_key] = (entry[0], self._clock())
            self._calls.move_to_end(call_key)

    def _evict(self, now: float) -> None:
        while self._calls:
            key, (_, last_used) = next(iter(self._calls.items()))
            if now - last_used <= self._idle_s:
                return
            del self._calls[key]
