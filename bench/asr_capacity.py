"""Benchmark: how much recognition one machine does -- quantized weights and thread layouts.

Speech decoding is what limits calls per core (media carries ~150 calls a core), so this measures
the decoder itself, saturated: ``workers`` recognisers (one whisper.cpp context each, as the
speech gateway's ASR pool has) decode telephone utterances back to back, each with ``threads``
compute threads, for every combination of

- weights: float16 (today's file), q8_0 and q5_1, all written by our own converter
  (``voicetyped_speech.models.ggml_quantize``) from the same CTranslate2 tiny.en;
- layout: 2 workers x 2 threads (the gateway's default), 2 x 1, 1 x 2.

Second, the **load curve**: N simulated calls each hand the speech gateway's real recognition
pool (``voicetyped_speech.asr.pool.RecognitionPool``) one final every ~4.5 s (a caller turn and
the bot's reply; uniform 3.5-5.5 s, random phase), open loop, for the default layout (2 workers
x 2 threads), 2 x 1, and 2 workers sharing 2 threads (``shared_threads``: a decode alone gets
both, two running get one each), with float16 and q8_0 weights. Reported per N: decode latency
(queueing + decode) p50/p95 and CPU per call; the most calls whose p95 stays within
``DECODE_P95_BUDGET_MS`` is the capacity (600 ms: bench/turn_latency.py counts calls while a
turn's p95 stays under 1 s, and end-of-speech detection, decision, TTS and playout take ~400 ms
of a turn). Partials are left out (the pool sheds them first under load).

Utterances: the TUNING caller phrases (``voicetyped_testkit.phrases``; the held-out set stays
with bench/recognition.py) said by Piper and three espeak-ng voices, through G.711 mu-law, with
the recogniser's own settings (shortened encoder window, one segment). Reported per combination:
audio seconds recognised per wall second and per CPU-core second (the capacity), decode latency
p50/p95 while saturated, CPU seconds per audio second, and WER (jiwer-style word errors over the
whole set, ``voicetyped_testkit.speech.word_errors``). Baseline: float16 at the default layout,
in the same run. A PNG beside the JSON plots capacity against p95 latency.

    python bench/asr_capacity.py --out bench/results/asr_capacity.json [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import resource
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from voicetyped_speech.asr.pool import Deadline, Overloaded, RecognitionPool
from voicetyped_speech.asr.whispercpp import WhisperCppRecognizer
from voicetyped_speech.models.ggml_converter import convert_ct2_to_ggml
from voicetyped_speech.models.ggml_quantize import QUANTIZATIONS, Quantization
from voicetyped_speech.models.prepare import locate_bundled
from voicetyped_speech.models.verify import load_voice, synthesize_16k
from voicetyped_testkit import espeak
from voicetyped_testkit.phrases import TUNING
from voicetyped_testkit.speech import silence, telephone, to_pcm, word_errors

DECODE_P95_BUDGET_MS = 600.0
TURN_INTERVAL_S = (3.5, 5.5)
LEVEL_S = 20.0
CURVE_LEVELS = (4, 8, 12, 16, 20, 24)
CURVE_CONFIGS: tuple[tuple[str, Quantization, int, int, bool], ...] = (
    ("f16 2x2 (today)", "f16", 2, 2, False),
    ("f16 2x1", "f16", 2, 1, False),
    ("f16 2 share 2", "f16", 2, 2, True),
    ("q8_0 2x2", "q8_0", 2, 2, False),
    ("q8_0 2x1", "q8_0", 2, 1, False),
    ("q8_0 2 share 2", "q8_0", 2, 2, True),
)
"""(name, weights, workers, threads, shared): ``shared`` gives the pool ``threads`` to share."""
LAYOUTS: tuple[tuple[int, int], ...] = ((2, 2), (2, 1), (1, 2))
"""(workers, threads per worker); the first is the speech gateway's default."""
BASELINE = ("f16", (2, 2))
ESPEAK_VOICES = ("en-us-male", "en-gb-female", "en-caribbean-female")
CORES = os.cpu_count() or 1

Clip = tuple[str, np.ndarray[Any, np.dtype[np.float32]]]
PAD_BEFORE_S, PAD_AFTER_S = 0.2, 0.4
"""Silence around each utterance, as the gateway's VAD segments carry (pre-roll, hangover)."""


