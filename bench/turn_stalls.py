"""Benchmark: the slowest turns (p99), over >= 100 turns of mixed short and long utterances.

The four services run as real processes (``voicetyped_dev.stack``) with a dialog that answers
every caller utterance with "Okay." (a cached prompt) and an unrecognised one with "Sorry?" (the
runtime's re-prompt for an empty final). The scripted caller places real SIP/RTP G.711 calls and
says a mix of one-word and long call-style phrases ("Yes.", "Goodbye.", "Thank you very much."
and the TUNING phrases), in the project's Piper voice and in espeak-ng voices (the voices a
slow or looping decode came from in issue 17). A turn is from the caller's last speech sample to
the first loud RTP frame of the reply; a turn never answered counts as infinitely slow.

Two runs, one call at a time (>= 100 turns) and four calls at once (>= 100 turns), each also
against the baseline in the same run: the same calls with decodes unbounded as they were before
(no deadline, Whisper's five temperature fallbacks, one recognition worker; :data:`UNBOUNDED`).

Target (issue 17): p99 <= 1 s, sequential and with 4 calls at once.

    python bench/turn_stalls.py --out bench/results/turn_stalls.json [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from voicetyped_dev.caller.phone import Phone
from voicetyped_dev.caller.run import Voices, run_call
from voicetyped_dev.caller.script import CallLog, Listen, ListenStep, Say, Step
from voicetyped_dev.stack import Stack, StackConfig
from voicetyped_testkit import espeak
from voicetyped_testkit.phrases import TUNING
from voicetyped_testkit.stats import pct

REPO = Path(__file__).resolve().parents[1]
TARGET_P99_MS = 1000.0
SHORT = ("Yes.", "Goodbye.", "No.", "Thank you very much.", "Okay.")
DIALOG = """\
apiVersion: voicetyped.io/v1alpha1
kind: Dialog
metadata:
  name: stalls-bench
spec:
  description: Answers every caller utterance at once; re-prompts one it did not recognise.
  initial: listen
  settings:
    voice: en_US-joe-medium
    no_input_timeout_ms: 600000
  states:
    listen:
      on_enter:
        - play_tts: {text: "Hello."}
      transitions:
        - event: speech
          actions:
            - play_tts: {text: "Okay."}
        - event: timeout
          timer: no_input
          actions:
            - play_tts: {text: "Sorry?"}
        - event: hangup
          target: done
    done:
      terminal: true
