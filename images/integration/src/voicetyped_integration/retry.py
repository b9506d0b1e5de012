"""Retry policy: what may be retried, and how long to wait before the next attempt.

- **Backoff** is exponential with *full jitter*: before attempt ``n + 1`` wait
  ``uniform(0, min(maxBackoff, initialBackoff * 2**(n - 1)))``. Full jitter
  spreads the retries of many calls hit by the same outage, so a recovering
  backend is not hit by synchronized waves.
- **Retry-After** (on 429/503) is honoured as a lower bound on the wait, in
  both of its forms (delta-seconds and HTTP-date).
- **The deadline wins**: :func:`next_delay_s` answers ``None`` when the wait
  would not leave time for another attempt within the call's remaining time.
- **Only safe repeats**: :func:`may_retry` allows retries of idempotent
  operations, or of any operation that sends an idempotency key (the backend
  deduplicates). A connect error before the request was sent is always safe to
  retry; telling that apart is the caller's business.

Not built on tenacity: its ``wait_random_exponential`` is the same formula but
draws from the global ``random`` module (no seeded generator for tests) and
wants a ``RetryCallState``; and the gateway's retry loop must consult the
circuit breaker, the rate limiter, the deadline and Retry-After between
attempts, which reads more plainly as an explicit loop than as tenacity
callbacks. What is left is the few lines below.
"""

from __future__ import annotations

import math
import random
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from voicetyped_specs import integration as spec

RETRYABLE_4XX = frozenset({408, 429})
"""Request Timeout and Too Many Requests: the same request may succeed later."""

PERMANENT_5XX = frozenset({501, 505, 506, 508, 510, 511})
"""5xx that describe the server's configuration, not a passing condition: Not
Implemented, HTTP Version Not Supported, Variant Also Negotiates, Loop Detected,
Not Extended, Network Authentication Required. Retrying them only adds load."""

_DELTA_SECONDS = re.compile(r"\d+(\.\d+)?")


def backoff_s(attempt: int, retry: spec.Retry, rng: random.Random | None = None) -> float:
    """Full-jitter wait after failed attempt number ``attempt`` (1-based), in seconds."""
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt!r}")
    # Integer milliseconds: no float overflow however large the attempt number.
    cap_ms = min(retry.max_backoff_ms, retry.initial_backoff_ms * 2 ** min(attempt - 1, 64))
    return (rng or random).uniform(0, cap_ms / 1000)


def retry_after_s(header: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait per a ``Retry-After`` header; None if absent or unparsable.

    ``delta-seconds`` (``"120"``; a fraction such as ``"1.5"`` is accepted too) or
    an HTTP-date (``"Wed, 21 Oct 2015 07:28:00 GMT"``, compared with ``now``,
    default the current UTC time). A date in the past means 0.
    """
    if header is None:
        return None
    value = header.strip()
    if not value:
        return None
    if _DELTA_SECONDS.fullmatch(value):
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC per RFC 5322
        when = when.replace(tzinfo=UTC)
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def retryable_status(status: int) -> bool:
    """408, 429, and 5xx except the permanent ones (see :data:`PERMANENT_5XX`)."""
    if status in RETRYABLE_4XX:
        return True
    return 500 <= status <= 599 and status not in PERMANENT_5XX


def may_retry(idempotent: bool, has_key: bool) -> bool:
    """A request that reached the backend may be repeated only if that is harmless."""
    return idempotent or has_key


def next_delay_s(
    attempt: int,
    retry: spec.Retry,
    retry_after_header: str | None,
    remaining_s: float | None,
    *,
    rng: random.Random | None = None,
    reserve_s: float = 0.0,
    now: datetime | None = None,
) -> float | None:
    """How long to wait before the next attempt, or None: give up now.

    ``attempt`` is the number of attempts made so far (1-based). None when the
    attempts are used up (``maxAttempts``) or when the wait plus ``reserve_s``
    (the least time an attempt needs to be worth making) does not fit in
    ``remaining_s`` (None: no deadline). The wait is the full-jitter backoff,
    raised to the Retry-After value when the backend sent one: the backend
    said when it will be ready, and sooner would only be refused again.
    """
    if attempt >= retry.max_attempts:
        return None
    delay = backoff_s(attempt, retry, rng)
    server_wait = retry_after_s(retry_after_header, now)
    if server_wait is not None:
        delay = max(delay, server_wait)
    if remaining_s is not None and delay + reserve_s >= remaining_s:
        return None
    return delay
