"""The scanner and flood defence against the real tools: sipvicious's svmap (OPTIONS sweeps),
svwar (extension enumeration) and svcrack (digest password guessing), run as processes against
the gateway on loopback, while legitimate calls come from an exempt address.

sipvicious 0.3.8's svwar and svcrack ignore their binding option: their packets leave from
127.0.0.1, so here 127.0.0.1 is the attacker (not exempt) and the legitimate caller is
127.0.0.3, the only exempt network.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sys
from pathlib import Path
from typing import Any

from voicetyped.v1 import runtime_pb2
from voicetyped_testkit.media import (
    Finished,
    exchange,
    run,
    sip_invite,
    sipp,
    sipp_auth_call_scenario,
)
from voicetyped_testkit.processes import eventually, free_sip_port

ATTACKER = "127.0.0.1"
CALLER = "127.0.0.3"
PASSWORD = "4242"
SCANNER_ENV = {
    "VOICETYPED_SIP_RATE_LIMIT__EXEMPT_CIDRS": f'["{CALLER}/32"]',
    "VOICETYPED_SHUTDOWN_GRACE_S": "2",  # calls the scanners left open: no long drain
}
ENDED = runtime_pb2.CallEnded


def tool(name: str) -> str:
    return str(Path(sys.executable).with_name(f"sipvicious_{name}"))


async def sipvicious(name: str, gw: Any, *args: str, timeout_s: float = 60) -> Finished:
    """Run a tool against ``gw`` from a port of its own (by default they all use 5060, and a
    run would read the answers a previous gateway still retransmits to the previous run)."""
    local = ("-P", str(free_sip_port()))
    return await run(
        [tool(name), *local, *args, "-p", str(gw.sip_port), "127.0.0.1"],
        cwd=gw.tmp,
        timeout_s=timeout_s,
    )


def metric(gw: Any, name: str, **labels: str) -> float:
    """A sample of the gateway's metrics (0 when absent)."""
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    sample = f"{name}{{{selector}}}" if labels else name
    for line in gw.metrics().splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def options(port: int, tag: str) -> bytes:
    return (
        f"OPTIONS sip:bot@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bK{tag}\r\nMax-Forwards: 70\r\n"
        f"From: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:bot@127.0.0.1>\r\nCall-ID: {tag}\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def answered(gw: Any, source: str, tag: str, transport: str = "udp") -> list[str]:
    """The answers to an OPTIONS from ``source`` (none within 1 s: []; a TCP connection
    closed or reset unanswered: [])."""
    try:
        return await asyncio.to_thread(
            exchange, gw.sip_port, options(gw.sip_port, tag), 1.0, transport, source
        )
    except ConnectionError:
        return []


async def authenticated_call(gw: Any, tmp: Path, hold_ms: int = 500) -> Finished:
    scenario = tmp / f"auth-{hold_ms}.xml"
    scenario.write_text(sipp_auth_call_scenario("caller", hold_ms))
    return await sipp(gw, str(scenario), "-au", "caller", "-ap", "caller-secret", local_ip=CALLER)


async def scanner_gateway(start_gateway: Any, tmp: Path, **env: str) -> Any:
    users = tmp / "users"
    users.write_text(f"100:{PASSWORD}\n120:also-a-user\ncaller:caller-secret\n")
    return await start_gateway(
        VOICETYPED_DIGEST_USERS_FILE=str(users),
        VOICETYPED_DIALOG_ROUTES='{"110": "sales", "130": "support"}',
        **SCANNER_ENV | env,
    )


def _normalised(reply: str) -> list[str]:
    """A response without what differs per request (tags, nonces, branches, source ports,
    Call-ID)."""
    lines = []
    for line in reply.split("\r\n"):
        line = re.sub(r"tag=[^;>\s]+", "tag=T", line)
        line = re.sub(r'nonce="[^"]+"', 'nonce="N"', line)
        line = re.sub(r"branch=[^;\s]+", "branch=B", line)
        line = re.sub(r"rport=\d+", "rport=P", line)
        line = re.sub(r"^(Call-ID|From|To):.*", r"\1", line)
        lines.append(line)
    return lines


# -- svwar -----------------------------------------------------------------------------------


async def test_svwar_cannot_tell_existing_extensions_from_others(
    start_gateway: Any, tmp_path: Path
) -> None:
    # A burst large enough for three sweeps: this test is about what the answers reveal.
    gw = await scanner_gateway(start_gateway, tmp_path, VOICETYPED_SIP_RATE_LIMIT__BURST="1000")
    # Users 100 and 120 exist, 110 and 130 are dialog routes; the sweep covers them all.
    for method in ("OPTIONS", "INVITE", "REGISTER"):
        out = await sipvicious("svwar", gw, "-v", "-m", method, "--force", "-e", "100-149")
        assert "Ok SIP device found" in out.output, (method, out.output[-2000:])
        assert "exists" not in out.output, (method, out.output[-2000:])
        assert "found nothing" in out.output, (method, out.output[-2000:])
    # On the wire: an INVITE to an existing extension, a route and a made-up one get the same
    # answer, and so do an unknown user and a wrong password in the digest.
    replies = [
        (await asyncio.to_thread(exchange, gw.sip_port, invite, 3.0, "udp", ATTACKER))[-1]
        for invite in (
            sip_invite(gw.sip_port, f"svwar-{n}").replace(b"sip:bot@", f"sip:{n}@".encode(), 1)
            for n in ("100", "110", "999")
        )
    ]
    assert replies[0].startswith("SIP/2.0 401 ")
    assert _normalised(replies[0]) == _normalised(replies[1]) == _normalised(replies[2])
    wrong = await digest_answer(gw, "100", "not-the-password")
    unknown = await digest_answer(gw, "no-such-user", PASSWORD)
    assert wrong.startswith("SIP/2.0 401 ")
    assert _normalised(wrong) == _normalised(unknown)
    assert metric(gw, "voicetyped_media_sip_requests_refused_total", reason="auth_failed") == 2


async def digest_answer(gw: Any, user: str, password: str) -> str:
    """The gateway's answer to an INVITE with a digest response for ``user``/``password``."""
    (challenge,) = await asyncio.to_thread(
        exchange, gw.sip_port, sip_invite(gw.sip_port, f"c-{user}"), 3.0, "udp", ATTACKER
    )
    nonce = re.search(r'nonce="([^"]+)", algorithm=MD5', challenge)
    assert nonce is not None, challenge
    uri = f"sip:bot@127.0.0.1:{gw.sip_port}"

    def h(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1, ha2 = h(f"{user}:voicetyped:{password}"), h(f"INVITE:{uri}")
    response = h(f"{ha1}:{nonce.group(1)}:00000001:cn:auth:{ha2}")
    header = (
        f'Authorization: Digest username="{user}", realm="voicetyped", nonce="{nonce.group(1)}", '
        f'uri="{uri}", response="{response}", algorithm=MD5, qop=auth, nc=00000001, '
        'cnonce="cn"\r\n'
    )
    invite = sip_invite(gw.sip_port, f"d-{user}", extra=header)
    replies = await asyncio.to_thread(exchange, gw.sip_port, invite, 3.0, "udp", ATTACKER)
    return replies[-1]


# -- svcrack ---------------------------------------------------------------------------------


async def test_svcrack_is_banned_before_it_finds_the_password(
    start_gateway: Any, tmp_path: Path
) -> None:
    words = [f"guess{n}" for n in range(30)] + [PASSWORD] + [f"guess{n}" for n in range(30, 40)]
    dictionary = tmp_path / "passwords.txt"
    dictionary.write_text("\n".join(words) + "\n")
    crack = ("-u", "100", "-d", str(dictionary), "-m", "INVITE", "--maximumtime", "2")

    # Without the ban (its threshold above the dictionary) svcrack does find the password:
    # the tool works against this gateway.
    open_gw = await scanner_gateway(
        start_gateway, tmp_path, VOICETYPED_SIP_RATE_LIMIT__FAILURES_BEFORE_BAN="1000"
    )
    found = await sipvicious("svcrack", open_gw, *crack)
    assert re.search(rf"\|\s*100\s*\|\s*{PASSWORD}\s*\|", found.output), found.output[-2000:]

    gw = await scanner_gateway(start_gateway, tmp_path)
    out = await sipvicious("svcrack", gw, *crack)
    assert PASSWORD not in out.output, out.output[-2000:]
    assert "found nothing" in out.output, out.output[-2000:]
    # Exactly the configured number of failures, then nothing it sends is answered.
    assert metric(gw, "voicetyped_media_sip_requests_refused_total", reason="auth_failed") == 10
    assert metric(gw, "voicetyped_media_sip_bans_total", reason="auth_failed") == 1
    assert metric(gw, "voicetyped_media_sip_requests_refused_total", reason="banned") > 0
    assert metric(gw, "voicetyped_media_sip_bans_active") == 1
    (ban,) = gw.logged("SIP source banned")
    assert (ban["source"], ban["reason"], ban["ban_s"]) == (ATTACKER, "auth_failed", 600.0)
    assert await answered(gw, ATTACKER, "after-ban") == []
    # The exempt caller is still answered and its calls (with the right password) go through.
    assert (await answered(gw, CALLER, "legit"))[0].startswith("SIP/2.0 200 ")
    call = await authenticated_call(gw, tmp_path)
    assert call.code == 0, call.output[-2500:]
    assert PASSWORD not in gw.process.log.read_text()


# -- svmap -----------------------------------------------------------------------------------


async def test_svmap_sweeps_are_rate_limited_then_banned_while_exempt_calls_go_on(
    start_gateway: Any, tmp_path: Path
) -> None:
    gw = await scanner_gateway(start_gateway, tmp_path)
    # A legitimate call in progress through the whole sweep...
    during = asyncio.ensure_future(authenticated_call(gw, tmp_path, hold_ms=6000))
    (call,) = await gw.runtime.wait_call(timeout_s=15)
    # ...while svmap sweeps: the gateway's address 300 times (a /24 of one host).
    targets = tmp_path / "targets.txt"
    targets.write_text("127.0.0.1\n" * 300)
    out = await run(
        [tool("svmap"), "-I", str(targets), "-p", str(gw.sip_port)], cwd=gw.tmp, timeout_s=60
    )
    assert f"127.0.0.1:{gw.sip_port}" in out.output, out.output[-2000:]  # found, at first
    refused = "voicetyped_media_sip_requests_refused_total"
    # 60 in the burst (and its refill), then 503s until the 40th refusal bans the source.
    assert metric(gw, refused, reason="rate_limited") == 39
    assert metric(gw, "voicetyped_media_sip_bans_total", reason="rate_limited") == 1
    assert metric(gw, refused, reason="banned") > 100, "the rest of the sweep was dropped"
    assert metric(gw, "voicetyped_media_sip_sources_tracked") == 1
    (ban,) = gw.logged("SIP source banned")
    assert (ban["source"], ban["reason"]) == (ATTACKER, "rate_limited")
    # Banned: no answer over UDP, and a TCP connection is closed before anything is read.
    assert await answered(gw, ATTACKER, "udp-after-ban") == []
    assert await answered(gw, ATTACKER, "tcp-after-ban", "tcp") == []
    # The call that ran through the sweep ended normally; a new one gets through too.
    first = await during
    assert first.code == 0, first.output[-2500:]
    (ended,) = await call.wait_for("ended")
    assert ended.ended.reason == ENDED.REASON_CALLER_HANGUP
    after = await authenticated_call(gw, tmp_path)
    assert after.code == 0, after.output[-2500:]


# -- INVITEs from one source -----------------------------------------------------------------


async def test_invites_from_one_source_stop_at_the_call_ceiling(
    start_gateway: Any, tmp_path: Path
) -> None:
    gw = await start_gateway(VOICETYPED_MAX_CALLS_PER_SOURCE="3", **SCANNER_ENV)
    statuses = []
    for n in range(5):
        replies = await asyncio.to_thread(
            exchange, gw.sip_port, sip_invite(gw.sip_port, f"premium-{n}"), 3.0, "udp", ATTACKER
        )
        statuses.append(replies[-1].split("\r\n", 1)[0])
    assert statuses[:3] == ["SIP/2.0 200 OK"] * 3, statuses
    assert all(s.startswith("SIP/2.0 503 ") for s in statuses[3:]), statuses
    assert "too many calls at once from this source" in replies[-1]
    assert "Retry-After: 5" in replies[-1]
    assert metric(gw, "voicetyped_media_sip_requests_refused_total", reason="call_ceiling") == 2
    # Another source is not held to the attacker's ceiling, and exempt ones to none.
    other = await asyncio.to_thread(
        exchange, gw.sip_port, sip_invite(gw.sip_port, "other"), 3.0, "udp", "127.0.0.4"
    )
    assert other[-1].startswith("SIP/2.0 200 "), other
    # A call that ends gives its place back.
    (first, *_) = await gw.runtime.wait_call(count=4)
    gw.runtime.hangup(first.session_id)
    await eventually(
        lambda: metric(gw, "voicetyped_media_active_calls") == 3, 15, "the hung-up call gone"
    )
    again = await asyncio.to_thread(
        exchange, gw.sip_port, sip_invite(gw.sip_port, "premium-again"), 3.0, "udp", ATTACKER
    )
    assert again[-1].startswith("SIP/2.0 200 "), again
