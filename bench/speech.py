"""Benchmark: the speech gateway on 2 cores -- recognition latency, throughput, synthesis.

The gateway runs as its own process, driven over gRPC the way the media gateway and the runtime
drive it (``voicetyped_testkit.speech_client``); caller audio is Piper speech through a G.711
mu-law call leg, streamed in real time in 20 ms chunks.

- **end of speech -> final transcript** for utterances of 1-5 s, p50/p95, from the moment the VAD
  declares the end (its SPEECH_END event, ``hangover_ms`` after the caller stopped) and from the
  moment the last speech sample was sent; for whisper.cpp (default) and faster-whisper. Baseline,
  same run: the straightforward design -- decode when the end is declared, whisper.cpp's full
  30 s window, no speculation.
- **RTF** of each backend (compute / audio seconds) on the same utterances and on 20 s of speech.
- **TTS time to first audio**, uncached (new texts) and cached (repeated prompts): SpeakRequest
  sent -> first PlaybackAudio received.
- **concurrent streams** on 2 cores: N calls speaking at once; the largest N whose p95 end ->
  final stays <= 500 ms with no overload signal ("before queueing" takes over).
- **RSS per loaded model** (a fresh process per model).

    python bench/speech.py --out bench/results/speech.json [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from piper import SynthesisConfig
from voicetyped.v1 import speech_pb2
from voicetyped_speech.asr.base import Recognizer
from voicetyped_speech.asr.fasterwhisper import FasterWhisperRecognizer
from voicetyped_speech.asr.whispercpp import WhisperCppRecognizer
from voicetyped_speech.models.prepare import default_models_dir, locate_bundled, prepare_models
from voicetyped_speech.models.verify import load_voice
from voicetyped_speech.vad import pcm16_to_float32
from voicetyped_testkit.processes import ServiceProcess, cpu_seconds, free_port
from voicetyped_testkit.speech import Pcm, phone_speech, silence, word_errors
from voicetyped_testkit.speech_client import MediaSide, RuntimeSide
from voicetyped_testkit.stats import summary_ms

TARGETS = {"eos_to_final_p50_ms": 250.0}
QUIET = SynthesisConfig(noise_scale=0, noise_w_scale=0)
UTTERANCES = [  # about 1 s to 5 s of speech
    "Yes, please.",
    "Talk to an agent.",
    "No, thank you.",
    "I need to cancel my subscription.",
    "Can I speak to a person, please?",
    "I want to check the status of my order.",
    "My order number is four eight two one three.",
    "There is a charge on my card I do not recognize.",
    "I would like to change the delivery address on my account, please.",
    "Hi, I was charged twice this month and I would like a refund for the second payment.",
    "I received a letter about my account last week and I would like to know why my payment "
    "was declined.",
]
GAP_MS = 1200
FINAL = speech_pb2.TranscriptEvent.KIND_FINAL


def trimmed(pcm: Pcm) -> Pcm:
    level = np.abs(pcm.astype(np.int32))
    loud = np.flatnonzero(level > level.max() // 100)
    return pcm[loud[0] : loud[-1] + 1]


class Gateway:
    def __init__(self, tmp: Path, models: Path, **env: str) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        self.process = ServiceProcess(
            "voicetyped_speech",
            {
                **os.environ,
                "VOICETYPED_GRPC_HOST": "127.0.0.1",
                "VOICETYPED_HTTP_HOST": "127.0.0.1",
                "VOICETYPED_GRPC_PORT": str(self.grpc_port),
                "VOICETYPED_HTTP_PORT": str(self.http_port),
                "VOICETYPED_ASR__MODELS_DIR": str(models),
                "VOICETYPED_LOG_LEVEL": "warning",
                **env,
            },
            tmp / f"speech-{self.grpc_port}.log",
        )

    async def __aenter__(self) -> Gateway:
        self.process.start()
        await self.process.wait_ready(self.http_port, timeout_s=120)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.process.stop()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics") as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0


async def speak_utterances(
    channel: grpc.aio.Channel, sid: str, clips: list[tuple[str, Pcm]], lead_in_ms: int = 300
) -> list[dict[str, Any]]:
    """One call says ``clips`` in real time; per utterance the end->final timings."""
    media = MediaSide(channel, sid)
    await media.open(timeout_s=30)
    runtime = RuntimeSide(channel, sid)
    runtime.open()
    speech_end_sent: list[float] = []
    results: list[dict[str, Any]] = []
    await media.stream(silence(lead_in_ms).tobytes())
    for text, pcm in clips:
        end_ms = media.sent_ms + len(pcm) * 1000 // 16000
        marked = False

        def mark(call_ms: int, end_ms: int = end_ms) -> None:
            nonlocal marked
            if not marked and call_ms >= end_ms:
                marked = True
                speech_end_sent.append(time.perf_counter())

        await media.stream(np.concatenate([pcm, silence(GAP_MS)]).tobytes(), on_frame=mark)
        results.append({"text": text, "speech_s": len(pcm) / 16000})
    await media.stream(silence(600).tobytes())
    await media.close()
    await runtime.wait_closed(30)
    ends = [
        r
        for r in runtime.updates.items
        if r.message.HasField("vad") and r.message.vad.kind == speech_pb2.VadEvent.KIND_SPEECH_END
    ]
    finals = runtime.finals()
    errors = [r for r in runtime.updates.items if r.message.HasField("error")]
    if len(finals) != len(clips) or len(ends) != len(clips):
        raise RuntimeError(
            f"{sid}: {len(clips)} utterances, {len(ends)} ends, {len(finals)} finals"
        )
    for result, end, final, sent in zip(results, ends, finals, speech_end_sent, strict=True):
        heard = final.message.transcript.speech.transcript
        result.update(
            heard=heard,
            errors=word_errors(result["text"], heard)[0],
            words=word_errors(result["text"], "")[1],
            eos_to_final_s=final.at - end.at,
            speech_end_to_final_s=final.at - sent,
        )
    for result in results:
        result["overloaded"] = bool(errors)
    return results


def latency_report(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "utterances": len(results),
        "eos_to_final_ms": summary_ms([r["eos_to_final_s"] for r in results]),
        "speech_end_to_final_ms": summary_ms([r["speech_end_to_final_s"] for r in results]),
        "wer": round(sum(r["errors"] for r in results) / sum(r["words"] for r in results), 4),
    }


async def latency(
    tmp: Path, models: Path, clips: list[tuple[str, Pcm]], repeats: int, **env: str
) -> dict[str, Any]:
    async with Gateway(tmp, models, **env) as gw, grpc.aio.insecure_channel(gw.target) as ch:
        results: list[dict[str, Any]] = []
        for n in range(repeats):
            results += await speak_utterances(ch, f"latency-{n}", clips)
        report = latency_report(results)
        report["per_utterance"] = [
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
            for r in results[: len(clips)]
        ]
        return report


async def concurrency(
    tmp: Path, models: Path, clips: list[tuple[str, Pcm]], levels: list[int]
) -> dict[str, Any]:
    rng = random.Random(7)
    out: dict[str, Any] = {"levels": []}
    async with Gateway(tmp, models) as gw, grpc.aio.insecure_channel(gw.target) as ch:
        for n in levels:

            async def call(i: int, n: int = n) -> list[dict[str, Any]]:
                await asyncio.sleep(rng.uniform(0, 1.5))  # calls do not speak in lockstep
                chosen = rng.sample(clips, 3)
                return await speak_utterances(ch, f"conc-{n}-{i}", chosen)

            started = time.perf_counter()
            cpu0 = process_cpu(gw.process)
            batches = await asyncio.gather(*(call(i) for i in range(n)))
            cpu = process_cpu(gw.process) - cpu0
            results = [r for b in batches for r in b]
            level = latency_report(results)
            level |= {
                "calls": n,
                "overloaded": sum(r["overloaded"] for r in results),
                "gateway_cpu_cores": round(cpu / (time.perf_counter() - started), 2),
            }
            out["levels"].append(level)
            print(f"  {n} calls: {level['eos_to_final_ms']}", flush=True)
    ok = [
        lvl["calls"]
        for lvl in out["levels"]
        if lvl["eos_to_final_ms"]["p95"] <= 500 and not lvl["overloaded"]
    ]
    out["sustainable_calls_p95_le_500ms"] = max(ok) if ok else 0
    return out


def process_cpu(process: ServiceProcess) -> float:
    assert process.proc is not None
    return cpu_seconds(process.proc.pid)


def audio_of(request_id: str, m: speech_pb2.AudioDownlink) -> bool:
    return m.HasField("playback") and m.playback.request_id == request_id


def cancelled(request_id: str, m: speech_pb2.SpeechUpdate) -> bool:
    return (
        m.HasField("playback")
        and m.playback.request_id == request_id
        and m.playback.kind == speech_pb2.PlaybackEvent.KIND_CANCELLED
    )


async def tts_latency(tmp: Path, models: Path, count: int) -> dict[str, Any]:
    async with Gateway(tmp, models) as gw, grpc.aio.insecure_channel(gw.target) as ch:
        media = MediaSide(ch, "tts")
        await media.open(timeout_s=30)
        runtime = RuntimeSide(ch, "tts")
        runtime.open()
        uncached: list[float] = []
        cached: list[float] = []
        for n in range(count):
            text = f"Your order {1000 + n * 37} shipped on Monday and arrives on Thursday."
            for kind, out in (("u", uncached), ("c", cached)):
                rid = f"{kind}{n}"
                asked = runtime.speak(rid, text)
                first = await media.downlink.wait_for(partial(audio_of, rid), 30)
                out.append(first.at - asked)
                runtime.cancel(rid)
                await runtime.updates.wait_for(partial(cancelled, rid), 10)
        await media.close()
        await runtime.wait_closed(30)
        return {"uncached_ms": summary_ms(uncached), "cached_ms": summary_ms(cached)}


def backend_rtf(models: Path, clips: list[tuple[str, Pcm]]) -> dict[str, Any]:
    bundled = locate_bundled()
    audio = [pcm16_to_float32(np.concatenate([pcm, silence(300)]).tobytes()) for _, pcm in clips]
    long = pcm16_to_float32(
        np.concatenate([np.concatenate([p, silence(400)]) for _, p in clips * 2]).tobytes()
    )[: 20 * 16000]
    backends: dict[str, Callable[[], Recognizer]] = {
        "whispercpp": lambda: WhisperCppRecognizer(models / bundled.ggml_filename),
        "whispercpp_full_window": lambda: WhisperCppRecognizer(
            models / bundled.ggml_filename, min_audio_ctx=0
        ),
        "faster-whisper": lambda: FasterWhisperRecognizer(bundled.whisper_ct2_dir),
    }
    out: dict[str, Any] = {}
    for name, make in backends.items():
        recognizer = make()
        recognizer.transcribe(audio[0])  # warm
        compute = sum(recognizer.transcribe(a).compute_s for a in audio)
        seconds = sum(len(a) for a in audio) / 16000
        out[name] = {
            "utterances_rtf": round(compute / seconds, 3),
            "mean_decode_ms": round(compute / len(audio) * 1000, 1),
        }
        if name != "whispercpp_full_window":
            out[name]["long_20s_rtf"] = round(recognizer.transcribe(long).compute_s / 20, 3)
        del recognizer
    return out


_RSS_PROBE = """
import os, sys, json
os.environ["GGML_NO_BACKTRACE"] = "1"; os.environ["HF_HUB_OFFLINE"] = "1"
from pathlib import Path
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
kind, path = sys.argv[1], sys.argv[2]
if kind == "whispercpp":
    import pywhispercpp.model
