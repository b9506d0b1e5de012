"""The scanner and flood defence's rules (voicetyped_media.sip.defence) on a fake clock, the
gate's call ceilings, and the digest check's answers for unknown users and wrong passwords."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from aiosipua import SipRequest
from prometheus_client import CollectorRegistry
from voicetyped_media.config import MediaSettings, SipRateLimit
from voicetyped_media.metrics import MediaMetrics
from voicetyped_media.sip.defence import BanReason, CallCeiling, SourceDefence, Verdict
from voicetyped_media.sip.gate import SipGate
from voicetyped_media.sip.inbound import Challenge, DigestAuth, InboundPolicy
from voicetyped_testkit.media import sip_invite

ATTACKER = "203.0.113.7"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def defence(clock: Clock, **settings: Any) -> SourceDefence:
    config = {"requests_per_s": 10, "burst": 5, "ban_after": 3, "ban_s": 60} | settings
    return SourceDefence(SipRateLimit.model_validate(config), clock)


def verdicts(d: SourceDefence, n: int, source: str = ATTACKER) -> list[Verdict]:
    return [d.request(source).verdict for _ in range(n)]


def test_the_bucket_allows_a_burst_then_refuses_and_refills_at_the_rate() -> None:
    clock = Clock()
    d = defence(clock, ban_after=100)
    assert verdicts(d, 5) == [Verdict.ALLOW] * 5
    refused = d.request(ATTACKER)
    assert refused.verdict is Verdict.RATE_LIMITED
    assert refused.retry_after_s == 1
    clock.now += 0.25  # 10/s: two and a half tokens
    assert verdicts(d, 3) == [Verdict.ALLOW, Verdict.ALLOW, Verdict.RATE_LIMITED]
    clock.now += 100  # refilled to the burst, not beyond
    assert verdicts(d, 6) == [Verdict.ALLOW] * 5 + [Verdict.RATE_LIMITED]
    assert d.request("198.51.100.1").verdict is Verdict.ALLOW, "buckets are per source"


def test_retry_after_is_the_time_to_the_next_token() -> None:
    d = defence(Clock(), requests_per_s=0.1, burst=1, ban_after=100)
    assert d.request(ATTACKER).verdict is Verdict.ALLOW
    assert d.request(ATTACKER).retry_after_s == 10


def test_a_source_is_banned_after_n_refusals_once_and_then_dropped() -> None:
    d = defence(Clock(), ban_after=3)
    decisions = [d.request(ATTACKER) for _ in range(5 + 3 + 4)]
    assert [x.verdict for x in decisions] == (
        [Verdict.ALLOW] * 5 + [Verdict.RATE_LIMITED] * 2 + [Verdict.BANNED] * 5
    )
    bans = [x.ban for x in decisions if x.ban is not None]
    assert len(bans) == 1, "a ban is reported once, by the request that started it"
    assert bans[0].source == ATTACKER and bans[0].reason is BanReason.RATE_LIMITED
    assert bans[0].ban_s == 60
    assert decisions[7].ban is bans[0]
    assert d.banned(ATTACKER) and d.bans_active() == 1


def test_refusals_start_again_once_the_bucket_is_full() -> None:
    clock = Clock()
    d = defence(clock, ban_after=3)
    assert verdicts(d, 7)[-2:] == [Verdict.RATE_LIMITED] * 2  # two refusals
    clock.now += 1  # full again: a calm source is not one refusal away from a ban
    assert verdicts(d, 7)[-2:] == [Verdict.RATE_LIMITED] * 2
    assert not d.banned(ATTACKER)


def test_a_ban_expires_and_the_source_starts_afresh() -> None:
    clock = Clock()
    d = defence(clock, ban_after=1, ban_s=60)
    verdicts(d, 6)
    assert d.banned(ATTACKER)
    clock.now += 59.9
    assert d.request(ATTACKER).verdict is Verdict.BANNED
    assert d.bans_active() == 1
    clock.now += 0.2
    assert d.bans_active() == 0
    assert not d.banned(ATTACKER)
    assert verdicts(d, 5) == [Verdict.ALLOW] * 5, "a full bucket after the ban"


def test_digest_failures_ban_and_a_success_resets_them() -> None:
    d = defence(Clock(), failures_before_ban=3)
    assert d.auth_failed(ATTACKER) is None
    assert d.auth_failed(ATTACKER) is None
    d.auth_succeeded(ATTACKER)
    assert d.auth_failed(ATTACKER) is None
    assert d.auth_failed(ATTACKER) is None
    ban = d.auth_failed(ATTACKER)
    assert ban is not None and ban.reason is BanReason.AUTH_FAILED
    assert d.request(ATTACKER).verdict is Verdict.BANNED
    assert d.auth_failed(ATTACKER) is None, "no second ban while banned"


def test_memory_is_bounded_least_recently_seen_forgotten_first() -> None:
    clock = Clock()
    d = defence(clock, max_sources=100, ban_after=1)
    verdicts(d, 6, "198.51.100.200")  # banned
    assert d.banned("198.51.100.200")
    for i in range(1000):
        d.request(f"10.0.{i // 250}.{i % 250}")
        if i % 10 == 0:
            assert d.banned("198.51.100.200"), "a banned source that keeps sending is kept"
        assert d.tracked <= 100
    assert d.tracked == 100
    assert d.bans_active() == 1
    for i in range(1000, 1100):
        d.request(f"10.0.{i // 250}.{i % 250}")
    assert not d.banned("198.51.100.200"), "quiet for 100 new sources: forgotten"
    assert d.bans_active() == 0


def test_exempt_networks_are_never_limited_or_banned() -> None:
    d = defence(Clock(), exempt_cidrs=["192.0.2.0/24", "2001:db8::/32"], failures_before_ban=1)
    for source in ("192.0.2.10", "2001:db8::5"):
        assert verdicts(d, 50, source) == [Verdict.ALLOW] * 50
        assert d.auth_failed(source) is None
    assert d.tracked == 0
    assert d.request("192.0.3.1").verdict is Verdict.ALLOW
    assert d.tracked == 1
    assert not d.exempt("not an address")


def test_loopback_is_exempt_by_default_and_disabled_means_no_limits() -> None:
    d = SourceDefence(SipRateLimit(), Clock())
    assert d.exempt("127.0.0.1") and d.exempt("::1") and not d.exempt(ATTACKER)
    off = defence(Clock(), enabled=False, failures_before_ban=1)
    assert verdicts(off, 50) == [Verdict.ALLOW] * 50
    assert off.auth_failed(ATTACKER) is None and off.tracked == 0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="exempt_cidrs"):
        SipRateLimit.model_validate({"exempt_cidrs": ["not-a-network"]})
    with pytest.raises(ValueError, match="burst"):
        SipRateLimit.model_validate({"burst": 0})


def test_call_ceiling_counts_per_key_and_forgets_at_zero() -> None:
    ceiling = CallCeiling(2)
    ceiling.acquire("a")
    assert not ceiling.full("a")
    ceiling.acquire("a")
    assert ceiling.full("a") and not ceiling.full("b")
    ceiling.release("a")
    assert not ceiling.full("a") and ceiling.count("a") == 1
    ceiling.release("a")
    ceiling.release("a")  # an extra release does not go negative
    assert ceiling.count("a") == 0 and not ceiling._calls
    unlimited = CallCeiling(None)
    for _ in range(100):
        unlimited.acquire("x")
    assert not unlimited.full("x")


# -- no user enumeration --------------------------------------------------------------------


def _invite(authorization: str = "") -> SipRequest:
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    request = SipRequest.parse(sip_invite(5060, "c1", extra=auth))
    assert isinstance(request, SipRequest)
    return request


def _authorization(auth: DigestAuth, user: str, password: str) -> str:
    nonce = re.search(r'nonce="([^"]+)"', auth.challenge()[0])
    assert nonce is not None
    uri, realm = "sip:bot@127.0.0.1:5060", auth.realm

    def h(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    response = h(
        f"{h(f'{user}:{realm}:{password}')}:{nonce.group(1)}:00000001:abc:auth:{h(f'INVITE:{uri}')}"
    )
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce.group(1)}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="abc"'
    )


def _shape(problem: Any) -> tuple[Any, ...]:
    """A challenge without its fresh nonce."""
    headers = {k: re.sub(r'nonce="[^"]+"', "nonce", v) for k, v in problem.headers.items()}
    return problem.status, problem.reason, problem.detail, problem.warning, headers, problem.failed


def test_unknown_user_and_wrong_password_get_the_same_challenge() -> None:
    auth = DigestAuth("voicetyped", {"alice": "s3cret"})
    policy = InboundPolicy([], auth)
    source = ("203.0.113.7", 5060)
    assert policy.check(_invite(_authorization(auth, "alice", "s3cret")), source) is None
    wrong = policy.check(_invite(_authorization(auth, "alice", "guess")), source)
    unknown = policy.check(_invite(_authorization(auth, "mallory", "s3cret")), source)
    missing = policy.check(_invite(), source)
    assert isinstance(wrong, Challenge) and isinstance(unknown, Challenge)
    assert isinstance(missing, Challenge)
    assert _shape(wrong) == _shape(unknown)
    assert wrong.failed and not missing.failed, "only wrong credentials count as failures"
    odd = policy.check(
        _invite(_authorization(auth, "alice", "s3cret").replace('response="', 'response="ü')),
        source,
    )
    assert isinstance(odd, Challenge) and odd.failed, "any text compares without raising"


# -- the gate: ceilings per source and per route, counted ------------------------------------


def test_the_gate_holds_calls_to_the_source_and_route_ceilings() -> None:
    settings = MediaSettings(max_calls_per_source=2, max_calls_per_route=3)
    registry = CollectorRegistry()
    gate = SipGate(settings, MediaMetrics(registry), Clock())
    gate.call_started("a1", ATTACKER, "sales")
    gate.call_started("a2", ATTACKER, "sales")
    over = gate.call_refused(ATTACKER, "support", 5)
    assert over is not None and over.reason == "call_ceiling"
    refused = over.problem
    assert refused.status == 503
    assert refused.detail == "too many calls at once from this source"
    assert refused.headers == {"Retry-After": "5"}
    assert gate.call_refused("198.51.100.1", "support", 5) is None
    gate.call_started("b1", "127.0.0.1", "sales")  # exempt: counts for the route only
    assert gate.per_source.count("127.0.0.1") == 0
    route = gate.call_refused("127.0.0.1", "sales", 5)
    assert route is not None and route.reason == "call_ceiling"
    assert route.problem.detail == "too many calls at once from this route"
    gate.call_ended("a1")
    gate.call_ended("a1")  # twice: no effect
    assert gate.call_refused(ATTACKER, "support", 5) is None
    assert gate.call_refused("127.0.0.1", "sales", 5) is None
    value = registry.get_sample_value(
        "voicetyped_media_sip_requests_refused_total", {"reason": "call_ceiling"}
    )
    assert value == 2


def test_the_gate_holds_each_trunk_to_its_own_ceiling(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("pw")
    trunk = {"registrars": ["sip:192.0.2.10"], "username": "u", "password_file": str(password)}
    settings = MediaSettings.model_validate(
        {
            "max_calls_per_source": 10,
            "trunks": [
                {**trunk, "name": "small", "max_calls": 2},
                {**trunk, "name": "open"},  # no ceiling of its own
            ],
        }
    )
    registry = CollectorRegistry()
    gate = SipGate(settings, MediaMetrics(registry), Clock())
    gate.call_started("s1", "192.0.2.10", "sales", "small")
    assert gate.call_refused("192.0.2.10", "sales", 5, "small") is None
    gate.call_started("s2", "198.51.100.9", "sales", "small")  # another source, same trunk
    assert gate.per_trunk["small"].count("small") == 2
    over = gate.call_refused("192.0.2.10", "sales", 7, "small")
    assert over is not None and over.reason == "trunk_ceiling"
    assert (over.problem.status, over.problem.detail) == (
        503,
        "too many calls at once on this trunk",
    )
    assert over.problem.headers == {"Retry-After": "7"}
    # The same source's call by no trunk, or by another trunk: not held to this one's ceiling.
    assert gate.call_refused("192.0.2.10", "sales", 5) is None
    for n in range(5):
        assert gate.call_refused("192.0.2.10", "sales", 5, "open") is None
        gate.call_started(f"o{n}", "127.0.0.1", "sales", "open")
    # A call that ends gives its place back (once, however often it is reported).
    gate.call_ended("s1")
    gate.call_ended("s1")
    assert gate.per_trunk["small"].count("small") == 1
    assert gate.call_refused("192.0.2.10", "sales", 5, "small") is None
    assert (
        registry.get_sample_value(
            "voicetyped_media_sip_requests_refused_total", {"reason": "trunk_ceiling"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "voicetyped_media_sip_requests_refused_total", {"reason": "call_ceiling"}
        )
        is None
    )
