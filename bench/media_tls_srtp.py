"""Benchmark: the media gateway's CPU per call-minute for SIP over TLS with SRTP against plain
SIP over UDP with RTP, measured in the same run.

The gateway runs as its own process (TLS listener with a throwaway certificate, SRTP policy
optional) with this benchmark's contract peers behind it (``voicetyped_testkit.media``). The
calls come from a small load generator in this process (SIPp has no TLS in Debian; pjsua2 costs
a core per few calls): per call an INVITE, 20 ms G.711 frames for ``--seconds``, a BYE. In
``tls_srtp`` mode the signalling is a TLS connection per call and the offer RTP/SAVP with
AES_CM_128_HMAC_SHA1_80 (each frame protected with pylibsrtp); in ``udp_rtp`` mode it is plain.
The gateway also sends its paced playout (silence) back, protected in tls_srtp mode.

The modes alternate (plain, TLS, plain, TLS...) so load from elsewhere on the machine falls on
both alike. Per round: the gateway process's user+system CPU while all calls are up, divided by
the call-minutes in that window. Reported: each round, the medians per mode and their ratio.

    python bench/media_tls_srtp.py --out bench/results/media_tls_srtp.json [--calls 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import ssl
import statistics
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pylibsrtp import Policy, Session
from voicetyped_media.rtp.srtp import SdesCrypto
from voicetyped_testkit.media import RuntimePeer, SpeechPeer
from voicetyped_testkit.pki import make_pki
from voicetyped_testkit.processes import ServiceProcess, free_port, free_sip_port

MODES = ("udp_rtp", "tls_srtp")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Sink(asyncio.DatagramProtocol):
    """RTP from the gateway (ignored), or SIP over UDP (queued)."""

    def __init__(self, queue: asyncio.Queue[bytes] | None = None) -> None:
        self.queue = queue

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.queue is not None:
            self.queue.put_nowait(data)


@dataclass
class Signalling:
    send: Any
    queue: asyncio.Queue[bytes]
    close: Any
    transport: str
    port: int

    async def final(self, method: str) -> str:
        """The final response to our ``method`` (provisional ones and retransmissions skipped)."""
        while True:
            text = (await asyncio.wait_for(self.queue.get(), 30)).decode(errors="replace")
            status = text.split(" ", 2)[1] if text.startswith("SIP/2.0 ") else "0"
            if int(status) >= 200 and f" {method}\r\n" in text.split("CSeq:", 1)[-1][:30]:
                return text


async def _tls_signalling(port: int, context: ssl.SSLContext) -> Signalling:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def read() -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            queue.put_nowait(head + (await reader.readexactly(length) if length else b""))

    task = asyncio.ensure_future(read())

    def close() -> None:
        task.cancel()
        writer.close()

    local = writer.get_extra_info("sockname")[1]
    return Signalling(writer.write, queue, close, "TLS", local)


async def _udp_signalling(port: int) -> Signalling:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Sink(queue), local_addr=("127.0.0.1", 0)
    )
    local = transport.get_extra_info("sockname")[1]
    return Signalling(
        lambda data: transport.sendto(data, ("127.0.0.1", port)),
        queue,
        transport.close,
        "UDP",
        local,
    )


def _request(
    method: str, uri: str, sig: Signalling, call_id: str, cseq: int, to_tag: str, body: str
) -> bytes:
    head = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/{sig.transport} 127.0.0.1:{sig.port};rport;"
        f"branch=z9hG4bK{secrets.token_hex(6)}",
        "Max-Forwards: 70",
        f"From: <sip:bench@127.0.0.1>;tag={call_id[:8]}",
        f"To: <sip:bot@127.0.0.1>{';tag=' + to_tag if to_tag else ''}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:bench@127.0.0.1:{sig.port};transport={sig.transport.lower()}>",
    ]
    if body:
        head.append("Content-Type: application/sdp")
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode()


@dataclass
class Up:
    """Calls with media flowing; ``all_up`` is set once every call of the round has it."""

    expected: int
    count: int = 0
    all_up: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, n: int) -> None:
        self.count += n
        if self.count >= self.expected:
            self.all_up.set()


async def one_call(
    mode: str, gw: dict[str, int], context: ssl.SSLContext, seconds: float, up: Up
) -> bool:
    loop = asyncio.get_running_loop()
    rtp, _ = await loop.create_datagram_endpoint(_Sink, local_addr=("127.0.0.1", 0))
    rtp_port = rtp.get_extra_info("sockname")[1]
    crypto = SdesCrypto.fresh(1, "AES_CM_128_HMAC_SHA1_80") if mode == "tls_srtp" else None
    if mode == "tls_srtp":
        sig = await _tls_signalling(gw["tls"], context)
        uri = f"sip:bot@127.0.0.1:{gw['tls']};transport=tls"
    else:
        sig = await _udp_signalling(gw["sip"])
        uri = f"sip:bot@127.0.0.1:{gw['sip']}"
    sdp = (
        "v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/{'SAVP' if crypto else 'AVP'} 0\r\na=rtpmap:0 PCMU/8000\r\n"
        + (f"a=crypto:{crypto.attribute()}\r\n" if crypto else "")
        + "a=ptime:20\r\na=sendrecv\r\n"
    )
    call_id = secrets.token_hex(10)
    try:
        sig.send(_request("INVITE", uri, sig, call_id, 1, "", sdp))
        ok = await sig.final("INVITE")
        if not ok.startswith("SIP/2.0 200"):
            return False
        to_tag = ok.split("\r\nTo:", 1)[1].split("\r\n", 1)[0].split(";tag=", 1)[1].strip()
        sig.send(_request("ACK", uri, sig, call_id, 1, to_tag, ""))
        body = ok.split("\r\n\r\n", 1)[1]
        remote = ("127.0.0.1", int(body.split("m=audio ", 1)[1].split(" ", 1)[0]))
        protect = (
            Session(Policy(crypto.key, Policy.SSRC_ANY_OUTBOUND)).protect
            if crypto
            else (lambda p: p)
        )
        ssrc, payload = secrets.randbits(32), bytes((i * 37) & 0xFF for i in range(160))
        up.add(1)
        start = loop.time()
        for n in range(int(seconds * 50)):
            header = struct.pack("!BBHII", 0x80, 0, n & 0xFFFF, n * 160 & 0xFFFFFFFF, ssrc)
            rtp.sendto(protect(header + payload), remote)
            await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - loop.time()))
        up.add(-1)
        sig.send(_request("BYE", uri, sig, call_id, 2, to_tag, ""))
        await sig.final("BYE")
        return True
    finally:
        sig.close()
        rtp.close()


async def round_(
    mode: str, calls: int, seconds: float, gw: dict[str, int], pid: int, context: ssl.SSLContext
) -> dict[str, Any]:
    up = Up(calls)
    tasks = [asyncio.ensure_future(one_call(mode, gw, context, seconds, up)) for _ in range(calls)]
    async with asyncio.timeout(30):  # a call that fails to set up fails the round here
        await up.all_up.wait()
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds - 4.0)  # the window: all calls up, before the first BYE
    cpu, window = cpu_seconds(pid) - cpu0, time.monotonic() - t0
    completed = sum(await asyncio.gather(*tasks))
    call_minutes = calls * window / 60
    return {
        "mode": mode,
        "calls": calls,
        "completed": completed,
        "window_s": round(window, 2),
        "gateway_cpu_s": round(cpu, 3),
        "cpu_s_per_call_minute": round(cpu / call_minutes, 4),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per mode, alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pki = make_pki(tmp / "pki")
        speech, runtime = SpeechPeer(), RuntimePeer()
        await speech.server.start()
        await runtime.server.start()
        gw = {"sip": free_sip_port(), "tls": free_sip_port()}
        http = free_port()
        process = ServiceProcess(
            "voicetyped_media",
            {
                **os.environ,
                "VOICETYPED_SIP_HOST": "127.0.0.1",
                "VOICETYPED_SIP_PORT": str(gw["sip"]),
                "VOICETYPED_SIP_TLS_PORT": str(gw["tls"]),
                "VOICETYPED_SIP_TRANSPORTS": '["udp", "tls"]',
                "VOICETYPED_TLS_CERT_FILE": str(pki.server.cert),
                "VOICETYPED_TLS_KEY_FILE": str(pki.server.key),
                "VOICETYPED_RTP_HOST": "127.0.0.1",
                "VOICETYPED_HTTP_HOST": "127.0.0.1",
                "VOICETYPED_HTTP_PORT": str(http),
                "VOICETYPED_GRPC_HOST": "127.0.0.1",
                "VOICETYPED_GRPC_PORT": str(free_port()),
                "VOICETYPED_SPEECH_TARGET": speech.service_endpoint,
                "VOICETYPED_RUNTIME_TARGET": runtime.endpoint,
                "VOICETYPED_LOG_LEVEL": "warning",
            },
            tmp / "media.log",
        )
        process.start()
        try:
            await process.wait_ready(http, 30)
            assert process.proc is not None
            context = ssl.create_default_context(cafile=str(pki.ca.cert))
            rounds = []
            for i in range(args.rounds):
                for mode in MODES:
                    print(f"round {i + 1}: {mode}, {args.calls} calls", flush=True)
                    outcome = await round_(
                        mode, args.calls, args.seconds, gw, process.proc.pid, context
                    )
                    print(" ", outcome, flush=True)
                    rounds.append(outcome)
        finally:
            process.stop()
            await speech.server.stop(0)
            await runtime.server.stop(0)
    median = {
        mode: statistics.median(r["cpu_s_per_call_minute"] for r in rounds if r["mode"] == mode)
        for mode in MODES
    }
    result = {
        "benchmark": "media_tls_srtp",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
        },
        "calls": args.calls,
        "call_seconds": args.seconds,
        "rounds": rounds,
        "cpu_s_per_call_minute": median,
        "ratio_tls_srtp_vs_udp_rtp": round(median["tls_srtp"] / median["udp_rtp"], 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps({k: result[k] for k in ("cpu_s_per_call_minute", "ratio_tls_srtp_vs_udp_rtp")})
    )


if __name__ == "__main__":
    asyncio.run(main())
