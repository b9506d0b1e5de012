"""Benchmark of the synthesis layer: time to first audio, real-time factor, resampling, barge-in.

    python images/speech/bench/tts_latency.py [--out /tmp/tts.json]

Uses the bundled Piper voice and ``voicetyped_speech.tts.Synthesizer`` with 2 workers, as the
speech service does. Figures depend on the machine's other load: the load average is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from voicetyped_speech.tts import DEFAULT_VOICE, Synthesizer, VoiceRegistry

PROMPTS = [
    "Thank you for calling Acme. How can I help you today?",
    "Please hold while I transfer you to the billing department.",
    "I am sorry, I did not catch that.",
    "Your call is important to us.",
    "For billing questions, press one. For technical support, press two.",
    "Please say or enter your account number, followed by the pound key.",
    "I can help you with that.",
    "Your payment of forty two dollars was received on Tuesday.",
    "Is there anything else I can help you with?",
    "Thank you for calling. Goodbye.",
    "Let me check that for you.",
]
LONG_FIRST = (
    "Your account balance is forty two dollars and seventeen cents, and your next payment of "
    "twenty dollars is due on the fifteenth of December. Thank you."
)
LONG_LATER = (
    "Okay. I have found your account, and I can see that your last three payments arrived on "
    "time. Your next statement will be mailed on the first of the month, and it will include "
    "the late fee refund that we discussed earlier in this call. Is there anything else?"
)


def summary(xs: list[float], scale: float = 1000.0) -> dict[str, float]:
    """p50/p90/max (milliseconds by default)."""
    s = sorted(xs)
    return {
        "n": len(s),
        "p50": round(statistics.median(s) * scale, 2),
        "p90": round(s[min(len(s) - 1, int(len(s) * 0.9))] * scale, 2),
        "max": round(s[-1] * scale, 2),
    }


async def ttfa(synth: Synthesizer, text: str, rate: int, rid: str) -> float:
    t0 = time.perf_counter()
    first = 0.0
    async for _ in synth.synthesize(text, DEFAULT_VOICE, rate, rid):
        if not first:
            first = time.perf_counter() - t0
    return first


async def cancel_latency(synth: Synthesizer, text: str, when: str, rid: str) -> tuple[float, int]:
    """(seconds from cancel() to the iterator's end, frames yielded after cancel returned)."""
    after = 0
    cancelled = False
    got = asyncio.Event()
    done_at = 0.0

    async def consumer() -> None:
        nonlocal after, done_at
        async for _ in synth.synthesize(text, DEFAULT_VOICE, 8000, rid):
            after += cancelled
            got.set()
        done_at = time.perf_counter()

    task = asyncio.create_task(consumer())
    if when == "later":
        await got.wait()
        await asyncio.sleep(random.uniform(0.0, 0.1))
    else:
        await asyncio.sleep(random.uniform(0.0, 0.08))
    t0 = time.perf_counter()
    synth.cancel(rid)
    cancelled = True
    await task
    return done_at - t0, after


async def loop_gap_during(coro: Any) -> tuple[Any, float]:
    gap = 0.0
    stop = False

    async def ticker() -> None:
        nonlocal gap
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gap = max(gap, now - last)
            last = now

    t = asyncio.create_task(ticker())
    result = await coro
    stop = True
    await t
    return result, gap


def resample_cost(registry: VoiceRegistry) -> dict[str, Any]:
    """Streaming soxr cost per second of audio on real Piper sentences (22050 Hz float32)."""
    piper = registry.get(DEFAULT_VOICE).piper
    chunks = [
        np.asarray(c.audio_float_array, dtype=np.float32)
        for p in PROMPTS
        for c in piper.synthesize(p)
    ]
    seconds = sum(len(c) for c in chunks) / 22050
    out: dict[str, Any] = {"audio_seconds": round(seconds, 2)}
    for quality in ("HQ", "VHQ"):
        for rate in (8000, 16000):
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                rs = soxr.ResampleStream(22050, rate, 1, dtype="float32", quality=quality)
                for i, c in enumerate(chunks):
                    rs.resample_chunk(c, last=i == len(chunks) - 1)
                best = min(best, time.perf_counter() - t0)
            out[f"{quality}_{rate}_ms_per_audio_s"] = round(best / seconds * 1000, 3)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
        }
    }
    t0 = time.perf_counter()
    registry = VoiceRegistry()
    voice = await registry.aget(DEFAULT_VOICE)
    results["voice_load_s"] = round(time.perf_counter() - t0, 3)
    synth = Synthesizer(registry, workers=2)
    await ttfa(synth, "Warm up.", 8000, "warm")  # first ONNX run allocates
    for rate in (8000, 16000):
        uncached = [await ttfa(synth, p, rate, f"u{rate}-{i}") for i, p in enumerate(PROMPTS)]
        cached = [
            await ttfa(synth, p, rate, f"c{rate}-{i}-{r}")
            for r in range(args.repeats)
            for i, p in enumerate(PROMPTS)
        ]
        results[f"ttfa_uncached_{rate}_ms"] = summary(uncached)
        results[f"ttfa_cached_{rate}_ms"] = summary(cached)
    st = synth.stats
    results["rtf"] = round(st.rtf, 4)
    results["rtf_detail"] = {
        "units": st.units,
        "audio_s": round(st.audio_seconds, 2),
        "compute_s": round(st.compute_seconds, 3),
        "resample_s": round(st.resample_seconds, 4),
    }
    results["resampling"] = resample_cost(registry)

    lat: dict[str, list[float]] = {"first": [], "later": []}
    leaks = 0
    for when, text in (("first", LONG_FIRST), ("later", LONG_LATER)):
        for i in range(args.cancels):
            latency, after = await cancel_latency(synth, text, when, f"x-{when}-{i}")
            lat[when].append(latency)
            leaks += after
            for _ in range(300):  # let the discarded unit finish: independent trials
                if not synth.busy_workers:
                    break
                await asyncio.sleep(0.01)
    results["cancel_ms"] = {k: summary(v) for k, v in lat.items()}
    results["frames_after_cancel"] = leaks
    await synth.aclose(wait=True)

    conc = Synthesizer(registry, workers=2)
    texts = [PROMPTS[0] + " " + LONG_LATER, LONG_FIRST, PROMPTS[4], PROMPTS[5]]
    t0 = time.perf_counter()
    firsts, gap = await loop_gap_during(
        asyncio.gather(*(ttfa(conc, t, 8000, f"p{i}") for i, t in enumerate(texts)))
    )
    results["concurrent_4_on_2_workers"] = {
        "ttfa_ms": [round(f * 1000, 1) for f in firsts],
        "total_s": round(time.perf_counter() - t0, 3),
        "loop_max_gap_ms": round(gap * 1000, 1),
    }
    await conc.aclose(wait=True)
    results["voice_identity"] = voice.identity[:16]
    results["machine"]["loadavg_end"] = os.getloadavg()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="cached runs per prompt")
    parser.add_argument("--cancels", type=int, default=15, help="barge-in trials per position")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
