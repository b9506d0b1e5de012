"""The gateway registering to a carrier trunk: the gateway process against a real registrar peer
on loopback (testkit's :class:`CarrierRegistrar`: digest challenge and check of its own, granted
intervals of 2-3 s so refreshes happen within a test), SIPp as the carrier's INVITE. Other
loopback addresses (127.0.0.2, .3) stand for other hosts: the registrar's address is a source."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from voicetyped_testkit.media import (
    sipp,
    sipp_call_scenario,
    sipp_expect_bye,
    sipp_request,
    sipp_scenario,
)
from voicetyped_testkit.processes import eventually, free_port
from voicetyped_testkit.registrar import CarrierRegistrar

PASSWORD = "tr0nk-s3cret"
CARRIER = "127.0.0.2"


@pytest.fixture
async def registrars() -> AsyncIterator[Any]:
    started: list[CarrierRegistrar] = []

    async def start(host: str = CARRIER, **kw: Any) -> CarrierRegistrar:
        kw.setdefault("users", {"trunkuser": PASSWORD})
        registrar = CarrierRegistrar(host=host, **kw)
        await registrar.start()
        started.append(registrar)
        return registrar

    yield start
    for registrar in started:
        registrar.stop()


def trunk(tmp: Path, registrars: list[str], **settings: Any) -> dict[str, str]:
    password = tmp / "trunk-password"
    password.write_text(PASSWORD + "\n")
    entry = {
        "name": "carrier",
        "registrars": registrars,
        "username": "trunkuser",
        "password_file": str(password),
        "keepalive": "off",
        "timeout_s": 1.0,
        "backoff_min_s": 0.2,
        "backoff_max_s": 1.6,
        **settings,
    }
    return {"VOICETYPED_TRUNKS": json.dumps([entry])}


def trunks(gw: Any) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.http_port}/v1/trunks") as reply:
        (status,) = json.loads(reply.read())["trunks"]
        return dict(status)


async def status(gw: Any) -> dict[str, Any]:
    return await asyncio.to_thread(trunks, gw)


def metric(gw: Any, line_start: str) -> float:
    for line in gw.metrics().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def short_call(tmp: Path) -> str:
    """A SIPp caller's scenario (its file): a call to ``bot``, held 300 ms, hung up."""
    scenario = tmp / "short-call.xml"
    scenario.write_text(
        sipp_call_scenario(
            "A short call",
            '  <pause milliseconds="300"/>\n'
            + sipp_request("BYE", 2, retrans=True)
            + '  <recv response="200"/>\n',
        )
    )
    return str(scenario)


def contact(gw: Any) -> str:
    return f"sip:trunkuser@127.0.0.1:{gw.sip_port}"


async def test_registers_with_digest_and_refreshes_before_expiry(
    start_gateway: Any, registrars: Any, tmp_path: Path
) -> None:
    reg = await registrars(grant_s=3)
    gw = await start_gateway(**trunk(tmp_path, [reg.uri]))
    first = await reg.wait_for(
        lambda: reg.registers(authorized=True), 10, "an authenticated REGISTER"
    )
    assert reg.received[0].status == 401, "challenged first, then answered"
    assert first[0].contact == contact(gw) and first[0].expires == 300
    assert reg.bound() == [contact(gw)]
    state = await eventually(
        lambda: (s := trunks(gw))["registered"] and s, 5, "registered in /v1/trunks"
    )
    assert state["registrar"] == reg.uri and state["last_error"] == ""
    assert state["expires_at"] is not None and PASSWORD not in json.dumps(state)
    refreshes = await reg.wait_for(
        lambda: len(got := reg.registers(authorized=True)) >= 3 and got, 10, "two refreshes"
    )
    for before, after in itertools.pairwise(refreshes):
        gap = after.at - before.at
        assert 1.3 <= gap < 3.0, f"refreshed {gap:.2f}s after a 3 s grant (50-80 % + a 401)"
    assert reg.bound() == [contact(gw)], "the binding never lapsed"
    assert metric(gw, 'voicetyped_media_trunk_registered{trunk="carrier"}') == 1.0
    total = 'voicetyped_media_trunk_register_total{outcome="registered",trunk="carrier"}'
    assert metric(gw, total) >= 3
    assert len(gw.logged("trunk registered")) == 1, "refreshes are not logged"
    assert PASSWORD not in gw.process.log.read_text()


