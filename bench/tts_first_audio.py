"""Benchmark: first audio of a reply never synthesised before (issue 22), old design vs new.

The speech gateway's ``Synthesizer`` (2 workers, as the service runs it) voices a set of
realistic one- and two-sentence replies -- backend results with numbers, dates, addresses and
LLM-like answers -- one at a time at 8 kHz, each with an empty prompt cache:

- **time to first audio** (``synthesize()`` -> first 20 ms frame), p50/p95, for the current
  design (``whole``: the first sentence voiced in one Piper run) and for the first-unit cut
  (``first<N>``: the opening of at most N words voiced first, :mod:`voicetyped_speech.tts.
  first_unit`), rounds interleaved so load drift hits every design alike; ratio new / whole;
  each also with 2 onnxruntime intra-op threads (the service uses 1);
- **profile** of the first audio: phonemizing, the first Piper run (ONNX), the rest;
- **Piper's run cost against length**: ms per run for phoneme sequences of 10-100 phonemes,
  least-squares fixed cost + ms per phoneme, 1 and 2 intra-op threads -- what bounds the gain;
- **seam quality**: whisper.cpp (tiny.en, as the gateway's recognizer) transcribes each reply
  voiced whole and voiced cut (8 kHz output, as a call plays it, resampled to 16 kHz); WER of
  each against the text, and the extra audio length the cut adds (the pause at the seam).
  Listening samples (whole / cut WAV pairs) go to ``<out dir>/tts_first_audio/``.

    python bench/tts_first_audio.py --out bench/results/tts_first_audio.json [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
from voicetyped_speech.models.prepare import default_models_dir, prepare_models
from voicetyped_speech.models.verify import load_whisper_cpp, transcribe
from voicetyped_speech.tts import DEFAULT_VOICE, FirstUnitPolicy, Synthesizer, VoiceRegistry
from voicetyped_speech.tts.first_unit import OFF, first_cut
from voicetyped_testkit.speech import Score, resample
from voicetyped_testkit.stats import summary_ms

TARGETS = {"uncached_first_audio_p50_ms": 150.0}
RATE = 8000
DEFAULT_DESIGN = "first4"  # FirstUnitPolicy() as the service runs it
REPLIES = [
    # Backend results: numbers, dates, times, amounts, addresses, references.
    "Your order 48213 shipped on December 4th, and it should arrive by Friday.",
    "Your account balance is forty two dollars and seventeen cents, due on the fifteenth.",
    "I have booked a table for four people on Saturday at 7:30 pm.",
    "The nearest branch is at 42 Main Street, and it is open until 6 pm today.",
    "Your appointment has been moved to Tuesday, December 8 at 2:15 pm.",
    "Your refund of $129.99 was issued yesterday and should reach your card within five days.",
    "Your flight to Denver leaves from gate B12 at 10:45 am, and boarding starts at 10:05.",
    "The technician will arrive between 9 and 11 tomorrow morning. Please make sure someone "
    "is at home.",
    "Your reference number is A7 3 9 2 5. I have also sent it to you by email.",
    "Your parcel was delivered to the front desk at 3:12 pm on Monday.",
    # LLM-like answers.
    "Unfortunately that plan is not available in your area, but I can offer you the standard "
    "plan instead.",
    "I checked your last three bills and the extra charge came from a late payment fee.",
    "Sure, I can help with that. Could you tell me the name on the account?",
    "That sounds frustrating, and I am sorry it happened. Let me see what I can do for you.",
    "You can reset your password from the login page by choosing forgot password.",
    "Our support team is available every day from eight in the morning until ten at night.",
]


async def voice_once(
    registry: VoiceRegistry, policy: FirstUnitPolicy, text: str, rid: str
) -> dict[str, Any]:
    """``text`` through a fresh synthesizer (empty cache): first-frame time, the first unit's
    compute time, the audio."""
    first_compute: list[float] = []
    synth = Synthesizer(registry, workers=2, first_unit=policy)
    synth.hooks.on_unit = lambda _audio, compute: first_compute.append(compute)
    try:
        t0 = time.perf_counter()
        first: float | None = None
        frames: list[bytes] = []
        stream = synth.synthesize(text, DEFAULT_VOICE, RATE, rid)
        async with contextlib.aclosing(stream):
            async for frame in stream:
                if first is None:
                    first = time.perf_counter() - t0
                frames.append(frame)
        assert first is not None
        return {
            "ttfa": first,
            "first_unit_compute": first_compute[0],
            "cut": synth.stats.first_cuts == 1,
            "pcm": b"".join(frames),
        }
    finally:
        await synth.aclose(wait=True)


def designs(quick: bool) -> dict[str, tuple[int, FirstUnitPolicy]]:
    """name -> (intra-op threads, policy)."""
    out = {"whole": (1, OFF), DEFAULT_DESIGN: (1, FirstUnitPolicy())}
    if not quick:
        out["first3"] = (1, FirstUnitPolicy(max_words=3))
        out["first6"] = (1, FirstUnitPolicy(max_words=6))
    out["whole_2threads"] = (2, OFF)
    out[f"{DEFAULT_DESIGN}_2threads"] = (2, FirstUnitPolicy())
    return out


async def latency(
    registries: dict[int, VoiceRegistry], rounds: int, quick: bool
) -> tuple[dict[str, Any], dict[str, list[bytes]]]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in designs(quick)}
    for r in range(rounds):
        for i, text in enumerate(REPLIES):
            for name, (threads, policy) in designs(quick).items():  # interleaved
                runs[name].append(await voice_once(registries[threads], policy, text, f"{r}-{i}"))
    out: dict[str, Any] = {}
    for name, rs in runs.items():
        out[name] = {
            "first_audio_ms": summary_ms([x["ttfa"] for x in rs]),
            "first_unit_compute_ms": summary_ms([x["first_unit_compute"] for x in rs]),
            "replies_cut": sum(x["cut"] for x in rs[: len(REPLIES)]),
        }
    base = out["whole"]["first_audio_ms"]["p50"]
    for name in out:
        out[name]["ratio_p50_vs_whole"] = round(out[name]["first_audio_ms"]["p50"] / base, 3)
    audio = {name: [x["pcm"] for x in rs[: len(REPLIES)]] for name, rs in runs.items()}
    return out, audio


def unit_cost_curve(registries: dict[int, VoiceRegistry], repeats: int) -> dict[str, Any]:
    """ms per Piper run (phoneme ids -> audio) against the phoneme count."""
    piper = registries[1].get(DEFAULT_VOICE).piper
    long = [p for s in piper.phonemize(" ".join(REPLIES[10:13])) for p in s]
    out: dict[str, Any] = {}
    for threads, registry in registries.items():
        voice = registry.get(DEFAULT_VOICE).piper
        points = []
        for n in (10, 20, 30, 40, 60, 80, 100):
            ids = voice.phonemes_to_ids(long[:n])
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                voice.phoneme_ids_to_audio(ids)
                times.append(time.perf_counter() - t0)
            points.append((n, statistics.median(times) * 1000))
        x = np.array([n for n, _ in points], dtype=np.float64)
        y = np.array([ms for _, ms in points])
        slope, intercept = np.polyfit(x, y, 1)
        out[f"intra_op_threads_{threads}"] = {
            "ms_by_phonemes": {str(n): round(ms, 1) for n, ms in points},
            "fixed_ms": round(float(intercept), 1),
            "ms_per_phoneme": round(float(slope), 2),
        }
    t0 = time.perf_counter()
    for text in REPLIES:
        piper.phonemize(text)
    out["phonemize_ms_per_reply"] = round((time.perf_counter() - t0) * 1000 / len(REPLIES), 2)
    return out


def to_16k(pcm: bytes) -> np.ndarray:
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    return np.concatenate([resample(audio, RATE, 16000), np.zeros(8000, dtype=np.float32)])


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)


def seam_quality(audio: dict[str, list[bytes]], samples: Path) -> dict[str, Any]:
    whisper = load_whisper_cpp(prepare_models(default_models_dir()).ggml_path)
    samples.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    per_reply: list[dict[str, Any]] = []
    for name in ("whole", DEFAULT_DESIGN, "first3", "first6"):
        if name not in audio:
            continue
        score = Score()
        for i, (text, pcm) in enumerate(zip(REPLIES, audio[name], strict=True)):
            heard = transcribe(whisper, to_16k(pcm))
            errors = score.add(text, heard)
            if name in ("whole", DEFAULT_DESIGN):
                write_wav(samples / f"reply{i:02d}_{name}.wav", pcm)
                if name == DEFAULT_DESIGN:
                    cut = first_cut(text, FirstUnitPolicy())
                    per_reply.append(
                        {
                            "text": text,
                            "opening": cut.head if cut else None,
                            "kind": cut.kind if cut else None,
                            "heard_cut": heard,
                            "errors_cut": errors,
                            "extra_ms": round(
                                (len(pcm) - len(audio["whole"][i])) / 2 * 1000 / RATE
                            ),
                        }
                    )
        out[name] = {"wer": round(score.wer, 4), **score.summary()}
    out["replies"] = per_reply
    extra = [r["extra_ms"] for r in per_reply if r["kind"]]
    out["cut_adds_ms"] = summary_ms([e / 1000 for e in extra]) if extra else None
    out["listening_samples"] = str(samples)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="one round, fewer designs")
    args = parser.parse_args()
    rounds = 1 if args.quick else 2
    registries = {1: VoiceRegistry(intra_op_threads=1), 2: VoiceRegistry(intra_op_threads=2)}
    for registry in registries.values():
        registry.get(DEFAULT_VOICE)
    # Warm both sessions (onnxruntime's first runs are slower).
    for threads in registries:
        for text in REPLIES[:3]:
            await voice_once(registries[threads], OFF, text, "warm")
    result: dict[str, Any] = {
        "benchmark": "tts_first_audio",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "rate": RATE,
        "replies": len(REPLIES),
        "rounds": rounds,
    }
    print("first audio, designs interleaved", flush=True)
    result["designs"], audio = await latency(registries, rounds, args.quick)
    print("Piper run cost against length", flush=True)
    result["piper_run_cost"] = unit_cost_curve(registries, 3 if args.quick else 7)
    print("seam quality (whisper.cpp)", flush=True)
    result["seam"] = seam_quality(audio, args.out.parent / "tts_first_audio")
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    ours = result["designs"][DEFAULT_DESIGN]["first_audio_ms"]["p50"]
    result["default_design"] = DEFAULT_DESIGN
    result["ratio_vs_whole"] = {
        "first_audio_p50": result["designs"][DEFAULT_DESIGN]["ratio_p50_vs_whole"]
    }
    result["targets"] = TARGETS
    result["meets_targets"] = {
        "uncached_first_audio_p50_ms": ours <= TARGETS["uncached_first_audio_p50_ms"]
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
