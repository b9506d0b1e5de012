"""Per-source scanner and flood defence: token buckets, temporary bans, call ceilings.

Pure bookkeeping (no I/O, no event loop; the clock is injected) so every rule is unit-tested
with a fake clock; :mod:`.gate` puts it in front of the SIP stack, with metrics and logs.

- **Rate**: each source address has a token bucket (``requests_per_s``, ``burst``); a request
  without a token is refused (the gate answers 503 with Retry-After).
- **Bans**: ``ban_after`` refusals in a row (the count starts again when the bucket is full),
  or ``failures_before_ban`` digest failures (reset by a success), ban the source for
  ``ban_s``; everything it sends meanwhile is dropped unread.
- **Memory**: at most ``max_sources`` sources are tracked, least recently seen forgotten
  first. A banned source that keeps sending stays recent; one that went quiet may be forgotten
  (and would start from a full bucket if it came back).
- **Exempt networks** (carrier trunks) are never tracked, limited or banned.
- **Call ceilings** (:class:`CallCeiling`): calls at once per key (a source, a route).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from voicetyped_media.config import SipRateLimit

Clock = Callable[[], float]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Verdict(StrEnum):
    ALLOW = "allow"
    RATE_LIMITED = "rate_limited"  # no token: refuse (503 with Retry-After)
    BANNED = "banned"  # drop unread


class BanReason(StrEnum):
    RATE_LIMITED = "rate_limited"
    AUTH_FAILED = "auth_failed"


@dataclass(frozen=True)
class Ban:
    source: str
    reason: BanReason
    ban_s: float


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    retry_after_s: int = 0
    """For RATE_LIMITED: whole seconds until the bucket has a token again (at least 1)."""
    ban: Ban | None = None
    """Set on the one request that started a ban (its source is banned from now on)."""


ALLOWED = Decision(Verdict.ALLOW)
DROPPED = Decision(Verdict.BANNED)


@dataclass
class _Source:
    tokens: float
    stamp: float
    refusals: int = 0
    failures: int = 0
    banned_until: float | None = None


class SourceDefence:
    def __init__(self, config: SipRateLimit, clock: Clock = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._exempt: list[Network] = list(config.exempt_cidrs)
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._banned: set[str] = set()

    # -- queries -----------------------------------------------------------------------------

    def exempt(self, source: str) -> bool:
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return False
        return any(address in net for net in self._exempt)

    def banned(self, source: str) -> bool:
        """Whether everything from ``source`` is to be dropped now (the first check on every
        message: a dictionary look-up for a source that is not banned)."""
        entry = self._sources.get(source)
        if entry is None or entry.banned_until is None:
            return False
        self._sources.move_to_end(source)
        if self._clock() < entry.banned_until:
            return True
        self._unban(source, entry)
        return False

    @property
    def tracked(self) -> int:
        return len(self._sources)

    def bans_active(self) -> int:
        now = self._clock()
        for source in list(self._banned):
            entry = self._sources[source]
            if entry.banned_until is None or entry.banned_until <= now:
                self._unban(source, entry)
        return len(self._banned)

    # -- events ------------------------------------------------------------------------------

    def request(self, source: str) -> Decision:
        """A request arrived from ``source``: take a token."""
        if not self.config.enabled or self.exempt(source):
            return ALLOWED
        if self.banned(source):
            return DROPPED
        now = self._clock()
        entry = self._entry(source, now)
        cfg = self.config
        entry.tokens = min(
            float(cfg.burst), entry.tokens + (now - entry.stamp) * cfg.requests_per_s
        )
        entry.stamp = now
        if entry.tokens >= cfg.burst:
            entry.refusals = 0  # quiet long enough: a fresh start
        if entry.tokens >= 1.0:
            entry.tokens -= 1.0
            return ALLOWED
        entry.refusals += 1
        if entry.refusals >= cfg.ban_after:
            return Decision(Verdict.BANNED, ban=self._ban(source, entry, BanReason.RATE_LIMITED))
        wait = math.ceil((1.0 - entry.tokens) / cfg.requests_per_s)
        return Decision(Verdict.RATE_LIMITED, retry_after_s=max(1, wait))

    def auth_failed(self, source: str) -> Ban | None:
        """A digest authentication from ``source`` failed; the ban it started, if any."""
        if not self.config.enabled or self.exempt(source) or self.banned(source):
            return None
        entry = self._entry(source, self._clock())
        entry.failures += 1
        if entry.failures >= self.config.failures_before_ban:
            return self._ban(source, entry, BanReason.AUTH_FAILED)
        return None

    def auth_succeeded(self, source: str) -> None:
        entry = self._sources.get(source)
        if entry is not None:
            entry.failures = 0

    # -- internals ---------------------------------------------------------------------------

    def _entry(self, source: str, now: float) -> _Source:
        entry = self._sources.get(source)
        if entry is not None:
            self._sources.move_to_end(source)
            return entry
        entry = _Source(tokens=float(self.config.burst), stamp=now)
        self._sources[source] = entry
        while len(self._sources) > self.config.max_sources:
            forgotten, _ = self._sources.popitem(last=False)
            self._banned.discard(forgotten)
        return entry

    def _ban(self, source: str, entry: _Source, reason: BanReason) -> Ban:
        entry.banned_until = self._clock() + self.config.ban_s
        self._banned.add(source)
        return Ban(source, reason, self.config.ban_s)

    def _unban(self, source: str, entry: _Source) -> None:
        """The ban is over: the source starts again from a full bucket and no counts."""
        entry.banned_until = None
        entry.tokens, entry.stamp = float(self.config.burst), self._clock()
        entry.refusals = entry.failures = 0
        self._banned.discard(source)


class CallCeiling:
    """Calls at once per key; a key's count is forgotten at zero (memory: the calls)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._calls: dict[str, int] = {}

    def full(self, key: str) -> bool:
        return self.limit is not None and self._calls.get(key, 0) >= self.limit

    def acquire(self, key: str) -> None:
        self._calls[key] = self._calls.get(key, 0) + 1

    def release(self, key: str) -> None:
        left = self._calls.get(key, 0) - 1
        if left > 0:
            self._calls[key] = left
        else:
            self._calls.pop(key, None)

    def count(self, key: str) -> int:
        return self._calls.get(key, 0)