async def test_reregisters_after_the_registrar_restarts(
    start_gateway: Any, registrars: Any, tmp_path: Path
) -> None:
    reg = await registrars(grant_s=2)
    gw = await start_gateway(**trunk(tmp_path, [reg.uri]))
    await reg.wait_for(reg.bound, 10, "a binding")
    reg.stop()
    down = await eventually(
        lambda: not (s := trunks(gw))["registered"] and s, 10, "registration lost"
    )
    assert "no answer" in down["last_error"] or "expired" in down["last_error"]
    before = len(reg.received)
    await reg.restart()
    await reg.wait_for(reg.bound, 10, "a binding at the restarted registrar")
    assert reg.received[before].status == 401, "a new registrar's nonce: challenged again"
    await eventually(lambda: trunks(gw)["registered"], 5, "registered again")
    (failed,) = gw.logged("trunk registration failed")
    assert failed["trunk"] == "carrier" and failed["reason"]
    assert len(gw.logged("trunk registered")) == 2


async def test_fails_over_to_the_second_registrar(
    start_gateway: Any, registrars: Any, tmp_path: Path
) -> None:
    second = await registrars(host="127.0.0.3", grant_s=30)
    dead = f"sip:{CARRIER}:{free_port()}"  # nothing listens there
    gw = await start_gateway(**trunk(tmp_path, [dead, second.uri]))
    await second.wait_for(second.bound, 10, "a binding at the second registrar")
    state = await eventually(
        lambda: (s := trunks(gw))["registered"] and s, 5, "registered at the second"
    )
    assert state["registrar"] == second.uri
    (failover,) = gw.logged("trunk registrar failover")
    assert failover["previous"] == dead and failover["registrar"] == second.uri
    assert "no answer" in failover["reason"]
    timeouts = 'voicetyped_media_trunk_register_total{outcome="timeout",trunk="carrier"}'
    assert metric(gw, timeouts) == 1.0


async def test_backs_off_on_503_and_long_after_403(
    start_gateway: Any, registrars: Any, tmp_path: Path
) -> None:
    reg = await registrars(grant_s=2, script=[503, 503, 503])
    gw = await start_gateway(**trunk(tmp_path, [reg.uri]))
    await reg.wait_for(reg.bound, 15, "a binding after three 503s")
    refused = reg.registers(status=503)
    gaps = [b.at - a.at for a, b in zip(refused, [*refused[1:], reg.received[3]], strict=True)]
    # 0.2 s doubling per failed round, jittered to 50-100 %: [0.1, 0.2], [0.2, 0.4], [0.4, 0.8]
    for gap, low, high in zip(gaps, (0.1, 0.2, 0.4), (0.2, 0.4, 0.8), strict=True):
        assert low <= gap <= high + 0.4, gaps  # (the upper bound allows a loaded machine)
    assert (
        metric(gw, 'voicetyped_media_trunk_register_total{outcome="server_error",trunk="carrier"}')
        == 3.0
    )
    assert [r["reason"] for r in gw.logged("trunk registration failed")] == [
        "503 Service Unavailable"
    ], "three 503s in a row are one log line"
    # A 403 on a refresh: not registered, the reason shown, then at least 3/4 of 1.6 s of quiet.
    reg.script.append(403)
    forbidden = await reg.wait_for(lambda: reg.registers(status=403), 5, "a refused refresh")
    state = await eventually(
        lambda: not (s := trunks(gw))["registered"] and s, 5, "403 seen in status"
    )
    assert state["last_error"] == "403 Forbidden"
    assert metric(gw, 'voicetyped_media_trunk_registered{trunk="carrier"}') == 0.0
    again = await reg.wait_for(
        lambda: [r for r in reg.received if r.at > forbidden[0].at], 5, "the next REGISTER"
    )
    assert again[0].at - forbidden[0].at >= 1.2
    await eventually(lambda: trunks(gw)["registered"], 5, "registered after the 403")


async def test_unregisters_at_sigterm(start_gateway: Any, registrars: Any, tmp_path: Path) -> None:
    reg = await registrars(grant_s=60)
    gw = await start_gateway(**trunk(tmp_path, [reg.uri]))
    await reg.wait_for(reg.bound, 10, "a binding")
    code = await asyncio.to_thread(gw.process.stop)
    assert code == 0
    (removal,) = reg.registers(expires=0, authorized=True)
    assert removal.contact == contact(gw) and reg.bound() == []
    assert gw.logged("trunk unregistered")


