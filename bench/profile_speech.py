"""Profile: where the speech gateway's CPU goes with concurrent calls (py-spy, native frames).

Starts the whole stack (``voicetyped_dev.stack``), places ``--calls`` concurrent scripted calls
(bench/turn_latency.py's script: greeting, question, order number twice, goodbye) and samples
the speech gateway process with ``py-spy record --native`` meanwhile. Folds the samples into
shares of CPU by what the time was spent on: whisper.cpp's encoder and decoder (by ggml op),
Piper (onnxruntime), Silero/Smart Turn ONNX, webrtcvad, Python (gRPC, asyncio, numpy glue),
waiting. Samples are meant to be of running threads (no ``--idle``), but py-spy counts a thread
blocked in glibc's futex wait as running: a native frame it cannot name is looked up in the
process's memory map, and one returning from a blocking system call (futex, poll, epoll,
nanosleep) is counted as waiting; other unnamed frames are shown as ``library+offset``. Also
reports the gateway's decode compute seconds, done and abandoned (its metrics). py-spy is a
profiling tool, not a dependency: install it apart (``uv tool install py-spy``) and pass its
path.

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
import urllib.request
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


# x86-64 syscalls that block (futex, poll, select, nanosleep, epoll_wait, clock_nanosleep,
# epoll_pwait): a leaf just after one is a thread waiting, not computing.
_BLOCKING_SYSCALLS = (202, 7, 23, 35, 232, 230, 281)
_SYSCALL_WAIT = "waiting in a blocking system call"


def _after_blocking_syscall(path: str, offset: int) -> bool:
    """Whether the instruction before ``offset`` in ``path`` is ``mov eax, N; syscall`` for a
    blocking N (py-spy samples a thread blocked in glibc's futex wait as if it ran)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(offset - 7, 0))
            code = f.read(7)
    except OSError:
        return False
    return (
        len(code) == 7
        and code[0] == 0xB8
        and code[5:] == b"\x0f\x05"
        and int.from_bytes(code[1:5], "little") in _BLOCKING_SYSCALLS
    )


def library_of(address: str, maps: str) -> str:
    """The shared object a native address py-spy could not name lies in (from the process's
    /proc/<pid>/maps, read while it ran), as ``name+0xoffset``, or :data:`_SYSCALL_WAIT` when
    the address returns from a blocking system call; the address itself if unmapped."""
    try:
        at = int(address, 16)
    except ValueError:
        return address
    for line in maps.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= at < end:
            offset = at - start + int(fields[2], 16)
            if _after_blocking_syscall(fields[5], offset):
                return _SYSCALL_WAIT
            return f"{Path(fields[5]).name}+0x{offset:x}"
    return address


def fold(raw: Path, maps: str = "") -> dict[str, Any]:
    """py-spy's raw (collapsed) output -> share of samples per category, and the top frames
    (unnamed native ones named by their library, with the categories of their stacks)."""
    shares: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    leaf_categories: dict[str, collections.Counter[str]] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        leaf = stack.split(";")[-1].split(" (")[0]
        if leaf.startswith("0x"):
            leaf = library_of(leaf, maps)
        kind = "waiting (event loop, locks)" if leaf == _SYSCALL_WAIT else category(stack)
        shares[kind] += n
        leaves[leaf] += n
        leaf_categories.setdefault(leaf, collections.Counter())[kind] += n
    top = leaves.most_common(15)
    return {
        "samples": total,
        "share_percent": {k: round(100 * v / total, 1) for k, v in shares.most_common()},
        "top_leaf_frames_percent": {k: round(100 * v / total, 1) for k, v in top},
        "top_leaf_frames_by_category_percent": {
            k: {c: round(100 * v / total, 1) for c, v in leaf_categories[k].most_common(3)}
            for k, _ in top[:6]
        },
    }


def decode_seconds(stack: Stack) -> dict[str, float]:
    """The speech gateway's decode compute seconds so far by kind and outcome (done, or
    abandoned: a speculative final stopped because the caller went on), from its metrics."""
    url = f"http://127.0.0.1:{stack.ports['speech'].http}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    out: dict[str, float] = {}
    prefix = "voicetyped_speech_asr_compute_seconds_total{"
    for line in text.splitlines():
        if line.startswith(prefix):
            labels, _, value = line[len(prefix) :].rpartition("} ")
            pairs = dict(p.split("=", 1) for p in labels.split(","))
            out[f"{pairs['kind'].strip(chr(34))} {pairs['outcome'].strip(chr(34))}"] = round(
                float(value), 2
            )
    return out


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
        maps = await asyncio.to_thread(Path(f"/proc/{speech.pid}/maps").read_text)
        decodes = await asyncio.to_thread(decode_seconds, stack)
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
        "decode_compute_seconds": decodes,
        "profile": fold(raw, maps),
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
