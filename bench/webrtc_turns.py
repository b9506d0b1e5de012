"""Benchmark: turn latency of browser (WebRTC) calls, with SIP calls in the same run as the
baseline, on one machine (2 cores).

The four services and the example backend run as real processes (``voicetyped_dev.stack``,
WebRTC on as under ``voicetyped up``). Browser calls are placed by an aiortc peer
(``voicetyped_testkit.webrtc_peer``: token, offer, ICE host candidates, DTLS-SRTP, Opus 48 kHz,
what a browser does) saying the caller's words (Piper, 16 kHz, sent in real time); SIP calls by
the scripted caller over G.711. A turn runs from the caller's last speech sample to the first
loud frame of the reply reaching the caller, split into the same stages as SIP
(``voicetyped_dev.caller.stages``: end_of_speech, final, decision, tts, playout, network) from
the call's spans. Over WebRTC ``network`` also holds aiortc's Opus encode, SRTP and the
receiving peer's jitter buffer and decode.

    python bench/webrtc_turns.py --out bench/results/webrtc_turns.json [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from voicetyped_dev.caller.run import Voices, run_call
from voicetyped_dev.caller.script import Listen, ListenStep, Say, Step
from voicetyped_dev.caller.stages import (
    COMPLETE,
    await_stages,
    load_spans,
    session_trace,
    turn_stages,
)
from voicetyped_dev.stack import Stack, StackConfig
from voicetyped_testkit.processes import eventually
from voicetyped_testkit.stats import pct
from voicetyped_testkit.webrtc_peer import WebRtcPeer

REPO = Path(__file__).resolve().parents[1]
SAID = [
    "I want to check the status of my order.",
    "My order number is four eight two one three.",
    "No, that's all, thanks.",
]
REPLY_DONE_S = 1.0  # the bot quiet this long: its reply (all of its prompts) is over


async def webrtc_call(stack: Stack, voices: Voices) -> list[dict[str, Any]]:
    """One browser call through the order-status dialog: each turn's latency and stages."""
    speech = [await asyncio.to_thread(voices.speak_16k, text) for text in SAID]
    peer = WebRtcPeer()
    began = time.time()
    timed: list[tuple[str, float, float]] = []
    try:
        await peer.call(f"http://127.0.0.1:{stack.ports['media'].http}")
        await eventually(lambda: peer.quiet_after(began, REPLY_DONE_S), 30, "the greeting")
        for text, pcm in zip(SAID, speech, strict=True):
            peer.say(pcm)
            stopped = await peer.said()
            heard = await eventually(partial(peer.first_loud_after, stopped), 20, "a reply")
            timed.append((text, stopped, heard))
            await eventually(partial(reply_over, peer, heard), 30, "its end")
    finally:
        await peer.close()
    out = []
    for text, stopped, heard in timed:
        stages = await eventually(
            partial(_stages, stack, peer.session_id, stopped, heard),
            10,
            "the turn's spans",
        )
        out.append({"caller": text, "latency_s": heard - stopped, "stages": stages})
    return out


def reply_over(peer: WebRtcPeer, began: float) -> bool:
    """The bot's reply that began at ``began`` is over (or the bot hung up)."""
    return peer.quiet_after(began, REPLY_DONE_S) is not None or peer.hung_up


def _stages(stack: Stack, session_id: str, stopped: float, heard: float) -> dict[str, float] | None:
    spans = load_spans(stack.trace_dir)
    stages = turn_stages(spans, stopped, heard, session_trace(spans, session_id))
    return stages if stages is not None and stages.keys() >= COMPLETE else None


async def sip_call(stack: Stack, voices: Voices) -> list[dict[str, Any]]:
    steps: list[Step] = [ListenStep(listen=Listen()), *(Say(say=text) for text in SAID)]
    log = await run_call(f"sip:bot@127.0.0.1:{stack.sip_port}", steps, voices, transcribe=False)
    await await_stages(log, stack.trace_dir)
    return [
        {"caller": t.caller, "latency_s": t.latency_s, "stages": t.stages or {}}
        for t in log.turns[1:]
        if t.latency_s is not None
    ]


def summarize(turns: list[dict[str, Any]]) -> dict[str, Any]:
    ms = [t["latency_s"] * 1000 for t in turns]
    out: dict[str, Any] = {"turns": len(ms)}
    if not ms:
        return out
    out |= {"p50_ms": round(pct(ms, 0.5)), "p95_ms": round(pct(ms, 0.95)), "max_ms": round(max(ms))}
    stages: dict[str, list[float]] = {}
    for t in turns:
        for name, seconds in t["stages"].items():
            stages.setdefault(name, []).append(seconds * 1000)
    out["stage_median_ms"] = {n: round(statistics.median(v), 1) for n, v in stages.items()}
    out["stage_p95_ms"] = {n: round(pct(v, 0.95), 1) for n, v in stages.items()}
    return out


async def run(tmp: Path, quick: bool) -> dict[str, Any]:
    voices = await asyncio.to_thread(Voices)
    result: dict[str, Any] = {
        "benchmark": "webrtc_turns",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    stack = Stack(StackConfig.with_example_backend(REPO, tmp / "stack"))
    await stack.start()
    turns: dict[str, list[dict[str, Any]]] = {"webrtc": [], "sip": []}
    try:
        for n in range(1 if quick else 4):  # alternating, so both see the same machine
            print(f"call pair {n + 1}", flush=True)
            turns["webrtc"] += await webrtc_call(stack, voices)
            turns["sip"] += await sip_call(stack, voices)
    finally:
        await stack.stop()
    for name, mine in turns.items():
        result[name] = summarize(mine)
        result[name]["per_turn"] = [
            {
                "caller": t["caller"],
                "latency_ms": round(t["latency_s"] * 1000),
                "stages_ms": {k: round(v * 1000, 1) for k, v in t["stages"].items()},
            }
            for t in mine
        ]
    w, s = result["webrtc"], result["sip"]
    if w.get("p50_ms") and s.get("p50_ms"):
        result["webrtc_vs_sip"] = {
            "p50": round(w["p50_ms"] / s["p50_ms"], 3),
            "p95": round(w["p95_ms"] / s["p95_ms"], 3),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(Path(tmp), args.quick))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("webrtc", "sip")}, indent=2))
    for name in ("webrtc", "sip"):
        print(name, json.dumps({k: v for k, v in result[name].items() if k != "per_turn"}))


if __name__ == "__main__":
    main()
