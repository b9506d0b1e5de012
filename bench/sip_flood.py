"""Benchmark: legitimate calls while one source floods the SIP port (issue 20's flood test).

The four services and the example backend run as real processes (``voicetyped_dev.stack``),
with the media gateway's defaults except the exempt network: the legitimate caller, 127.0.0.1,
is the only exempt source (``VOICETYPED_SIP_RATE_LIMIT__EXEMPT_CIDRS``). 20 real SIP/RTP calls
(the scripted caller: Piper speaks, the bot's replies are timed at the caller) run in waves of
a few at once; each caller turn's latency is from its last speech sample to the bot's first
audio at the caller, as in ``bench/turn_latency.py``.

Same run, same stack: 20 calls while another process floods from 127.0.0.2 with 1,000 requests
a second (OPTIONS, INVITE with SDP, REGISTER in turn, each with its own Call-ID) for 20 s or
until the last call has ended, whichever is later; and the same 20 calls without the attack as
the baseline, half of them before the attack and half after, so that a change in the machine's
other load during the run weighs on both sides alike. Reported:

- legitimate calls dropped (refused, failed, or a turn the bot never answered): target 0;
- turn latency p50/p95 with and without the attack, and their ratio: target p95 <= 1.2x;
- when the attacker was banned: its requests until the ban (the last one answered + 1, from
  the Call-IDs of the answers it got) and seconds from the flood's start; the gateway's
  refusal counters and ban log line;
- the gateway's resident memory (RSS) before and after the attack.

    python bench/sip_flood.py --out bench/results/sip_flood.json [--calls 20] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicetyped_dev.caller.phone import Phone
from voicetyped_dev.caller.run import Voices, run_call
from voicetyped_dev.caller.script import Listen, ListenStep, Say, Step, Turn
from voicetyped_dev.stack import Stack, StackConfig
from voicetyped_testkit.stats import pct

REPO = Path(__file__).resolve().parents[1]
CALLER = "127.0.0.1"
ATTACKER = "127.0.0.2"
TARGETS = {"legit_calls_dropped": 0, "p95_ratio_attack_vs_baseline": 1.2}
ASK = "I want to check the status of my order."
BYE = "No, that's all, thanks."
_CALL_ID = re.compile(rb"(?i)\r\n(?:call-id|i)\s*:\s*flood-(\d+)")
WAVE = 4  # calls at once: turn_latency.py's comfortable level on 2 cores


def script() -> list[Step]:
    return [ListenStep(listen=Listen()), Say(say=ASK), Say(say=BYE)]


# -- the attacker (a process of its own: its loop must not slow the callers') ---------------


def _request(method: str, port: int, local_port: int, n: int) -> bytes:
    call_id = f"flood-{n}"
    sdp = (
        "v=0\r\no=x 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
        "m=audio 9 RTP/AVP 0\r\n"
        if method == "INVITE"
        else ""
    )
    user = f"9{n % 100000:05d}"  # premium-rate style numbers, a new one each time
    head = (
        f"{method} sip:{user}@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {ATTACKER}:{local_port};rport;branch=z9hG4bK{call_id}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:scan@{ATTACKER}>;tag={n}\r\n"
        f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n"
        f"Contact: <sip:scan@{ATTACKER}:{local_port}>\r\n"
    )
    body = f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
    return (head + (body if sdp else "Content-Length: 0\r\n\r\n")).encode()


def flood(port: int, rate: int, min_seconds: float, out: Path, stop_file: Path) -> None:
    """Send ``rate`` requests a second to ``port`` from 127.0.0.2 for at least ``min_seconds``
    and until ``stop_file`` exists; write what was sent and answered to ``out``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ATTACKER, 0))
    sock.setblocking(False)
    local_port = sock.getsockname()[1]
    methods = ("OPTIONS", "INVITE", "REGISTER")
    sent = 0
    answers: dict[str, int] = {}
    last_answered, last_answer_s = -1, 0.0
    start = time.perf_counter()
    tick = 0.01
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and stop_file.exists():
            break
        due = int(elapsed * rate)
        while sent < due:
            sock.sendto(_request(methods[sent % 3], port, local_port, sent), ("127.0.0.1", port))
            sent += 1
        while True:
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                break
            status = data.split(b" ", 2)[1].decode(errors="replace")
            answers[status] = answers.get(status, 0) + 1
            found = _CALL_ID.search(data)
            if found is not None:
                n = int(found.group(1))
                if n > last_answered:
                    last_answered, last_answer_s = n, time.perf_counter() - start
        time.sleep(tick)
    duration = time.perf_counter() - start
    out.write_text(
        json.dumps(
            {
                "sent": sent,
                "seconds": round(duration, 2),
                "rate_per_s": round(sent / duration),
                "answers_by_status": answers,
                "requests_until_ban": last_answered + 2 if last_answered >= 0 else None,
                "banned_after_s": round(last_answer_s, 3),
            }
        )
    )


# -- the legitimate calls -------------------------------------------------------------------


@dataclass
class Calls:
    latencies: list[float] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    count: int = 0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "calls": self.count,
            "dropped": len(self.dropped),
            "turns": len(self.latencies),
        }
        if self.dropped:
            out["dropped_detail"] = self.dropped
        if self.latencies:
            out |= {
                "p50_ms": round(pct(self.latencies, 0.5)),
                "p95_ms": round(pct(self.latencies, 0.95)),
                "max_ms": round(max(self.latencies)),
            }
        return out


