"""Benchmark: turn latency of the whole pipeline on one machine (2 cores).

The four services and the example backend run as real processes (``voicetyped_dev.stack``);
calls are real SIP/RTP (G.711) from the scripted caller (``voicetyped_dev.caller``), the
caller's words spoken by Piper, the bot's replies transcribed by whisper.cpp. A turn is from the
caller's last speech sample to the first loud RTP frame of the reply arriving at the caller;
each turn is split into stages from the call's OpenTelemetry spans (end of speech, final
transcript, FSM decision, TTS first audio, first RTP out, network).

Two kinds of turns, as in the target: replies that are a fixed (cached) prompt, and replies to a
backend lookup (the order-status dialog's "One moment while I look up order N", a templated
prompt, while the lookup runs). Baseline, same run: the naive speech settings (decode when the
end is declared, Whisper's full window, no speculation).

Targets on 2 cores: p50 <= 450 ms, p95 <= 700 ms. Also: how many concurrent calls keep p95 < 1 s,
and how many calls of each level the speech gateway refused at capacity (503; docs/autoscaling.md).
The concurrency curve (calls -> p50/p95, CPU seconds per call of each service) is measured for
today's speech settings and, in the same run, for the previous design (float16 weights, every
decode its own two threads: ``VOICETYPED_ASR__QUANTIZATION=f16``,
``VOICETYPED_ASR__SHARE_THREADS=false``); both are plotted beside the JSON (``.png``).

    python bench/turn_latency.py --out bench/results/turn_latency.json [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

from voicetyped_dev.caller.phone import Phone
from voicetyped_dev.caller.run import Voices, run_call, transcribe_turns
from voicetyped_dev.caller.script import CallLog, Listen, ListenStep, Say, Step, Turn
from voicetyped_dev.caller.stages import await_stages
from voicetyped_dev.stack import Stack, StackConfig
from voicetyped_testkit.processes import cpu_seconds
from voicetyped_testkit.stats import pct

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"p50_ms": 450.0, "p95_ms": 700.0, "concurrent_p95_ms": 1000.0}
ASK = "I want to check the status of my order."
NUMBER = "My order number is four eight two one three."
ANOTHER = "Yes, I have another order."
BYE = "No, that's all, thanks."


def script(lookups: int) -> list[Step]:
    steps: list[Step] = [ListenStep(listen=Listen()), Say(say=ASK)]
    for n in range(lookups):
        steps.append(Say(say=NUMBER))
        if n < lookups - 1:
            steps.append(Say(say=ANOTHER))
    steps.append(Say(say=BYE))
    return steps


def kind(turn: Turn) -> str:
    return "backend" if turn.caller == NUMBER else "cached"


def summarize(turns: list[Turn]) -> dict[str, Any]:
    timed = [t for t in turns if t.latency_s is not None]
    out: dict[str, Any] = {"turns": len(timed)}
    if not timed:
        return out
    ms = [t.latency_s * 1000 for t in timed if t.latency_s is not None]
    out |= {"p50_ms": round(pct(ms, 0.5)), "p95_ms": round(pct(ms, 0.95)), "max_ms": round(max(ms))}
    for k in ("cached", "backend"):
        mine = [t.latency_s * 1000 for t in timed if kind(t) == k and t.latency_s is not None]
        if mine:
            out[k] = {
                "turns": len(mine),
                "p50_ms": round(pct(mine, 0.5)),
                "p95_ms": round(pct(mine, 0.95)),
            }
    stages: dict[str, list[float]] = {}
    for t in timed:
        for name, seconds in (t.stages or {}).items():
            stages.setdefault(name, []).append(seconds * 1000)
    out["stage_median_ms"] = {n: round(statistics.median(v), 1) for n, v in stages.items()}
    out["stage_p95_ms"] = {n: round(pct(v, 0.95), 1) for n, v in stages.items()}
    return out


async def calls(
    stack: Stack, voices: Voices, count: int, lookups: int, refused: list[str] | None = None
) -> list[Turn]:
    """The turns of ``count`` calls; ``refused`` gets the failure of each call that was not
    answered (beyond the speech gateway's capacity: 503)."""

    async def one(i: int) -> CallLog:
        await asyncio.sleep(i * 1.3)  # not in lockstep
        phone = Phone(rtp_ports=(44000 + i * 100, 44098 + i * 100))
        await phone.start()
        try:
            log = await run_call(
                f"sip:bot@127.0.0.1:{stack.sip_port}",
                script(lookups),
                voices,
                phone=phone,
                transcribe=False,  # afterwards: the measuring must not load the machine
            )
        finally:
            await phone.close()
        await await_stages(log, stack.trace_dir)
        if log.failures:
            print("  call problems:", log.failures, flush=True)
        return log

    logs = await asyncio.gather(*(one(i) for i in range(count)))
    if refused is not None:
        refused += [f for log in logs for f in log.failures if "was not answered" in f]
    for log in logs:
        await transcribe_turns(log, voices)
    return [t for log in logs for t in log.turns[1:]]


def config(tmp: Path, name: str, env: dict[str, dict[str, str]] | None = None) -> StackConfig:
    return StackConfig.with_example_backend(REPO, tmp / name, env=env)


def service_cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds each service process has used so far (user + system)."""
    return {
        name: cpu_seconds(service.proc.pid)
        for name, service in stack.services.items()
        if service.proc is not None
    }


async def concurrency(stack: Stack, voices: Voices, quick: bool) -> tuple[list[Any], int]:
    """Levels of concurrent calls until p95 crosses 1 s: (levels, most calls under it)."""
    levels = []
    sustainable = 0
    # The caller (Piper + RTP for every simulated phone) runs on the same two cores, so this
    # is a conservative figure for the stack.
    for n in [2] if quick else [2, 4, 6, 8, 12, 16, 20]:
        print(f"{n} concurrent calls", flush=True)
        not_answered: list[str] = []
        before = service_cpu(stack)
        level = summarize(await calls(stack, voices, n, 2, not_answered))
        after = service_cpu(stack)
        level["calls"] = n
        level["refused"] = len(not_answered)  # 503: speech at capacity
        level["cpu_s_per_call"] = {
            name: round((after[name] - before.get(name, 0.0)) / n, 2) for name in after
        }
        level["cpu_s_per_call"]["all"] = round(sum(level["cpu_s_per_call"].values()), 2)
        levels.append(level)
        print(" ", level, flush=True)
        if level.get("p95_ms", 1e9) >= TARGETS["concurrent_p95_ms"]:
            break
        sustainable = n
    return levels, sustainable


def level_ratios(today: list[Any], previous: list[Any]) -> list[dict[str, Any]]:
    """Per concurrency level both designs reached: today's p50, p95 and CPU per call over the
    previous design's."""
    old = {lv["calls"]: lv for lv in previous}
    out = []
    for lv in today:
        was = old.get(lv["calls"])
        if was is None or "p95_ms" not in lv or "p95_ms" not in was:
            continue
        out.append(
            {
                "calls": lv["calls"],
                "p50": round(lv["p50_ms"] / was["p50_ms"], 3),
                "p95": round(lv["p95_ms"] / was["p95_ms"], 3),
                "cpu_per_call": round(
                    lv["cpu_s_per_call"]["all"] / max(was["cpu_s_per_call"]["all"], 1e-9), 3
                ),
            }
        )
    return out


def plot(curves: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, cpu) = plt.subplots(1, 2, figsize=(12, 4.5))
    for (name, levels), colour in zip(curves.items(), ("tab:blue", "tab:grey"), strict=False):
        xs = [lv["calls"] for lv in levels if "p95_ms" in lv]
        lat.plot(xs, [lv["p50_ms"] for lv in levels if "p95_ms" in lv], "o--", color=colour,
                 label=f"{name} p50")  # fmt: skip
        lat.plot(xs, [lv["p95_ms"] for lv in levels if "p95_ms" in lv], "o-", color=colour,
                 label=f"{name} p95")  # fmt: skip
        cpu.plot([lv["calls"] for lv in levels], [lv["cpu_s_per_call"]["all"] for lv in levels],
                 "o-", color=colour, label=name)  # fmt: skip
    lat.axhline(TARGETS["p95_ms"], color="tab:red", lw=0.8, ls=":", label="p95 target")
    lat.set_xlabel("concurrent calls (2 cores; the callers run on them too)")
    lat.set_ylabel("turn latency (ms)")
    lat.legend(fontsize=8)
    cpu.set_xlabel("concurrent calls")
    cpu.set_ylabel("CPU seconds per call, all services (5 turns)")
    cpu.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def run(tmp: Path, quick: bool) -> dict[str, Any]:
    voices = await asyncio.to_thread(Voices)
    result: dict[str, Any] = {
        "benchmark": "turn_latency",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    stack = Stack(config(tmp, "default"))
    await stack.start()
    try:
        print("sequential calls", flush=True)
        turns: list[Turn] = []
        for _ in range(1 if quick else 4):
            turns += await calls(stack, voices, 1, 2 if quick else 4)
        result["sequential"] = summarize(turns)
        result["sequential"]["per_turn"] = [
            {
                "caller": t.caller,
                "kind": kind(t),
                "bot": t.bot.text if t.bot is not None else None,
                "latency_ms": round(t.latency_s * 1000) if t.latency_s is not None else None,
                "stages_ms": {k: round(v * 1000, 1) for k, v in (t.stages or {}).items()},
            }
            for t in turns
        ]
        print(" ", {k: v for k, v in result["sequential"].items() if k != "per_turn"}, flush=True)
        levels, sustainable = await concurrency(stack, voices, quick)
        if not sustainable and result["sequential"].get("p95_ms", 1e9) < 1000:
            sustainable = 1
        result["concurrency"] = levels
        result["sustainable_calls_p95_under_1s"] = sustainable
    finally:
        await stack.stop()

    print("previous design: float16 weights, every decode its own two threads", flush=True)
    previous = {
        "speech": {"VOICETYPED_ASR__QUANTIZATION": "f16", "VOICETYPED_ASR__SHARE_THREADS": "false"}
    }
    old_stack = Stack(config(tmp, "previous", previous))
    await old_stack.start()
    try:
        old_levels, old_sustainable = await concurrency(old_stack, voices, quick)
    finally:
        await old_stack.stop()
    result["concurrency_previous_design"] = old_levels
    result["sustainable_calls_previous_design"] = old_sustainable
    result["ratio_vs_previous_design"] = level_ratios(levels, old_levels)

    print("baseline: decode at the end, full window, no speculation", flush=True)
    naive = {
        "speech": {
            "VOICETYPED_STREAMING__SPECULATE": "false",
            "VOICETYPED_ASR__MIN_AUDIO_CTX": "0",
        }
    }
    base_stack = Stack(config(tmp, "baseline", naive))
    await base_stack.start()
    try:
        result["baseline_naive_speech"] = summarize(await calls(base_stack, voices, 1, 2))
    finally:
        await base_stack.stop()
    print(" ", result["baseline_naive_speech"], flush=True)

    seq, base = result["sequential"], result["baseline_naive_speech"]
    if seq.get("p50_ms") and base.get("p50_ms"):
        result["ratio_vs_baseline"] = {"p50": round(seq["p50_ms"] / base["p50_ms"], 3)}
    result["targets"] = TARGETS
    result["meets_targets"] = {
        "p50": seq.get("p50_ms", 1e9) <= TARGETS["p50_ms"],
        "p95": seq.get("p95_ms", 1e9) <= TARGETS["p95_ms"],
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
    curves = {
        "today": result["concurrency"],
        "previous design (f16, own threads)": result["concurrency_previous_design"],
    }
    plot(curves, args.out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k != "sequential"}, indent=2))
    print(json.dumps({k: v for k, v in result["sequential"].items() if k != "per_turn"}, indent=2))


if __name__ == "__main__":
    main()
