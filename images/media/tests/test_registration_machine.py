"""The trunk registration state machine with a fake clock and fixed jitter: refresh points,
failover, backoff bounds, keepalives, expiry, unregistration, and what is worth a log line."""

from __future__ import annotations

from typing import Any

import pytest
from aiosipua.auth import SipDigestAuth, build_credentials
from aiosipua.header_codec import parse_auth
from voicetyped_media.sip.registration import (
    Outcome,
    RegistrationMachine,
    Send,
    classify,
)

OK = Outcome("ok", 200, "OK", granted_s=100)
TIMEOUT = Outcome("timeout", reason="no answer")
UNAVAILABLE = classify(503, "Service Unavailable")


def machine(jitter: float = 0.5, **kw: Any) -> RegistrationMachine:
    kw.setdefault("registrars", 2)
    kw.setdefault("keepalive", "off")
    return RegistrationMachine(jitter=lambda: jitter, **kw)


def test_registers_at_start_and_refreshes_between_half_and_80_percent() -> None:
    for jitter, refresh_at in ((0.0, 50.0), (0.5, 65.0), (0.9999, 80.0)):
        m = machine(jitter)
        m.start(0.0)
        assert m.poll(0.0) == Send("REGISTER", 0, 300)
        assert m.poll(0.0) is None, "one request at a time"
        m.on_register(0.0, OK)
        assert m.registered and m.expires_at == 100.0
        assert m.wake_at() == pytest.approx(refresh_at, abs=0.01)
        assert m.poll(refresh_at - 0.1) is None
        assert m.poll(refresh_at + 0.01) == Send("REGISTER", 0, 300)
    assert [c.kind for c in m.take_changes()] == ["registered"]
    m.on_register(81.0, OK)
    assert m.take_changes() == [], "a refresh is not news"


def test_failover_to_the_second_registrar_then_backoff_from_the_first() -> None:
    m = machine(jitter=0.0, backoff_min_s=2, backoff_max_s=300)
    m.start(0.0)
    m.poll(0.0)
    m.on_register(8.0, TIMEOUT)
    assert m.poll(8.0) == Send("REGISTER", 1, 300), "the second registrar, at once"
    (failover,) = m.take_changes()
    assert (failover.kind, failover.previous, failover.registrar) == ("failover", 0, 1)
    m.on_register(16.0, UNAVAILABLE)
    assert not m.registered and m.last_error == "503 Service Unavailable"
    assert m.poll(16.0) is None
    assert m.wake_at() == pytest.approx(17.0), "2 s base, jitter 0 -> half of it"
    (failed,) = m.take_changes()
    assert failed.kind == "failed" and failed.retry_in_s == pytest.approx(1.0)
    assert m.poll(17.0) == Send("REGISTER", 0, 300), "the next round starts at the first"


def test_backoff_doubles_per_failed_round_and_is_bounded() -> None:
    m = machine(jitter=0.9999, registrars=1, backoff_min_s=2, backoff_max_s=30)
    m.start(0.0)
    now, waits = 0.0, []
    for _ in range(7):
        assert m.poll(now) is not None
        m.on_register(now, TIMEOUT)
        wake = m.wake_at()
        assert wake is not None
        waits.append(round(wake - now, 2))
        now = wake
    assert waits == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert [c.kind for c in m.take_changes()] == ["failed"], "the same reason is logged once"
    assert m.poll(now) is not None
    m.on_register(now, OK)
    assert m.registered and m.rounds_failed == 0


def test_retry_after_of_a_503_is_honoured_up_to_the_bound() -> None:
    m = machine(jitter=0.0, registrars=1, backoff_min_s=2, backoff_max_s=60)
    m.start(0.0)
    m.poll(0.0)
    m.on_register(0.0, classify(503, "Service Unavailable", retry_after_s=20))
    assert m.wake_at() == 20.0
    m.poll(20.0)
    m.on_register(20.0, classify(503, "Service Unavailable", retry_after_s=900))
    assert m.wake_at() == 80.0


