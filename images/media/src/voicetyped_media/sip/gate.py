"""The scanner and flood defence at the SIP edge: :mod:`.defence`'s rules, counted and logged.

The transports ask :meth:`SipGate.dropped` first for every message they receive (a banned
source: dropped, nothing of it read), then :meth:`SipGate.request` for each request (its first
line told it from a response): None lets it through, a :class:`Refused` answers it with 503 and
Retry-After or drops it (the request that starts a ban gets no answer). Admission asks
:meth:`SipGate.call_refused` (per-source, per-trunk and per-route call ceilings) and reports
digest results.

Every decision is counted in ``voicetyped_media_sip_requests_refused_total{reason}``; a ban is
counted and logged once (``SIP source banned`` with source, reason, ban_s), never per packet.
"""

from __future__ import annotations

from dataclasses import dataclass

from voicetyped.service.logs import get_logger

from voicetyped_media.config import MediaSettings
from voicetyped_media.metrics import MediaMetrics
from voicetyped_media.sip.defence import Ban, CallCeiling, Clock, SourceDefence, Verdict
from voicetyped_media.sip.validate import Problem

log = get_logger("voicetyped.media.sip")


@dataclass(frozen=True)
class Refused:
    problem: Problem | None
    """The answer (503 with Retry-After); None: drop without an answer."""


_DROP = Refused(None)


@dataclass(frozen=True)
class OverCeiling:
    """A call refused for a call ceiling: the 503, and the reason label it is counted under
    (``call_ceiling``: its source's or its route's; ``trunk_ceiling``: its trunk's)."""

    reason: str
    problem: Problem


class SipGate:
    def __init__(self, settings: MediaSettings, metrics: MediaMetrics, clock: Clock) -> None:
        self.defence = SourceDefence(settings.sip_rate_limit, clock)
        self.per_source = CallCeiling(settings.max_calls_per_source)
        self.per_route = CallCeiling(settings.max_calls_per_route)
        self.per_trunk = {t.name: CallCeiling(t.max_calls) for t in settings.trunks}
        """Each trunk's calls at once (keyed by its name), held to its ``max_calls``."""
        self._metrics = metrics
        self._refused_banned = metrics.sip_refused.labels("banned")
        # Call-ID -> (source, route, trunk)
        self._calls: dict[str, tuple[str | None, str, str | None]] = {}
        metrics.sip_bans_active.set_function(lambda: float(self.defence.bans_active()))
        metrics.sip_sources_tracked.set_function(lambda: float(self.defence.tracked))

    # -- the transports ----------------------------------------------------------------------

    def dropped(self, source: str) -> bool:
        """True when ``source`` is banned: drop the message unread (counted)."""
        if self.defence.banned(source):
            self._refused_banned.inc()
            return True
        return False

    def request(self, source: str) -> Refused | None:
        decision = self.defence.request(source)
        if decision.verdict is Verdict.ALLOW:
            return None
        if decision.ban is not None:
            self._banned(decision.ban)
        if decision.verdict is Verdict.BANNED:
            self._refused_banned.inc()
            return _DROP
        self._metrics.sip_refused.labels("rate_limited").inc()
        return Refused(
            Problem(
                503,
                "Service Unavailable",
                "rate limited",
                {"Retry-After": str(decision.retry_after_s)},
            )
        )

    # -- admission ---------------------------------------------------------------------------

    def auth_failed(self, source: str) -> None:
        self._metrics.sip_refused.labels("auth_failed").inc()
        ban = self.defence.auth_failed(source)
        if ban is not None:
            self._banned(ban)

    def auth_succeeded(self, source: str) -> None:
        self.defence.auth_succeeded(source)

    def call_refused(
        self, source: str, route: str, retry_after_s: int, trunk: str | None = None
    ) -> OverCeiling | None:
        """The 503 for a call over a ceiling: its source's (unless exempt), its trunk's (the
        trunk it came by, if any) or its route's."""
        reason = "call_ceiling"
        by_trunk = self.per_trunk.get(trunk) if trunk is not None else None
        if not self.defence.exempt(source) and self.per_source.full(source):
            detail = "too many calls at once from this source"
        elif trunk is not None and by_trunk is not None and by_trunk.full(trunk):
            reason, detail = "trunk_ceiling", "too many calls at once on this trunk"
        elif self.per_route.full(route):
            detail = "too many calls at once from this route"
        else:
            return None
        self._metrics.sip_refused.labels(reason).inc()
        problem = Problem(503, "Service Unavailable", detail, {"Retry-After": str(retry_after_s)})
        return OverCeiling(reason, problem)

    def call_started(self, call_id: str, source: str, route: str, trunk: str | None = None) -> None:
        key = None if self.defence.exempt(source) else source
        if key is not None:
            self.per_source.acquire(key)
        if trunk is not None and trunk in self.per_trunk:
            self.per_trunk[trunk].acquire(trunk)
        else:
            trunk = None  # (not a configured trunk: nothing to give back)
        self.per_route.acquire(route)
        self._calls[call_id] = (key, route, trunk)

    def call_ended(self, call_id: str) -> None:
        keys = self._calls.pop(call_id, None)
        if keys is None:
            return
        source, route, trunk = keys
        if source is not None:
            self.per_source.release(source)
        if trunk is not None:
            self.per_trunk[trunk].release(trunk)
        self.per_route.release(route)

    # -- internals ---------------------------------------------------------------------------

    def _banned(self, ban: Ban) -> None:
        self._metrics.sip_bans.labels(ban.reason.value).inc()
        log.warning(
            "SIP source banned", source=ban.source, reason=ban.reason.value, ban_s=ban.ban_s
        )