async def calls(stack: Stack, voices: Voices, count: int, into: Calls) -> None:
    """``count`` calls from the exempt caller, ``WAVE`` at a time, recorded ``into``."""
    latencies, dropped = into.latencies, into.dropped
    into.count += count

    async def one(i: int) -> None:
        await asyncio.sleep((i % WAVE) * 1.3)  # not in lockstep
        phone = Phone(host=CALLER, rtp_ports=(44000 + i * 100, 44098 + i * 100))
        await phone.start()
        try:
            log = await run_call(
                f"sip:bot@127.0.0.1:{stack.sip_port}",
                script(),
                voices,
                phone=phone,
                transcribe=False,
            )
        except Exception as exc:  # a refused or broken call is a result here
            dropped.append(f"call {i}: {exc!r}")
            return
        finally:
            await phone.close()
        turns: list[Turn] = log.turns[1:]
        if log.failures or not turns or any(t.latency_s is None for t in turns):
            dropped.append(f"call {i}: {log.failures or 'a turn was not answered'}")
        latencies.extend(t.latency_s * 1000 for t in turns if t.latency_s is not None)

    for start in range(0, count, WAVE):
        await asyncio.gather(*(one(i) for i in range(start, min(start + WAVE, count))))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def sip_metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as reply:
        text = reply.read().decode()
    wanted = (
        "voicetyped_media_sip_requests_refused_total{",
        "voicetyped_media_sip_bans_total{",
        "voicetyped_media_sip_bans_active ",
        "voicetyped_media_sip_sources_tracked ",
        "voicetyped_media_calls_refused_total{",
        "voicetyped_media_calls_answered_total{",
    )
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(wanted)
    }


async def run(tmp: Path, count: int, seconds: float, rate: int) -> dict[str, Any]:
    voices = await asyncio.to_thread(Voices)
    config = StackConfig.with_example_backend(
        REPO,
        tmp / "stack",
        env={"media": {"VOICETYPED_SIP_RATE_LIMIT__EXEMPT_CIDRS": f'["{CALLER}/32"]'}},
    )
    stack = Stack(config)
    await stack.start()
    media = stack.services["media"]
    assert media.proc is not None
    pid, http = media.proc.pid, media.ports.http
    result: dict[str, Any] = {
        "benchmark": "sip_flood",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {"calls": count, "calls_at_once": WAVE, "flood_rate_per_s": rate},
    }
    try:
        baseline, attacked = Calls(), Calls()
        print(f"baseline, first half: {count // 2} calls, no attack", flush=True)
        await calls(stack, voices, count // 2, baseline)
        print(" ", baseline.summary(), flush=True)

        print(f"attack: {count} calls while {ATTACKER} floods {rate}/s", flush=True)
        rss_before = rss_kb(pid)
        flood_out, stop = tmp / "flood.json", tmp / "flood.stop"
        attacker = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "flood",
            "--port",
            str(stack.sip_port),
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
            "--out",
            str(flood_out),
            "--stop-file",
            str(stop),
        )
        try:
            await calls(stack, voices, count, attacked)
        finally:
            stop.touch()
            await asyncio.wait_for(attacker.wait(), seconds + 60)
        result["attack"] = attacked.summary()
        result["attack"]["attacker"] = json.loads(flood_out.read_text())
        result["attack"]["gateway_metrics"] = sip_metrics(http)
        bans = [
            json.loads(line)
            for line in media.log_path.read_text(errors="replace").splitlines()
            if '"SIP source banned"' in line
        ]
        result["attack"]["ban_log_lines"] = bans
        rss_after = rss_kb(pid)
        result["gateway_rss_kb"] = {
            "before_attack": rss_before,
            "after_attack": rss_after,
            "growth": rss_after - rss_before,
        }
        print(" ", {k: v for k, v in result["attack"].items() if k != "gateway_metrics"})
        print(f"baseline, second half: {count - count // 2} calls, no attack", flush=True)
        await calls(stack, voices, count - count // 2, baseline)
        result["baseline"] = baseline.summary()
        print(" ", result["baseline"], flush=True)
    finally:
        await stack.stop()

    base, attack = result["baseline"], result["attack"]
    dropped = base["dropped"] + attack["dropped"]
    ratio = (
        round(attack["p95_ms"] / base["p95_ms"], 3)
        if attack.get("p95_ms") and base.get("p95_ms")
        else None
    )
    result["legit_calls_dropped"] = attack["dropped"]
    result["p95_ratio_attack_vs_baseline"] = ratio
    result["requests_until_ban"] = attack["attacker"]["requests_until_ban"]
    result["targets"] = TARGETS
    result["meets_targets"] = {
        "no_legit_call_dropped": dropped == 0,
        "p95_within_1_2x": ratio is not None and ratio <= TARGETS["p95_ratio_attack_vs_baseline"],
        "attacker_banned": len(bans) == 1 and bans[0]["source"] == ATTACKER,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("flood", help="(internal) the attacker process")
    child.add_argument("--port", type=int, required=True)
    child.add_argument("--rate", type=int, required=True)
    child.add_argument("--seconds", type=float, required=True)
    child.add_argument("--out", type=Path, required=True)
    child.add_argument("--stop-file", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=1000)
    args = parser.parse_args()
    if args.command == "flood":
        flood(args.port, args.rate, args.seconds, args.out, args.stop_file)
        return
    if args.out is None:
        parser.error("--out is required")
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(Path(tmp), args.calls, args.seconds, args.rate))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps({k: v for k, v in result.items() if k not in ("baseline", "attack")}, indent=2)
    )


if __name__ == "__main__":
    main()