elif kind == "faster-whisper":
    import faster_whisper
else:
    import piper
before = rss()
if kind == "whispercpp":
    from voicetyped_speech.asr.whispercpp import WhisperCppRecognizer
    model = WhisperCppRecognizer(Path(path))
elif kind == "faster-whisper":
    from voicetyped_speech.asr.fasterwhisper import FasterWhisperRecognizer
    model = FasterWhisperRecognizer(Path(path))
else:
    from voicetyped_speech.tts import VoiceRegistry
    model = VoiceRegistry().get(path)
print(json.dumps({"loaded_mib": round(rss() - before, 1), "process_mib": round(rss(), 1)}))
"""


def model_rss(models: Path) -> dict[str, Any]:
    bundled = locate_bundled()
    probes = {
        "whispercpp": str(models / bundled.ggml_filename),
        "faster-whisper": str(bundled.whisper_ct2_dir),
        "piper": bundled.voice_name,
    }
    out = {}
    for kind, path in probes.items():
        done = subprocess.run(
            [sys.executable, "-c", _RSS_PROBE, kind, path],
            capture_output=True,
            text=True,
            check=True,
        )
        out[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3

    models = default_models_dir()
    prepare_models(models)  # a no-op when already prepared (cached outside the checkout)
    voice = load_voice(*(lambda b: (b.voice_model, b.voice_config))(locate_bundled()))
    clips = [(text, trimmed(phone_speech(voice, text, QUIET))) for text in UTTERANCES]
    result: dict[str, Any] = {
        "benchmark": "speech",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "utterance_seconds": [round(len(p) / 16000, 2) for _, p in clips],
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        print("latency: whisper.cpp (default)", flush=True)
        result["whispercpp"] = await latency(tmp, models, clips, repeats)
        print("latency: baseline (full window, decode at end)", flush=True)
        result["baseline_full_window_no_speculation"] = await latency(
            tmp,
            models,
            clips,
            1,
            VOICETYPED_ASR__MIN_AUDIO_CTX="0",
            VOICETYPED_STREAMING__SPECULATE="false",
        )
        print("latency: faster-whisper", flush=True)
        result["faster_whisper"] = await latency(
            tmp, models, clips, 1, VOICETYPED_ASR__BACKEND="faster-whisper"
        )
        print("TTS time to first audio", flush=True)
        result["tts_time_to_first_audio"] = await tts_latency(tmp, models, 5 if args.quick else 10)
        print("concurrency", flush=True)
        levels = [1, 2, 4] if args.quick else [1, 2, 4, 8, 12, 16]
        result["concurrency"] = await concurrency(tmp, models, clips, levels)
    print("RTF per backend", flush=True)
    result["rtf"] = backend_rtf(models, clips)
    print("RSS per model", flush=True)
    result["rss_per_model"] = model_rss(models)

    ours = result["whispercpp"]["eos_to_final_ms"]["p50"]
    base = result["baseline_full_window_no_speculation"]["eos_to_final_ms"]["p50"]
    result["ratio_vs_baseline"] = {"eos_to_final_p50": round(ours / base, 3)}
    result["targets"] = TARGETS
    result["meets_targets"] = {"eos_to_final_p50_ms": ours <= TARGETS["eos_to_final_p50_ms"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