CALL_FOR = "Call from the carrier"


async def test_call_from_the_trunk_reaches_its_dialog_and_others_still_need_digest(
    start_gateway: Any, registrars: Any, tmp_path: Path
) -> None:
    users = tmp_path / "users"
    users.write_text("alice:wonder1and\n")
    reg = await registrars(grant_s=30)
    gw = await start_gateway(
        VOICETYPED_DIGEST_USERS_FILE=str(users),
        VOICETYPED_DIALOG="front-desk",
        **trunk(tmp_path, [reg.uri], dialog="carrier-ivr", trust_registrar_source=True),
    )
    (bound,) = await reg.wait_for(reg.bound, 10, "a binding")
    # The carrier calls the contact it holds, from the registrar's address: no challenge.
    user = bound.split(":", 1)[1].split("@", 1)[0]
    scenario = tmp_path / "trunk-call.xml"
    scenario.write_text(
        sipp_call_scenario(
            CALL_FOR,
            '  <pause milliseconds="300"/>\n'
            + sipp_request("BYE", 2, retrans=True, callee=user)
            + '  <recv response="200"/>\n',
            callee=user,
        )
    )
    out = await sipp(gw, str(scenario), local_ip=CARRIER)
    assert out.code == 0, out.output[-2500:]
    (call,) = await gw.runtime.wait_call()
    assert call.started.dialog == "carrier-ivr"
    assert call.started.called_uri.startswith(f"sip:{user}@")
    await call.wait_for("ended")
    # Anyone else: the inbound rules as before (a digest challenge).
    challenged = tmp_path / "challenged.xml"
    challenged.write_text(
        sipp_scenario(
            "INVITE from elsewhere",
            sipp_request("INVITE", 1, in_dialog=False, retrans=True, callee=user)
            + '  <recv response="100" optional="true"/>\n  <recv response="401"/>\n'
            + sipp_request("ACK", 1, branch="[branch-1]", callee=user),
        )
    )
    refused = await sipp(gw, str(challenged), local_ip="127.0.0.1")
    assert refused.code == 0, refused.output[-2500:]
    assert len(gw.runtime.calls) == 1


