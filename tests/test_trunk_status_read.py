"""The operator's TrunkRegistered conditions from a real media gateway: the gateway process
with two trunks, one registering to a real registrar peer on loopback (testkit's
:class:`CarrierRegistrar`), one pointing at a registrar where nothing listens; the operator's
own reading of ``GET /v1/trunks`` (:func:`voicetyped_operator.trunks.read_pod`, the call its
status loop makes for each media pod) and its condition builder on what it read.

Here, not in operator_tests or the media tests: it needs both the operator and the media
gateway (a process, started the way the media tests start it), which only the top-level tests
may bring together."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from voicetyped_operator import trunks
from voicetyped_testkit.media import RuntimePeer, SpeechPeer, media_gateway
from voicetyped_testkit.processes import eventually, free_port, free_sip_port
from voicetyped_testkit.registrar import CarrierRegistrar

PASSWORD = "tr0nk-st4tus"
CARRIER = "127.0.0.2"  # another loopback address: the carrier's registrar host


@pytest.fixture
async def registrar() -> AsyncIterator[CarrierRegistrar]:
    reg = CarrierRegistrar(users={"trunkuser": PASSWORD}, host=CARRIER, grant_s=30)
    await reg.start()
    yield reg
    reg.stop()


@pytest.fixture
async def peers() -> AsyncIterator[tuple[SpeechPeer, RuntimePeer]]:
    speech, runtime = SpeechPeer(), RuntimePeer()
    await speech.server.start()
    await runtime.server.start()
    yield speech, runtime
    await speech.server.stop(0)
    await runtime.server.stop(0)


def _trunk(name: str, registrar: str, username: str, password: Path) -> dict[str, object]:
    return {
        "name": name,
        "registrars": [registrar],
        "username": username,
        "password_file": str(password),
        "keepalive": "off",
        "timeout_s": 1.0,
        "backoff_min_s": 0.2,
        "backoff_max_s": 1.6,
    }


async def test_the_operator_reads_trunk_registration_from_a_media_gateway(
    registrar: CarrierRegistrar, peers: tuple[SpeechPeer, RuntimePeer], tmp_path: Path
) -> None:
    speech, runtime = peers
    password = tmp_path / "trunk-password"
    password.write_text(PASSWORD + "\n")
    dead = f"sip:127.0.0.3:{free_port()}"  # nothing listens there
    sip, http = free_sip_port(), free_port()
    trunk_list = [
        _trunk("carrier-a", registrar.uri, "trunkuser", password),
        _trunk("carrier-b", dead, "otheruser", password),
    ]
    gateway = media_gateway(
        tmp_path / "media.log",
        speech,
        runtime,
        sip,
        http,
        VOICETYPED_SIP_TRANSPORTS='["udp"]',
        VOICETYPED_TRUNKS=json.dumps(trunk_list),
    )
    gateway.start()
    try:
        await gateway.wait_ready(http, 30)
        await registrar.wait_for(registrar.bound, 10, "carrier-a's binding")
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(3.0)) as client:

            async def settled() -> list[trunks.TrunkReport] | None:
                """What the operator reads, once carrier-a is registered and carrier-b's
                failure is reported."""
                read = await trunks.read_pod(client, "127.0.0.1", http)
                by_name = {r.name: r for r in read or []}
                if {"carrier-a", "carrier-b"} - set(by_name):
                    return None
                a, b = by_name["carrier-a"], by_name["carrier-b"]
                return read if a.registered and b.last_error else None

            reports = await eventually(settled, 15, "both trunks reported", gateway)
            # A media pod that does not answer (nothing listens on that port): no report.
            silent = await trunks.read_pod(client, "127.0.0.1", free_port())
        assert silent is None
        assert [(r.name, r.registered, r.registrar) for r in reports] == [
            ("carrier-a", True, registrar.uri),
            ("carrier-b", False, dead),
        ]
        got = trunks.trunk_conditions(
            ["carrier-a", "carrier-b"], {"media-0": reports, "media-1": silent}, [], 3
        )
        a, b = got
        assert (a.type, a.status, a.reason) == ("TrunkRegistered-carrier-a", "True", "Registered")
        assert a.message == f"trunk carrier-a registered with {registrar.uri} on 1/1 media pods"
        assert (b.type, b.status, b.reason) == (
            "TrunkRegistered-carrier-b",
            "False",
            "NotRegistered",
        )
        assert b.message == (
            f"trunk carrier-b not registered on 1/1 media pods "
            f"(pod media-0: registrar {dead}: no answer from {dead} in 1.0s)"
        )
        assert all(c.observed_generation == 3 for c in got)
        assert PASSWORD not in json.dumps([c.model_dump(mode="json") for c in got])
    finally:
        gateway.stop()
    assert PASSWORD not in gateway.tail(1_000_000)
