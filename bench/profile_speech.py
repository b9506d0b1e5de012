"""Profile: where the speech gateway's CPU goes with concurrent calls (py-spy, native frames).

Starts the whole stack (``voicetyped_dev.stack``), places ``--calls`` concurrent scripted calls
(bench/turn_latency.py's script: greeting, question, order number twice, goodbye) and samples
the speech gateway process with ``py-spy record --native`` meanwhile. Folds the samples into
shares of CPU by what the time was spent on: whisper.cpp's encoder and decoder (by ggml op),
Piper (onnxruntime), Silero/Smart Turn ONNX, webrtcvad, Python (gRPC, asyncio, numpy glue),
waiting. Samples are of running threads (no ``--idle``), but native frames py-spy cannot name
(libc, onnxruntime internals) stay addresses: "other" holds them. py-spy is a profiling tool,
not a dependency: install it apart (``uv tool install py-spy``) and pass its path.

    python bench/profile_speech.py --py-spy ~/.local/bin/py-spy --calls 8 \\
        --out bench/results/profile_speech.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from turn_latency import calls, config
from voicetyped_dev.caller.run import Voices
from voicetyped_dev.stack import Stack

CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("whisper.cpp encoder", ("whisper_encode", "whisper_encoder")),
    ("whisper.cpp decoder", ("whisper_decode",)),
    ("whisper.cpp other (mel, sampling)", ("whisper_", "log_mel", "fft")),
    ("Piper TTS (onnxruntime)", ("piper", "phoneme_ids_to_audio", "synthesize")),
    ("turn/VAD models (onnxruntime)", ("smart_turn", "silero", "onnxruntime")),
    ("webrtcvad", ("webrtcvad", "WebRtcVad")),
    ("gRPC and asyncio", ("grpc", "asyncio", "selectors", "_run_once")),
)


_WAITS = ("epoll_wait", "select", "poll", "futex", "pthread_cond_wait")


def category(stack: str) -> str:
    leaf = stack.rsplit(";", 1)[-1].split(" (")[0]
    if leaf in _WAITS:
        return "waiting (event loop, locks)"
    frames = stack.lower()
    for name, needles in CATEGORIES:
        if any(n.lower() in frames for n in needles):
            return name
    return "other Python and native"


def fold(raw: Path) -> dict[str, Any]:
    """py-spy's raw (collapsed) output -> share of samples per category, and the top frames."""
    shares: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        shares[category(stack)] += n
        leaves[stack.split(";")[-1].split(" (")[0]] += n
    return {
        "samples": total,
        "share_percent": {k: round(100 * v / total, 1) for k, v in shares.most_common()},
        "top_leaf_frames_percent": {
            k: round(100 * v / total, 1) for k, v in leaves.most_common(15)
        },
    }


async def run(py_spy: str, n: int, seconds: int, tmp: Path) -> dict[str, Any]:
    voices = await asyncio.to_thread(Voices)
    stack = Stack(config(tmp, "profile"))
    await stack.start()
    raw = tmp / "speech.txt"
    try:
        speech = stack.services["speech"].proc
        assert speech is not None
        spy = await asyncio.create_subprocess_exec(
            py_spy, "record", "--native", "--threads", "--format", "raw",
            "--rate", "50", "--duration", str(seconds), "--pid", str(speech.pid),
            "--output", str(raw),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        turns = await calls(stack, voices, n, 2)
        _, err = await spy.communicate()
        if spy.returncode:
            raise RuntimeError(f"py-spy failed: {err.decode()[-2000:]}")
    finally:
        await stack.stop()
    timed = sorted(t.latency_s * 1000 for t in turns if t.latency_s is not None)
    return {
        "benchmark": "profile_speech",
        "calls": n,
        "cpus": os.cpu_count(),
        "turns": len(timed),
        "turn_p50_ms": round(timed[len(timed) // 2]) if timed else None,
        "profile": fold(raw),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--py-spy", required=True)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=40)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args.py_spy, args.calls, args.seconds, Path(tmp)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