def clips(quick: bool) -> list[Clip]:
    """(reference, 16 kHz float audio after a G.711 leg) for every phrase and voice."""
    bundled = locate_bundled()
    piper = load_voice(bundled.voice_model, bundled.voice_config)
    phrases = TUNING[:8] if quick else TUNING
    voices = {v.name: v for v in espeak.VOICES}
    out: list[Clip] = []
    for text in phrases:
        spoken = [to_pcm(synthesize_16k(piper, text))]
        spoken += [espeak.speak_16k(text, voices[name]) for name in ESPEAK_VOICES]
        for pcm in spoken:
            padded = np.concatenate(
                [silence(int(PAD_BEFORE_S * 1000)), pcm, silence(int(PAD_AFTER_S * 1000))]
            )
            out.append((text, (telephone(padded) / 32768).astype(np.float32)))
    return out


def models(tmp: Path) -> dict[Quantization, Path]:
    bundled = locate_bundled()
    files: dict[Quantization, Path] = {}
    for quantization in QUANTIZATIONS:
        path = tmp / f"ggml-tiny.en-{quantization}.bin"
        convert_ct2_to_ggml(bundled.whisper_ct2_dir, path, quantization=quantization)
        files[quantization] = path
    return files


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def saturate(
    path: Path, workers: int, threads: int, work: list[Clip], rounds: int
) -> dict[str, Any]:
    """``workers`` recognisers decoding ``work`` ``rounds`` times over, back to back."""
    recognisers = [WhisperCppRecognizer(path, n_threads=threads) for _ in range(workers)]
    for r in recognisers:  # first decode allocates buffers: not part of the measurement
        r.transcribe(work[0][1])
    jobs = [clip for _ in range(rounds) for clip in work]
    lock = threading.Lock()
    latencies: list[float] = []
    hypotheses: dict[int, str] = {}

    def worker(index: int) -> None:
        recogniser = recognisers[index]
        while True:
            with lock:
                if not jobs:
                    return
                n = len(jobs) - 1
                _, audio = jobs.pop()
            started = time.perf_counter()
            text = recogniser.transcribe(audio).text
            with lock:
                latencies.append(time.perf_counter() - started)
                if n < len(work):  # the last round's hypotheses (all rounds decode alike)
                    hypotheses[n] = text

    audio_s = sum(len(a) for _, a in work) * rounds / 16000
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(worker, i) for i in range(workers)]:
            future.result()
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    errors = words = 0
    for n, (reference, _) in enumerate(work):
        e, w = word_errors(reference, hypotheses[n])
        errors, words = errors + e, words + w
    ms = sorted(x * 1000 for x in latencies)
    return {
        "workers": workers,
        "threads": threads,
        "decodes": len(ms),
        "audio_s_per_wall_s": round(audio_s / wall, 2),
        "audio_s_per_core_s": round(audio_s / wall / CORES, 2),
        "cpu_s_per_audio_s": round(cpu / audio_s, 4),
        "decode_ms": {
            "p50": round(statistics.median(ms), 1),
            "p95": round(ms[int(0.95 * (len(ms) - 1))], 1),
        },
        "wer_percent": round(100 * errors / words, 2),
    }


async def level(pool: RecognitionPool, work: list[Clip], calls: int, seconds: float) -> list[float]:
    """Decode latencies (ms) of ``calls`` calls each sending a final every turn interval."""
    rng = random.Random(calls)
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def call(i: int) -> None:
        await asyncio.sleep(rng.uniform(0, TURN_INTERVAL_S[1]))
        while time.perf_counter() < end:
            _, audio = work[rng.randrange(len(work))]
            started = time.perf_counter()
            try:
                await pool.final(f"call-{i}", audio)
            except Overloaded:
                latencies.append(math.inf)  # refused: counts as too slow
            else:
                latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(rng.uniform(*TURN_INTERVAL_S))

    await asyncio.gather(*(call(i) for i in range(calls)))
    return latencies


def _factory(path: Path, threads: int) -> Callable[[], WhisperCppRecognizer]:
    return lambda: WhisperCppRecognizer(path, n_threads=threads)


