"""A circuit breaker per integration: stop calling a backend that keeps failing.

A voice call cannot wait on a broken backend, so once a backend fails often
enough the gateway answers "unavailable" at once instead of spending the
caller's time on timeouts, and gives the backend room to recover.

States (:class:`BreakerState`):

- **closed**: every call is let through; outcomes go into a sliding time window
  of ``window_s``. Once the window holds at least ``minimum_calls`` outcomes and
  the failure rate is ``>= failure_rate_threshold``, the breaker **opens**.
- **open**: nothing is let through for ``open_s``; :meth:`CircuitBreaker.retry_after_s`
  says how long is left. Then the breaker is **half-open** (checked lazily, on
  the next :meth:`~CircuitBreaker.allow`, :attr:`~CircuitBreaker.state` or
  :meth:`~CircuitBreaker.retry_after_s`: no timers, no tasks).
- **half_open**: up to ``half_open_probes`` probe calls are let through. When
  that many probes have succeeded the breaker **closes** (with an empty window);
  the first probe that fails **opens** it again for a new ``open_s``.

Usage: one :class:`Permit` per attempt, and the caller says how it went, because
only the caller knows what counts as a failure (a 503 or a timeout does; a 404
answered as ``not_found`` does not)::

    with breaker.guard() as permit:   # BreakerOpenError if the call is not allowed
        response = await send()
        permit.record(success=response.status < 500)

or without the context manager: ``permit = breaker.allow()`` (``None`` when not
allowed), then exactly one of ``permit.record(success)`` /
``breaker.record(permit, success)`` or ``permit.release()``.

A permit that leaves :meth:`CircuitBreaker.guard` without an outcome (the task
was cancelled, an exception escaped before it was classified) is *released*:
it counts neither way and gives its probe slot back, so a cancelled probe
cannot wedge the breaker in half-open. As a last line of defence against a
permit that is leaked outright, a half-open probe still outstanding after
``probe_timeout_s`` counts as failed (the breaker reopens, and later half-opens
again with fresh slots). Outcomes of permits issued before the latest state
change are ignored: a slow call started while closed must not decide a
half-open trial.

Window accounting is bucketed (``window_s / 100`` per bucket), so memory stays
bounded at any request rate: an outcome counts for at least ``window_s`` and at
most ``window_s * 1.01``.

Why not a library: pybreaker, aiobreaker, circuitbreaker and purgatory all trip
on a count of (consecutive) failures, not on a failure *rate* over a time
window with a minimum number of calls, and none limits the number of
concurrent half-open probes (pybreaker admits one trial call; aiobreaker has
had no release since 2021). Bending one of them to this spec would take more
code than the state machine below. Not thread-safe: use it from one event loop.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum

from voicetyped_specs import integration as spec

log = logging.getLogger(__name__)

BUCKETS_PER_WINDOW = 100
PROBE_TIMEOUT_S = 60.0


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


OnChange = Callable[[BreakerState, BreakerState], None]
"""Called as ``on_change(old, new)`` on every state change (metrics, logs)."""


class BreakerOpenError(Exception):
    """The breaker did not let the call through (open, or half-open with no probe slot)."""

    def __init__(self, name: str, state: BreakerState, retry_after_s: float) -> None:
        self.name = name
        self.state = state
        self.retry_after_s = retry_after_s
        subject = f"circuit breaker {name!r}" if name else "circuit breaker"
        if state is BreakerState.OPEN:
            detail = f"is open; retry in {retry_after_s:.1f} s"
        else:
            detail = "is half-open and all its probe calls are in flight"
        super().__init__(f"{subject} {detail}")


class Permit:
    """Leave to make one call; report its outcome exactly once (later reports are ignored)."""

    __slots__ = ("_breaker", "_done", "_generation", "issued_at", "probe")

    def __init__(
        self, breaker: CircuitBreaker, generation: int, probe: bool, issued_at: float
    ) -> None:
        self._breaker = breaker
        self._generation = generation
        self._done = False
        self.probe = probe
        """True for a half-open trial call."""
        self.issued_at = issued_at

    @property
    def done(self) -> bool:
        """The outcome was recorded or the permit released."""
        return self._done

    def record(self, success: bool) -> None:
        self._breaker.record(self, success)

    def release(self) -> None:
        """Give the permit back without an outcome (no-op once recorded)."""
        self._breaker.release(self)


class _Bucket:
    __slots__ = ("failures", "index", "total")

    def __init__(self, index: int) -> None:
        self.index = index
        self.total = 0
        self.failures = 0


class CircuitBreaker:
    """See the module documentation. ``clock`` is monotonic seconds (a fake in tests)."""

    def __init__(
        self,
        spec: spec.CircuitBreaker,
        clock: Callable[[], float] = time.monotonic,
        *,
        on_change: OnChange | None = None,
        name: str = "",
        probe_timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        if not probe_timeout_s > 0:
            raise ValueError(f"probe_timeout_s must be > 0, got {probe_timeout_s!r}")
        self.spec = spec
        self.name = name
        self.on_change = on_change
        self._clock = clock
        self._probe_timeout_s = probe_timeout_s
        self._bucket_s = spec.window_s / BUCKETS_PER_WINDOW
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._buckets: deque[_Bucket] = deque()
        self._total = 0
        self._failures = 0
        self._opened_at = 0.0
        self._probes: set[Permit] = set()
        self._probe_successes = 0

    # ---- queries ---------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        self._advance(self._clock())
        return self._state

    def retry_after_s(self) -> float:
        """Seconds until the breaker half-opens; 0 unless it is open."""
        now = self._clock()
        self._advance(now)
        if self._state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self.spec.open_s - now)
        return 0.0

    def window(self) -> tuple[int, int]:
        """``(calls, failures)`` currently in the closed-state window."""
        self._prune(self._clock())
        return self._total, self._failures

    # ---- permits ---------------------------------------------------------------

    def allow(self) -> Permit | None:
        """A permit for one call, or None if the breaker does not let it through."""
        now = self._clock()
        self._advance(now)
        if self._state is BreakerState.CLOSED:
            return Permit(self, self._generation, probe=False, issued_at=now)
        if self._state is BreakerState.OPEN:
            return None
        if len(self._probes) + self._probe_successes >= self.spec.half_open_probes:
            return None
        permit = Permit(self, self._generation, probe=True, issued_at=now)
        self._probes.add(permit)
        return permit

    @contextmanager
    def guard(self) -> Iterator[Permit]:
        """A permit for the block; BreakerOpenError if none. Unreported permits are released."""
        permit = self.allow()
        if permit is None:
            raise BreakerOpenError(self.name, self._state, self.retry_after_s())
        try:
            yield permit
        finally:
            permit.release()

    def record(self, permit: Permit, success: bool) -> None:
        """The outcome of the call ``permit`` was issued for."""
        if permit._breaker is not self:
            raise ValueError("permit was issued by another circuit breaker")
        if permit._done:
            return
        permit._done = True
        now = self._clock()
        self._advance(now)
        if permit._generation != self._generation:
            return  # issued before the latest state change: says nothing about now
        if permit.probe:
            self._probes.discard(permit)
            if not success:
                self._transition(BreakerState.OPEN, now)
                return
            self._probe_successes += 1
            if self._probe_successes >= self.spec.half_open_probes:
                self._transition(BreakerState.CLOSED, now)
            return
        self._add_outcome(now, success)
        if (
            self._total >= self.spec.minimum_calls
            and self._failures / self._total >= self.spec.failure_rate_threshold
        ):
            self._transition(BreakerState.OPEN, now)

    def release(self, permit: Permit) -> None:
        """Give ``permit`` back without an outcome (no-op once recorded)."""
        if permit._breaker is not self:
            raise ValueError("permit was issued by another circuit breaker")
        if permit._done:
            return
        permit._done = True
        if permit.probe and permit._generation == self._generation:
            self._probes.discard(permit)

    # ---- internals -------------------------------------------------------------

    def _advance(self, now: float) -> None:
        if self._state is BreakerState.OPEN:
            if now >= self._opened_at + self.spec.open_s:
                self._transition(BreakerState.HALF_OPEN, now)
        elif self._state is BreakerState.HALF_OPEN and any(
            now - probe.issued_at >= self._probe_timeout_s for probe in self._probes
        ):
            self._transition(BreakerState.OPEN, now)  # a lost probe counts as failed

    def _prune(self, now: float) -> None:
        horizon = now - self.spec.window_s
        while self._buckets and (self._buckets[0].index + 1) * self._bucket_s <= horizon:
            old = self._buckets.popleft()
            self._total -= old.total
            self._failures -= old.failures

    def _add_outcome(self, now: float, success: bool) -> None:
        self._prune(now)
        index = math.floor(now / self._bucket_s)
        if not self._buckets or self._buckets[-1].index < index:
            self._buckets.append(_Bucket(index))
        bucket = self._buckets[-1]  # the clock never goes back; if it did, the newest bucket
        bucket.total += 1
        self._total += 1
        if not success:
            bucket.failures += 1
            self._failures += 1

    def _transition(self, new: BreakerState, now: float) -> None:
        old, self._state = self._state, new
        self._generation += 1
        self._probes.clear()
        self._probe_successes = 0
        if new is BreakerState.OPEN:
            self._opened_at = now
        elif new is BreakerState.CLOSED:
            self._buckets.clear()
            self._total = self._failures = 0
        if self.on_change is not None:
            try:
                self.on_change(old, new)
            except Exception:
                log.exception("circuit breaker %r: on_change callback failed", self.name)
