"""Retry policy: full-jitter bounds, Retry-After in both forms, what may be retried, deadlines."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from voicetyped_integration.retry import (
    backoff_s,
    may_retry,
    next_delay_s,
    retry_after_s,
    retryable_status,
)
from voicetyped_specs.integration import Retry

RETRY = Retry(max_attempts=5, initial_backoff_ms=100, max_backoff_ms=1000)
NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempt", "cap_s"), [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (30, 1.0), (500, 1.0)]
)
def test_full_jitter_stays_within_the_exponential_cap(attempt: int, cap_s: float) -> None:
    rng = random.Random(attempt)
    waits = [backoff_s(attempt, RETRY, rng) for _ in range(2000)]
    assert all(0 <= w <= cap_s for w in waits)
    # Full jitter: the whole range is used, not just the top of it.
    assert min(waits) < cap_s * 0.05
    assert max(waits) > cap_s * 0.95
    assert sum(waits) / len(waits) == pytest.approx(cap_s / 2, rel=0.1)


def test_backoff_is_reproducible_with_a_seeded_rng_and_uses_random_by_default() -> None:
    assert backoff_s(3, RETRY, random.Random(7)) == backoff_s(3, RETRY, random.Random(7))
    assert 0 <= backoff_s(3, RETRY) <= 0.4


def test_backoff_attempts_are_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        backoff_s(0, RETRY)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        (None, None),
        ("", None),
        ("-5", None),
        ("soon", None),
        ("1e3", None),
        ("nan", None),
        ("9" * 400, None),  # overflows to infinity
        ("Tue, 24 Nov 2026 12:00:30 GMT", 30.0),
        ("Tue, 24 Nov 2026 12:00:30 +0000", 30.0),
        ("Tue, 24 Nov 2026 13:00:30 +0100", 30.0),
        ("Tue, 24 Nov 2026 12:00:30 -0000", 30.0),  # naive: read as UTC
        ("Tue, 24 Nov 2026 11:59:00 GMT", 0.0),  # in the past
        ("Tue, 31 Feb 2026 12:00:30 GMT", None),
    ],
)
def test_retry_after_both_forms(header: str | None, expected: float | None) -> None:
    assert retry_after_s(header, NOW) == expected


def test_retry_after_date_against_the_real_clock_and_a_naive_now() -> None:
    later = datetime.now(UTC) + timedelta(seconds=60)
    seconds = retry_after_s(format_datetime(later, usegmt=True))
    assert seconds is not None
    assert 55 <= seconds <= 60
    naive_now = NOW.replace(tzinfo=None)
    assert retry_after_s("Tue, 24 Nov 2026 12:00:10 GMT", naive_now) == 10.0


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, False),
        (400, False),
        (404, False),
        (409, False),
        (408, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (507, True),
        (501, False),
        (505, False),
        (511, False),
        (600, False),
    ],
)
def test_retryable_status(status: int, expected: bool) -> None:
    assert retryable_status(status) is expected


def test_only_idempotent_or_keyed_requests_may_be_retried() -> None:
    assert may_retry(idempotent=True, has_key=False)
    assert may_retry(idempotent=False, has_key=True)
    assert may_retry(idempotent=True, has_key=True)
    assert not may_retry(idempotent=False, has_key=False)


def test_next_delay_is_the_backoff_when_it_fits() -> None:
    delay = next_delay_s(2, RETRY, None, remaining_s=5.0, rng=random.Random(1))
    assert delay == backoff_s(2, RETRY, random.Random(1))
    assert next_delay_s(2, RETRY, None, remaining_s=None) is not None


def test_next_delay_gives_up_after_max_attempts() -> None:
    assert next_delay_s(4, RETRY, None, remaining_s=60) is not None
    assert next_delay_s(5, RETRY, None, remaining_s=60) is None
    assert next_delay_s(1, Retry(max_attempts=1), None, remaining_s=60) is None


def test_next_delay_honours_retry_after_as_a_floor() -> None:
    assert next_delay_s(1, RETRY, "2", remaining_s=10) == 2.0
    assert next_delay_s(1, RETRY, "Tue, 24 Nov 2026 12:00:03 GMT", 10, now=NOW) == 3.0
    # A Retry-After shorter than the backoff does not shorten it.
    slow = Retry(initial_backoff_ms=5000, max_backoff_ms=5000)
    delay = next_delay_s(1, slow, "0", remaining_s=10, rng=random.Random(3))
    assert delay == backoff_s(1, slow, random.Random(3))
    # Unparsable: ignored.
    assert next_delay_s(1, RETRY, "whenever", remaining_s=10) is not None


def test_next_delay_none_when_the_wait_does_not_fit_the_deadline() -> None:
    assert next_delay_s(1, RETRY, "2", remaining_s=1.5) is None
    assert next_delay_s(1, RETRY, "2", remaining_s=2.0) is None  # no time left to try
    assert next_delay_s(1, RETRY, "2", remaining_s=2.5) == 2.0
    assert next_delay_s(1, RETRY, "2", remaining_s=2.5, reserve_s=0.5) is None
    assert next_delay_s(1, RETRY, None, remaining_s=0) is None
    # The jittered backoff never exceeds 0.1 s on attempt 1: always fits in 0.2 s.
    rng = random.Random(5)
    assert all(next_delay_s(1, RETRY, None, 0.2, rng=rng) is not None for _ in range(200))