@pytest.mark.parametrize("status", [403, 404])
def test_a_refusal_waits_long_and_stays_on_the_same_registrar(status: int) -> None:
    m = machine(jitter=0.0, backoff_min_s=2, backoff_max_s=300)
    m.start(0.0)
    m.poll(0.0)
    m.on_register(0.0, classify(status, "No"))
    assert m.wake_at() == 225.0, "3/4 of backoff_max at the least"
    assert m.poll(225.0) == Send("REGISTER", 0, 300)
    assert m.last_error == f"{status} No"


def test_refused_credentials_are_a_refusal() -> None:
    outcome = classify(401, "Unauthorized")
    assert outcome.kind == "auth_failed"
    m = machine(jitter=0.0, backoff_max_s=100)
    m.start(0.0)
    m.poll(0.0)
    m.on_register(0.0, outcome)
    assert m.wake_at() == 75.0 and "credentials refused" in m.last_error


def test_interval_too_brief_retries_at_once_with_min_expires_once() -> None:
    m = machine(expires_s=60)
    m.start(0.0)
    m.poll(0.0)
    m.on_register(0.0, classify(423, "Interval Too Brief", min_expires_s=600))
    assert m.poll(0.0) == Send("REGISTER", 0, 600)
    m.on_register(0.0, classify(423, "Interval Too Brief", min_expires_s=600))
    assert m.poll(0.0) is None and m.last_error == "423 Interval Too Brief"


def test_a_200_granting_nothing_is_not_a_registration() -> None:
    assert classify(200, "OK", granted_s=0).kind == "rejected"


def test_options_keepalive_between_refreshes_and_a_silent_registrar() -> None:
    m = machine(keepalive="options", keepalive_s=10, jitter=0.0)
    m.start(0.0)
    m.poll(0.0)
    m.on_register(0.0, OK)  # refresh at 50
    assert m.poll(10.0) == Send("OPTIONS", 0)
    m.on_keepalive(10.0, answered=True)
    assert m.wake_at() == 20.0
    assert m.poll(20.0) == Send("OPTIONS", 0)
    m.on_keepalive(28.0, answered=False)
    assert m.poll(28.0) == Send("REGISTER", 0, 300), "unanswered: find out with a REGISTER"
    assert m.registered, "the binding stands until the REGISTER says otherwise"


def test_register_keepalive_shortens_the_refresh() -> None:
    m = machine(keepalive="register", keepalive_s=15, jitter=0.0)
    m.start(0.0)
    m.poll(0.0)
    m.on_register(0.0, OK)
    assert m.wake_at() == 15.0 and m.poll(15.0) == Send("REGISTER", 0, 300)


def test_binding_expires_when_no_refresh_succeeds_in_time() -> None:
    m2 = machine(jitter=0.0)
    m2.start(0.0)
    m2.poll(0.0)
    m2.on_register(0.0, Outcome("ok", 200, "OK", granted_s=4))
    m2.refresh_at = None  # as if the refresh were never due: only expiry is left
    assert m2.wake_at() == 4.0
    assert m2.poll(4.0) == Send("REGISTER", 0, 300)
    assert not m2.registered and m2.last_error.startswith("binding expired")
    assert [c.kind for c in m2.take_changes()] == ["registered", "expired"]


def test_stop_unregisters_a_held_binding_only() -> None:
    m = machine()
    m.start(0.0)
    m.poll(0.0)
    m.on_register(0.0, OK)
    m.poll(70.0)  # a refresh out when SIGTERM comes
    assert m.stop(71.0) == Send("REGISTER", 0, 0)
    m.on_register(71.0, classify(200, "OK", granted_s=0))
    assert m.state == "stopped" and not m.registered
    assert m.take_changes()[-1].kind == "unregistered"
    idle = machine()
    idle.start(0.0)
    idle.poll(0.0)
    idle.on_register(0.0, TIMEOUT)
    assert idle.stop(1.0) is None and idle.state == "stopped"
    assert idle.poll(2.0) is None and idle.wake_at() is None


def test_digest_answer_matches_rfc_2617_example() -> None:
    """aiosipua's digest (what the client sends) against the RFC 2617 §3.5 worked example."""
    challenge = parse_auth(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    creds = build_credentials(
        SipDigestAuth("Mufasa", "Circle Of Life"),
        challenge,
        "GET",
        "/dir/index.html",
        cnonce="0a4f113b",
    )
    assert creds is not None
    assert creds.params["response"] == "6629fae49393a05397450978507c4ef1"