"""
UNBOUNDED = {
    "VOICETYPED_ASR__DEADLINE_MS": "0",
    "VOICETYPED_ASR__FALLBACK_TEMPERATURE": "0.2",
    "VOICETYPED_ASR__WORKERS": "1",
}
"""The baseline: decodes as before they were bounded (no deadline, Whisper's five fallbacks, one
recognition worker; the token cap and the text guards stay)."""
LISTEN = Listen(timeout_s=10.0, quiet_ms=400)
VOICES = ("piper", "en-us-male", "en-gb-female", "en-us-female", "en-caribbean-female")
"""One per call, round robin (espeak voice names as in ``voicetyped_testkit.espeak``)."""


def phrases(turns: int, offset: int) -> list[str]:
    """``turns`` phrases, a short one every other turn, the long ones from TUNING in turn."""
    out = []
    for i in range(turns):
        n = offset + i
        out.append(SHORT[(n // 2) % len(SHORT)] if n % 2 == 0 else TUNING[(n // 2) % len(TUNING)])
    return out


def espeak_speak(voice: espeak.EspeakVoice, text: str) -> NDArray[np.int16]:
    return espeak.speak_16k(text, voice)


def voices_for(base: Voices, name: str) -> Voices:
    if name == "piper":
        return base
    speakers = {v.name: v for v in espeak.VOICES}
    return base.speaking_as(functools.partial(espeak_speak, speakers[name]))


async def one_call(
    stack: Stack, voices: Voices, said: list[str], index: int, start_delay_s: float
) -> CallLog:
    await asyncio.sleep(start_delay_s)  # concurrent calls: not in lockstep
    steps: list[Step] = [ListenStep(listen=LISTEN)]
    steps += [Say(say=p, listen=LISTEN) for p in said]
    phone = Phone(rtp_ports=(45000 + index * 100, 45098 + index * 100))
    await phone.start()
    try:
        return await run_call(
            f"sip:bot@127.0.0.1:{stack.sip_port}", steps, voices, phone=phone, transcribe=False
        )
    finally:
        await phone.close()


def summarize(logs: list[CallLog], voice_names: list[str]) -> dict[str, Any]:
    turns = [(name, t) for log, name in zip(logs, voice_names, strict=True) for t in log.turns[1:]]
    ms = [t.latency_s * 1000 if t.latency_s is not None else math.inf for _, t in turns]
    finite = [m for m in ms if math.isfinite(m)]
    short = [m for (_, t), m in zip(turns, ms, strict=True) if t.caller in SHORT]
    out: dict[str, Any] = {
        "turns": len(ms),
        "unanswered": len(ms) - len(finite),
        "p50_ms": round(pct(ms, 0.5)) if finite else None,
        "p95_ms": pct(ms, 0.95),
        "p99_ms": pct(ms, 0.99),
        "max_ms": max(ms, default=math.nan),
        "short_utterances": {"turns": len(short), "p99_ms": pct(short, 0.99)},
        "over_1s": sorted(
            (
                {"voice": name, "said": t.caller, "ms": m}
                for (name, t), m in zip(turns, ms, strict=True)
                if m > TARGET_P99_MS
            ),
            key=lambda r: -r["ms"],
        ),
        "call_failures": [f for log in logs for f in log.failures],
    }
    for key in ("p95_ms", "p99_ms", "max_ms"):
        out[key] = round(out[key]) if math.isfinite(out[key]) else None  # JSON: null = stalled
    short_p99 = out["short_utterances"]["p99_ms"]
    out["short_utterances"]["p99_ms"] = round(short_p99) if math.isfinite(short_p99) else None
    return out


async def run_calls(
    stack: Stack, base: Voices, calls: int, turns_per_call: int, at_once: bool
) -> dict[str, Any]:
    names = [VOICES[i % len(VOICES)] for i in range(calls)]
    voices = [await asyncio.to_thread(voices_for, base, n) for n in names]
    said = [phrases(turns_per_call, i * turns_per_call) for i in range(calls)]
    if at_once:
        logs = list(
            await asyncio.gather(
                *(one_call(stack, voices[i], said[i], i, i * 0.7) for i in range(calls))
            )
        )
    else:
        logs = [await one_call(stack, voices[i], said[i], 0, 0) for i in range(calls)]
    return summarize(logs, names)


def stack_config(tmp: Path, name: str, speech_env: dict[str, str]) -> StackConfig:
    dialog = tmp / "stalls-bench.yaml"
    dialog.write_text(DIALOG)
    return StackConfig.with_example_backend(REPO, tmp / name, [dialog], env={"speech": speech_env})


async def measure(
    tmp: Path,
    name: str,
    speech_env: dict[str, str],
    base: Voices,
    runs: list[tuple[int, int, bool]],
) -> list[dict[str, Any]]:
    stack = Stack(stack_config(tmp, name, speech_env))
    await stack.start()
    results = []
    try:
        for calls, per_call, at_once in runs:
            print(f"{name}: {calls} calls x {per_call} turns, at once: {at_once}", flush=True)
            r = await run_calls(stack, base, calls, per_call, at_once)
            print("  ", {k: v for k, v in r.items() if k != "over_1s"}, flush=True)
            results.append(r)
    finally:
        await stack.stop()
    return results


async def run(tmp: Path, quick: bool) -> dict[str, Any]:
    base = await asyncio.to_thread(Voices)
    sequential = (2, 10, False) if quick else (5, 21, False)
    concurrent = (4, 5, True) if quick else (4, 25, True)
    result: dict[str, Any] = {
        "benchmark": "turn_stalls",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "loadavg_start": os.getloadavg(),
        "target_p99_ms": TARGET_P99_MS,
    }
    seq, conc = await measure(tmp, "bounded", {}, base, [sequential, concurrent])
    baseline, baseline_conc = await measure(
        tmp, "unbounded", UNBOUNDED, base, [sequential, concurrent]
    )
    result |= {
        "sequential": seq,
        "four_calls_at_once": conc,
        "baseline_unbounded": baseline,
        "baseline_four_calls_at_once": baseline_conc,
    }
    for key, ours, theirs in (
        ("p99_ratio_vs_baseline", seq, baseline),
        ("four_calls_p99_ratio_vs_baseline", conc, baseline_conc),
    ):
        if ours["p99_ms"] and theirs["p99_ms"]:
            result[key] = round(ours["p99_ms"] / theirs["p99_ms"], 3)
    result["meets_target"] = {
        "sequential_p99": seq["p99_ms"] is not None and seq["p99_ms"] <= TARGET_P99_MS,
        "four_calls_p99": conc["p99_ms"] is not None and conc["p99_ms"] <= TARGET_P99_MS,
    }
    result["loadavg_end"] = os.getloadavg()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="20 sequential turns, 4x5 at once")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(Path(tmp), args.quick))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for key in (
        "sequential",
        "four_calls_at_once",
        "baseline_unbounded",
        "baseline_four_calls_at_once",
    ):
        print(key, {k: v for k, v in result[key].items() if k != "over_1s"})
    print("meets target:", result["meets_target"])


if __name__ == "__main__":
    main()