async def test_calls_from_the_trunk_stop_at_its_ceiling_and_other_sources_are_unaffected(
    start_gateway: Any, registrars: Any, tmp_path: Path
) -> None:
    reg = await registrars(grant_s=30)
    gw = await start_gateway(**trunk(tmp_path, [reg.uri], max_calls=2))
    await reg.wait_for(reg.bound, 10, "a binding")
    # Two calls from the carrier's address (the trunk's), held until the runtime hangs up.
    held = tmp_path / "held.xml"
    held.write_text(sipp_call_scenario("A trunk call held", sipp_expect_bye()))
    holding = [asyncio.create_task(sipp(gw, str(held), local_ip=CARRIER)) for _ in range(2)]
    await gw.runtime.wait_call(count=2, timeout_s=15)
    # The third at once from the trunk: 503 with Retry-After, saying why.
    refused = tmp_path / "refused.xml"
    refused.write_text(
        sipp_scenario(
            "A trunk call over its ceiling",
            sipp_request("INVITE", 1, in_dialog=False, retrans=True)
            + '  <recv response="100" optional="true"/>\n'
            + '  <recv response="503"><action>\n'
            + '    <ereg regexp="^ *5$" search_in="hdr" header="Retry-After:" check_it="true"'
            + ' assign_to="retry"/>\n'
            + '    <ereg regexp="too many calls at once on this trunk" search_in="hdr"'
            + ' header="Warning:" check_it="true" assign_to="why"/>\n'
            + "  </action></recv>\n"
            + sipp_request("ACK", 1, branch="[branch-1]"),
        )
    )
    out = await sipp(gw, str(refused), local_ip=CARRIER)
    assert out.code == 0, out.output[-2500:]
    refusals = 'voicetyped_media_sip_requests_refused_total{reason="trunk_ceiling"}'
    assert metric(gw, refusals) == 1.0
    assert metric(gw, 'voicetyped_media_calls_refused_total{reason="trunk_ceiling"}') == 1.0
    assert len(gw.runtime.calls) == 2
    # Another source, not by the trunk, while the trunk is full: its call goes through.
    call = short_call(tmp_path)
    elsewhere = await sipp(gw, call, local_ip="127.0.0.3")
    assert elsewhere.code == 0, elsewhere.output[-2500:]
    calls = await gw.runtime.wait_call(count=3)
    await calls[2].wait_for("ended")
    # A trunk call that ends gives its place back: the carrier's next call is answered.
    gw.runtime.hangup(calls[0].session_id)
    done, _ = await asyncio.wait(holding, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    assert [t.result().code for t in done] == [0], "one held call ended by the gateway's BYE"
    await eventually(
        lambda: metric(gw, "voicetyped_media_active_calls") == 1.0, 15, "the hung-up call gone"
    )
    answered = await sipp(gw, call, local_ip=CARRIER)
    assert answered.code == 0, answered.output[-2500:]
    assert metric(gw, refusals) == 1.0, "no further refusal"
    gw.runtime.hangup(calls[1].session_id)
    assert [(await t).code for t in holding] == [0, 0]


async def test_unreachable_registrar_is_reported_and_other_calls_go_on(
    start_gateway: Any, tmp_path: Path
) -> None:
    dead = f"sip:{CARRIER}:{free_port()}"
    gw = await start_gateway(**trunk(tmp_path, [dead], dialog="carrier-ivr"))
    state = await eventually(
        lambda: (s := trunks(gw))["last_error"] and s, 10, "the failure in /v1/trunks"
    )
    assert state["registered"] is False and state["registrar"] == dead
    assert state["last_error"] == f"no answer from {dead} in 1.0s"
    assert metric(gw, 'voicetyped_media_trunk_registered{trunk="carrier"}') == 0.0
    out = await sipp(gw, short_call(tmp_path))
    assert out.code == 0, out.output[-2500:]
    (call,) = await gw.runtime.wait_call()
    assert call.started.dialog == "", "not the trunk's: the default dialog"
    await call.wait_for("ended")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"registrars": ["http://carrier.test"]}, "trunks.0.registrars: Value error, 'http"),
        ({"registrars": []}, "trunks.0.registrars: List should have at least 1 item"),
        ({"password_file": "/nonexistent/pw"}, "trunks.0.password_file: Value error, /nonex"),
        ({"transport": "tls"}, "trunks.0.transport: Input should be 'udp' or 'tcp'"),
    ],
)
def test_a_bad_trunk_stops_the_gateway_at_start_up_naming_the_field(
    entry: dict[str, Any], problem: str, tmp_path: Path
) -> None:
    env = trunk(tmp_path, ["sip:carrier.test"])
    env["VOICETYPED_TRUNKS"] = json.dumps([{**json.loads(env["VOICETYPED_TRUNKS"])[0], **entry}])
    done = subprocess.run(
        [sys.executable, "-m", "voicetyped_media"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert problem in line, line
    assert PASSWORD not in line


async def test_options_keepalive_from_the_sip_port_and_a_silent_registrar(
    start_gateway: Any, registrars: Any, tmp_path: Path
) -> None:
    reg = await registrars(grant_s=60)
    gw = await start_gateway(**trunk(tmp_path, [reg.uri], keepalive="options", keepalive_s=1))
    pings = await reg.wait_for(
        lambda: len(got := [r for r in reg.received if r.method == "OPTIONS"]) >= 2 and got,
        10,
        "two keepalives",
    )
    registered = reg.registers(authorized=True)[0]
    assert {p.source for p in pings} == {registered.source} == {("127.0.0.1", gw.sip_port)}, (
        "keepalives keep the NAT binding of the port calls arrive on"
    )
    assert 0.9 <= pings[1].at - pings[0].at < 2.0
    reg.stop()  # unanswered keepalive -> a REGISTER at once -> unanswered: not registered
    state = await eventually(
        lambda: not (s := trunks(gw))["registered"] and s, 10, "the silent registrar noticed"
    )
    assert state["last_error"].startswith("no answer from")
    missed = 'voicetyped_media_trunk_register_total{outcome="keepalive_timeout",trunk="carrier"}'
    assert metric(gw, missed) == 1.0