async def load_curve(
    files: dict[Quantization, Path], work: list[Clip], quick: bool
) -> dict[str, Any]:
    curves: dict[str, Any] = {}
    levels = CURVE_LEVELS[:2] if quick else CURVE_LEVELS
    for name, quantization, workers, threads, shared in CURVE_CONFIGS:
        path = files[quantization]
        pool = await asyncio.to_thread(
            RecognitionPool,
            _factory(path, threads),
            workers,
            8,
            None,
            Deadline(0),  # no deadline: the measure is how long decodes take
            None,
            threads if shared else 0,
        )
        points = []
        try:
            for calls in levels:
                cpu0 = cpu_seconds()
                ms = sorted(await level(pool, work, calls, LEVEL_S / (4 if quick else 1)))
                cpu = cpu_seconds() - cpu0
                point = {
                    "calls": calls,
                    "finals": len(ms),
                    "decode_ms_p50": round(ms[len(ms) // 2], 1),
                    "decode_ms_p95": round(ms[int(0.95 * (len(ms) - 1))], 1),
                    "cpu_percent_per_call": round(100 * cpu / LEVEL_S / calls, 1),
                }
                print(name, point, flush=True)
                points.append(point)
                if point["decode_ms_p95"] > 3 * DECODE_P95_BUDGET_MS:
                    break
        finally:
            pool.close()
        curves[name] = capacity(points)
    return curves


def capacity(points: list[dict[str, Any]]) -> dict[str, Any]:
    """A configuration's curve and the most calls whose decode p95 stays within budget (the
    levels below the first one over it)."""
    within = 0
    for point in points:
        if point["decode_ms_p95"] > DECODE_P95_BUDGET_MS:
            break
        within = point["calls"]
    return {
        "points": points,
        "calls_within_budget": within,
        "calls_per_core_within_budget": round(within / CORES, 1),
    }


def plot(results: dict[str, dict[str, Any]], curves: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, curve) = plt.subplots(1, 2, figsize=(13, 5))
    colours = {"f16": "tab:blue", "q8_0": "tab:orange", "q5_1": "tab:green"}
    for name, r in results.items():
        quantization = name.split(" ")[0]
        x, y = r["audio_s_per_core_s"], r["decode_ms"]["p95"]
        ax.scatter(x, y, color=colours[quantization])
        ax.annotate(f"{name}\nWER {r['wer_percent']} %", (x, y), fontsize=7)
    ax.set_xlabel("audio seconds recognised per core-second (saturated)")
    ax.set_ylabel("decode latency p95 (ms)")
    ax.set_title(f"saturated, {CORES} cores: weights x workers x threads")
    styles = {"2x2 (today)": "o-", "2x1": "s--", "2 share 2": "^-"}
    for name, c in curves.items():
        quantization, layout = name.split(" ", 1)
        xs = [p["calls"] for p in c["points"]]
        ys = [p["decode_ms_p95"] for p in c["points"]]
        curve.plot(xs, ys, styles.get(layout, "o-"), color=colours[quantization], label=name)
    curve.axhline(DECODE_P95_BUDGET_MS, color="grey", lw=0.8, ls=":")
    curve.set_yscale("log")
    curve.set_xlabel("concurrent calls (a final every ~4.5 s each)")
    curve.set_ylabel("final decode latency p95 (ms, queueing included)")
    curve.set_title("load curve: the speech gateway's recognition pool")
    curve.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="fewer phrases (a smoke run)")
    args = parser.parse_args()
    rounds = 1 if args.quick else 2
    work = clips(args.quick)
    result: dict[str, Any] = {
        "benchmark": "asr_capacity",
        "machine": {"cpus": CORES, "python": platform.python_version()},
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "clips": len(work),
        "audio_s": round(sum(len(a) for _, a in work) / 16000, 1),
        "rounds": rounds,
    }
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = models(Path(tmp))
        result["model_bytes"] = {q: p.stat().st_size for q, p in files.items()}
        for quantization, path in files.items():
            for workers, threads in LAYOUTS:
                name = f"{quantization} {workers}x{threads}"
                print(name, flush=True)
                runs[name] = saturate(path, workers, threads, work, rounds)
                print(json.dumps(runs[name]), flush=True)
        result["load_curve"] = asyncio.run(load_curve(files, work, args.quick))
    result["runs"] = runs
    base = runs[f"{BASELINE[0]} {BASELINE[1][0]}x{BASELINE[1][1]}"]
    result["baseline"] = f"{BASELINE[0]} {BASELINE[1][0]}x{BASELINE[1][1]}"
    result["ratio_vs_baseline"] = {
        name: {
            "capacity": round(r["audio_s_per_wall_s"] / base["audio_s_per_wall_s"], 2),
            "decode_p95": round(r["decode_ms"]["p95"] / base["decode_ms"]["p95"], 2),
            "wer_points": round(r["wer_percent"] - base["wer_percent"], 2),
        }
        for name, r in runs.items()
    }
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(runs, result["load_curve"], args.out.with_suffix(".png"))
    today = result["load_curve"][CURVE_CONFIGS[0][0]]["calls_within_budget"]
    result["calls_within_budget_ratio_vs_today"] = {
        name: round(c["calls_within_budget"] / today, 2) if today else None
        for name, c in result["load_curve"].items()
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
