"""Registration to one trunk as a pure state machine (RFC 3261 §10.2): what to send when, and
what a response means. The clock and the jitter are the caller's (:mod:`.trunks` drives it on
the event loop; the unit tests with a fake clock).

- **Register, then refresh** at 50-80 % of the granted interval (jittered so many gateways that
  started together do not refresh together); with ``keepalive="register"`` at least every
  ``keepalive_s``. ``keepalive="options"`` sends an OPTIONS every ``keepalive_s`` in between
  (any answer keeps the NAT binding and proves the registrar is there; none: re-REGISTER now).
- **Failover**: a REGISTER unanswered or answered 5xx/408 moves to the next registrar at once;
  when every registrar failed in a row, the next round starts at the first after a backoff.
- **Backoff** with jitter: ``backoff_min_s`` doubling to ``backoff_max_s`` over failed rounds,
  at least a 503's Retry-After; a 403/404 or refused credentials wait ``backoff_max_s`` (the
  registrar said no: asking again soon only looks like password guessing).
- 423 Interval Too Brief: again at once with the Min-Expires asked for.
- **Registered** means the last REGISTER got a 200 and its binding has not expired.
- **Stop**: unregister (Expires: 0) at the registrar in use when a binding is held.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

OutcomeKind = Literal["ok", "timeout", "server_error", "rejected", "auth_failed", "too_brief"]
ChangeKind = Literal["registered", "failed", "failover", "expired", "unregistered"]
MAX_EXPIRES = 86400


@dataclass(frozen=True)
class Outcome:
    """What became of one REGISTER (after answering any digest challenge)."""

    kind: OutcomeKind
    status: int = 0
    reason: str = ""
    granted_s: int = 0
    retry_after_s: float | None = None
    min_expires_s: int | None = None

    @property
    def why(self) -> str:
        return f"{self.status} {self.reason}".strip() if self.status else self.reason


def classify(
    status: int,
    reason: str,
    *,
    granted_s: int = 0,
    retry_after_s: float | None = None,
    min_expires_s: int | None = None,
) -> Outcome:
    """A final response to a REGISTER (401/407 are answered before: here they mean the
    credentials were refused)."""
    if 200 <= status < 300:
        if granted_s <= 0:
            return Outcome("rejected", status, "registrar granted no binding")
        return Outcome("ok", status, reason, granted_s=granted_s)
    if status in (401, 407):
        return Outcome("auth_failed", status, f"{reason} (credentials refused)")
    if status == 423:
        return Outcome("too_brief", status, reason, min_expires_s=min_expires_s)
    if status == 408 or status >= 500:
        return Outcome("server_error", status, reason, retry_after_s=retry_after_s)
    return Outcome("rejected", status, reason)


@dataclass(frozen=True)
class Send:
    """A request to send now: REGISTER (``expires`` 0 unregisters) or a keepalive OPTIONS."""

    method: Literal["REGISTER", "OPTIONS"]
    registrar: int
    expires: int = 0


@dataclass(frozen=True)
class Change:
    """A change worth one log line: registered, failed (a new reason), failover, expired,
    unregistered."""

    kind: ChangeKind
    registrar: int
    reason: str = ""
    retry_in_s: float | None = None
    previous: int | None = None


@dataclass
class RegistrationMachine:
    registrars: int
    expires_s: int = 300
    keepalive: Literal["options", "register", "off"] = "options"
    keepalive_s: float = 25.0
    backoff_min_s: float = 2.0
    backoff_max_s: float = 300.0
    jitter: Callable[[], float] = random.random
    """Uniform in [0, 1): the refresh point and the backoffs are spread with it."""

    state: Literal["idle", "running", "stopping", "stopped"] = "idle"
    registrar: int = 0
    registered: bool = False
    expires_at: float | None = None
    last_error: str = ""
    last_status: int = 0
    in_flight: Send | None = None
    retry_at: float | None = None
    refresh_at: float | None = None
    keepalive_at: float | None = None
    rounds_failed: int = 0
    _tried: set[int] = field(default_factory=set)
    _failing: bool = False
    _failed_reason: str = ""
    _changes: list[Change] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.registrars < 1:
            raise ValueError("a trunk needs a registrar")
        self.expires = self.expires_s

    # -- inputs ------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        self.state = "running"
        self.retry_at = now

    def poll(self, now: float) -> Send | None:
        """The request to send now, if one is due (one at a time: None while one is out)."""
        if self.state != "running" or self.in_flight is not None:
            return None
        self._check_expiry(now)
        if self.retry_at is not None and now >= self.retry_at:
            return self._send("REGISTER", self.expires)
        if self.registered and self.refresh_at is not None and now >= self.refresh_at:
            return self._send("REGISTER", self.expires)
        if self.registered and self.keepalive_at is not None and now >= self.keepalive_at:
            return self._send("OPTIONS", 0)
        return None

    def wake_at(self) -> float | None:
        """When :meth:`poll` may next have something (None: only after an input)."""
        if self.state != "running" or self.in_flight is not None:
            return None
        times = [self.retry_at]
        if self.registered:
            times += [self.refresh_at, self.keepalive_at, self.expires_at]
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def on_register(self, now: float, outcome: Outcome) -> None:
        sent, self.in_flight = self.in_flight, None
        self.last_status = outcome.status
        if self.state == "stopping" or (sent is not None and sent.expires == 0):
            self._unregistered(outcome)
            return
        if outcome.kind == "ok":
            self._registered(now, outcome.granted_s)
        elif (
            outcome.kind == "too_brief"
            and outcome.min_expires_s is not None
            and self.expires < outcome.min_expires_s <= MAX_EXPIRES
        ):
            self.expires = outcome.min_expires_s
            self.retry_at = now
        elif outcome.kind in ("timeout", "server_error"):
            self._unreachable(now, outcome)
        else:
            self._refused(now, outcome)

    def on_keepalive(self, now: float, answered: bool) -> None:
        self.in_flight = None
        if answered:
            self.keepalive_at = now + self.keepalive_s
        else:  # the registrar (or the path to it) is gone: find out with a REGISTER now
            self.keepalive_at = None
            self.retry_at = now

    def stop(self, now: float) -> Send | None:
        """Stop; the unregistration to send when a binding is held (any request still out is
        abandoned by the caller)."""
        self.in_flight = None
        self._check_expiry(now)
        self.retry_at = self.refresh_at = self.keepalive_at = None
        if not self.registered:
            self.state = "stopped"
            return None
        self.state = "stopping"
        return self._send("REGISTER", 0)

    def take_changes(self) -> list[Change]:
        changes, self._changes = self._changes, []
        return changes

    # -- what happens ------------------------------------------------------------------------

    def _send(self, method: Literal["REGISTER", "OPTIONS"], expires: int) -> Send:
        self.retry_at = None
        self.in_flight = Send(method, self.registrar, expires)
        return self.in_flight

    def _check_expiry(self, now: float) -> None:
        if self.registered and self.expires_at is not None and now >= self.expires_at:
            self.registered = False
            self.expires_at = self.refresh_at = self.keepalive_at = None
            self.last_error = "binding expired before a refresh succeeded"
            self._changes.append(Change("expired", self.registrar, self.last_error))
            if self.state == "running" and self.retry_at is None:
                self.retry_at = now

    def _registered(self, now: float, granted_s: int) -> None:
        granted = min(granted_s, MAX_EXPIRES)
        refresh = granted * (0.5 + 0.3 * self.jitter())
        if self.keepalive == "register":
            refresh = min(refresh, self.keepalive_s)
        if not self.registered:
            self._changes.append(Change("registered", self.registrar))
        self._failing, self._failed_reason = False, ""
        self.registered = True
        self.expires_at = now + granted
        self.refresh_at = now + refresh
        self.keepalive_at = (
            now + self.keepalive_s
            if self.keepalive == "options" and self.keepalive_s < refresh
            else None
        )
        self.last_error = ""
        self.rounds_failed = 0
        self._tried.clear()

    def _lose(self, outcome: Outcome) -> None:
        self.registered = False
        self.expires_at = self.refresh_at = self.keepalive_at = None
        self.last_error = outcome.why

    def _unreachable(self, now: float, outcome: Outcome) -> None:
        self._tried.add(self.registrar)
        untried = [i for i in range(self.registrars) if i not in self._tried]
        if untried:
            previous, self.registrar = self.registrar, untried[0]
            if not self._failing:  # while every registrar keeps failing, the counters tell
                self._changes.append(Change("failover", self.registrar, outcome.why, 0.0, previous))
            self._lose(outcome)
            self.retry_at = now
            return
        self.rounds_failed += 1
        base = min(self.backoff_max_s, self.backoff_min_s * 2 ** (self.rounds_failed - 1))
        delay = base * (0.5 + 0.5 * self.jitter())
        if outcome.retry_after_s is not None:
            delay = max(delay, min(outcome.retry_after_s, self.backoff_max_s))
        self._retry_later(now, delay, outcome, first=0)

    def _refused(self, now: float, outcome: Outcome) -> None:
        self.rounds_failed += 1
        delay = self.backoff_max_s * (0.75 + 0.25 * self.jitter())
        self._retry_later(now, delay, outcome, first=self.registrar)

    def _retry_later(self, now: float, delay: float, outcome: Outcome, first: int) -> None:
        """Wait ``delay``, then register again at registrar ``first``. A failure is news once
        per reason (the counters have every one)."""
        if not self._failing or outcome.why != self._failed_reason:
            self._changes.append(Change("failed", self.registrar, outcome.why, delay))
        self._failing, self._failed_reason = True, outcome.why
        self._lose(outcome)
        self._tried.clear()
        self.registrar = first
        self.retry_at = now + delay

    def _unregistered(self, outcome: Outcome) -> None:
        self.state = "stopped"
        self.registered = False
        self.expires_at = self.refresh_at = self.keepalive_at = None
        if 200 <= outcome.status < 300:  # (a 200 to Expires: 0 grants nothing, as it should)
            self._changes.append(Change("unregistered", self.registrar))
        else:
            self.last_error = f"unregister: {outcome.why}"
            self._changes.append(Change("failed", self.registrar, self.last_error))
