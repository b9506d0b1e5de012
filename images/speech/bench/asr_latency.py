"""Research benchmark: latency and accuracy of short-utterance ASR on 2 cores.

Compares whisper.cpp (pywhispercpp with the ggml file ``voicetyped models prepare`` writes) at
its default 30 s encoder window against shortened windows (``audio_ctx``) with several guards,
and faster-whisper (CTranslate2 int8, beam 1 and 5). The audio is Piper's voice resampled to
16 kHz, so the reference transcript is known. Findings and recommendation:
docs/decisions/2026-11-24-speech-latency-research.md

    python images/speech/bench/asr_latency.py --models-dir /tmp/models --out /tmp/asr.json

Utterance sets: ``base`` = 11 call-style sentences at Piper's normal rate; ``rates`` = the same at
length_scale 0.8 and 1.25 (faster and slower speech); ``ulaw`` = the base set after an 8 kHz
G.711 mu-law round trip (a phone call).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from piper import PiperVoice, SynthesisConfig
from voicetyped_speech.models.prepare import default_models_dir, locate_bundled, prepare_models
from voicetyped_speech.models.verify import (
    ASR_SAMPLE_RATE,
    load_voice,
    load_whisper_cpp,
    normalize_words,
    resample,
    synthesize,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # 3.11 only; the bench needs a G.711 round trip, nothing else

Audio = NDArray[np.float32]

# The 1 s / 2 s / 5 s timing clips: speech padded with trailing silence to exactly that length.
TIMING_CLIPS = {
    1.0: "Talk to an agent.",
    2.0: "I need to cancel my subscription.",
    5.0: "Hi, I was charged twice this month and I would like a refund for the second payment.",
}
SENTENCES = [
    "Yes, please.",
    "No, thank you.",
    "Talk to an agent.",
    "Can I speak to an agent?",
    "I would like to check my order.",
    "I need to cancel my subscription.",
    "Please transfer me to the billing department.",
    "Could you please repeat that a little more slowly?",
    "I want to change the delivery address on my account.",
    "My internet connection keeps dropping every evening since last week.",
    "I received a letter about my account and I would like to know why my payment was declined.",
]
FRAMES_PER_SECOND = 100  # whisper mel frames (hop 160 at 16 kHz); the encoder halves them
MAX_CTX = 1500


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edit distance, reference words) after normalize_words."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1], len(ref)


def pad_to(audio: Audio, seconds: float) -> Audio:
    target = round(seconds * ASR_SAMPLE_RATE)
    return audio if len(audio) >= target else np.pad(audio, (0, target - len(audio)))


def half_frames(audio: Audio) -> int:
    """Encoder positions the clip covers: mel frames / 2 (conv2 has stride 2)."""
    return math.ceil(math.ceil(len(audio) * FRAMES_PER_SECOND / ASR_SAMPLE_RATE) / 2)


def looks_repeated(text: str, seconds: float) -> bool:
    """Cheap detector for the failure mode of short windows: a phrase said again and again."""
    words = normalize_words(text)
    if len(words) > 6 + 5 * seconds:  # Piper speaks ~2.5 words/s, people rarely > 4
        return True
    for n in range(1, 5):
        for i in range(len(words) - 2 * n + 1):
            if words[i : i + n] == words[i + n : i + 2 * n] and (n > 1 or len(words[i]) > 3):
                return True
    return False


@dataclass
class Setting:
    name: str
    audio_ctx: Callable[[Audio], int] = lambda _a: 0
    params: dict[str, Any] = field(default_factory=dict)
    flash_attn: bool = True
    """pywhispercpp's default. With it whisper.cpp pads the encoder and cross-attention K/V to a
    multiple of 256 rows and attends to the padding unmasked (see the decision record)."""
    guard: bool = False
    """Retry with the full window when the short-window text looks repeated."""


def ctx_margin(margin: int) -> Callable[[Audio], int]:
    return lambda a: half_frames(a) + margin


def ctx_256(margin: int, minimum: int = 256) -> Callable[[Audio], int]:
    """Smallest multiple of 256 that leaves ``margin`` positions of silence after the speech."""
    return lambda a: max(minimum, 256 * math.ceil((half_frames(a) + margin) / 256))


NO_FALLBACK = {"temperature_inc": 0.0}
SINGLE = {"single_segment": True}
SETTINGS = [
    Setting("default (ctx 1500 = 30 s)"),
    Setting("default, no fallback", params=NO_FALLBACK),
    Setting("ctx=h (FACTS)", half_frames),
    Setting("ctx=h, single_segment", half_frames, SINGLE),
    Setting("ctx=h, no_timestamps", half_frames, {"no_timestamps": True}),
    Setting("ctx=h, max_tokens, no fallback", half_frames, NO_FALLBACK | {"max_tokens": 24}),
    Setting("ctx=h+64, no fallback", ctx_margin(64), NO_FALLBACK),
    Setting("ctx=256k >= h+32, no fallback", ctx_256(32), NO_FALLBACK),
    Setting("ctx=256k >= h+64, no fallback", ctx_256(64), NO_FALLBACK),
    Setting("ctx=256k >= h+128, no fallback", ctx_256(128), NO_FALLBACK),
    Setting("ctx=256k >= h+64, single, no fallback", ctx_256(64), NO_FALLBACK | SINGLE),
    Setting("ctx=max(512, 256k >= h+64), no fallback", ctx_256(64, 512), NO_FALLBACK),
    Setting("ctx=256k >= h+64, guard, no fallback", ctx_256(64), NO_FALLBACK, guard=True),
    Setting("default again, after the reduced-ctx runs"),
    Setting("FA off: default", flash_attn=False),
    Setting("FA off: ctx=h", half_frames, NO_FALLBACK, flash_attn=False),
    Setting("FA off: ctx=h+32", ctx_margin(32), NO_FALLBACK, flash_attn=False),
    Setting("FA off: ctx=h+64", ctx_margin(64), NO_FALLBACK, flash_attn=False),
    Setting("FA off: ctx=h+128", ctx_margin(128), NO_FALLBACK, flash_attn=False),
    Setting("FA off: ctx=h+256", ctx_margin(256), NO_FALLBACK, flash_attn=False),
    Setting("FA off: ctx=h+64, guard", ctx_margin(64), NO_FALLBACK, False, guard=True),
]

# pywhispercpp keeps per-call parameters for later calls: every call passes all of these.
BASE_PARAMS: dict[str, Any] = {
    "audio_ctx": 0,
    "single_segment": False,
    "no_timestamps": False,
    "no_context": True,
    "temperature_inc": 0.2,
    "max_tokens": 0,
}


class WhisperCpp:
    def __init__(self, ggml: Path) -> None:
        self.models = {
            fa: load_whisper_cpp(ggml, context_params={"flash_attn": fa}) for fa in (True, False)
        }

    def run(self, setting: Setting, audio: Audio) -> tuple[str, float, bool]:
        """(text, seconds, guard fired)"""
        model = self.models[setting.flash_attn]
        ctx = min(setting.audio_ctx(audio), MAX_CTX)
        params = BASE_PARAMS | setting.params | {"audio_ctx": ctx}
        started = time.perf_counter()
        text = " ".join(s.text.strip() for s in model.transcribe(audio, **params))
        fired = False
        if setting.guard and ctx and looks_repeated(text, len(audio) / ASR_SAMPLE_RATE):
            fired = True
            params["audio_ctx"] = 0
            text = " ".join(s.text.strip() for s in model.transcribe(audio, **params))
        return text, time.perf_counter() - started, fired


class FasterWhisper:
    def __init__(self, model_dir: Path) -> None:
        module: Any = importlib.import_module("faster_whisper")
        self.model = module.WhisperModel(
            str(model_dir), device="cpu", compute_type="int8", cpu_threads=2
        )

    def run(self, beam: int, audio: Audio) -> tuple[str, float]:
        started = time.perf_counter()
        segments, _info = self.model.transcribe(
            audio,
            language="en",
            beam_size=beam,
            without_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        text = " ".join(s.text.strip() for s in segments)  # the generator does the work
        return text, time.perf_counter() - started


def ulaw_round_trip(pcm: NDArray[np.int16], rate: int) -> Audio:
    narrow = resample(pcm.astype(np.float32) / 32768.0, rate, 8000)
    pcm8 = np.clip(np.round(narrow * 32767.0), -32768, 32767).astype(np.int16).tobytes()
    decoded = np.frombuffer(audioop.ulaw2lin(audioop.lin2ulaw(pcm8, 2), 2), dtype=np.int16)
    return resample(decoded.astype(np.float32) / 32768.0, 8000, ASR_SAMPLE_RATE)


def build_sets(voice: PiperVoice) -> dict[str, list[tuple[str, Audio]]]:
    def clean(text: str, config: SynthesisConfig | None = None) -> Audio:
        pcm, rate = synthesize(voice, text, config)
        return resample(pcm.astype(np.float32) / 32768.0, rate, ASR_SAMPLE_RATE)

    rates = [SynthesisConfig(length_scale=0.8), SynthesisConfig(length_scale=1.25)]
    return {
        "base": [(t, clean(t)) for t in SENTENCES],
        "rates": [(t, clean(t, c)) for c in rates for t in SENTENCES],
        "ulaw": [(t, ulaw_round_trip(*synthesize(voice, t))) for t in SENTENCES],
    }


def summarize(
    runs: list[tuple[str, str, float, bool]],
) -> dict[str, Any]:
    """runs: (reference, hypothesis, seconds, guard fired)"""
    edits = words = 0
    errors = []
    for ref, hyp, _s, _f in runs:
        e, n = word_errors(ref, hyp)
        edits, words = edits + e, words + n
        if e:
            errors.append({"ref": ref, "hyp": hyp})
    times = [r[2] for r in runs]
    return {
        "wer_percent": round(100 * edits / words, 1),
        "words": words,
        "mean_s": round(statistics.mean(times), 3),
        "max_s": round(max(times), 3),
        "guard_fired": sum(r[3] for r in runs),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5, help="timing runs per clip")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--timing-only",
        action="store_true",
        help="only the 1/2/5 s clip timings of the main candidates, round-robin so that load "
        "from other processes hits every setting alike",
    )
    args = parser.parse_args()
    if args.timing_only:
        timing_round_robin(args)
        return

    prepared = prepare_models(args.models_dir or default_models_dir())
    bundled = locate_bundled()
    voice = load_voice(bundled.voice_model, bundled.voice_config)
    clips = {}
    for sec, text in TIMING_CLIPS.items():
        pcm, rate = synthesize(voice, text)
        speech = resample(pcm.astype(np.float32) / 32768.0, rate, ASR_SAMPLE_RATE)
        clips[sec] = pad_to(speech, sec)
    sets = build_sets(voice)
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
        },
        "timing_clips": {f"{s:g}s": t for s, t in TIMING_CLIPS.items()},
        "whisper_cpp": {},
        "faster_whisper": {},
    }

    def timing(run: Callable[[Audio], tuple[str, float]]) -> dict[str, Any]:
        out = {}
        for sec, clip in clips.items():
            samples = [run(clip) for _ in range(args.repeats)]
            text = samples[0][0]
            out[f"{sec:g}s"] = {
                "median_s": round(statistics.median(s[1] for s in samples), 3),
                "errors": word_errors(TIMING_CLIPS[sec], text)[0],
                "text": text,
            }
        return out

    cpp = WhisperCpp(prepared.ggml_path)
    cpp.run(SETTINGS[0], clips[1.0])  # warm-up
    for setting in SETTINGS:
        row: dict[str, Any] = {
            "clips": timing(partial(_cpp_timed, cpp, setting)),
        }
        for name, utterances in sets.items():
            row[name] = summarize([(ref, *cpp.run(setting, audio)) for ref, audio in utterances])
        results["whisper_cpp"][setting.name] = row
        print(_line(setting.name, row), flush=True)

    fw = FasterWhisper(bundled.whisper_ct2_dir)
    fw.run(1, clips[1.0])  # warm-up
    for beam in (1, 5):
        row = {"clips": timing(partial(fw.run, beam))}
        for name, utterances in sets.items():
            row[name] = summarize([(ref, *fw.run(beam, audio), False) for ref, audio in utterances])
        name = f"faster-whisper int8 beam {beam}"
        results["faster_whisper"][name] = row
        print(_line(name, row), flush=True)

    results["machine"]["loadavg_end"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)


TIMING_SETTINGS = [
    "default (ctx 1500 = 30 s)",
    "ctx=h (FACTS)",
    "ctx=max(512, 256k >= h+64), no fallback",
    "FA off: default",
    "FA off: ctx=h+256",
]


def timing_round_robin(args: argparse.Namespace) -> None:
    prepared = prepare_models(args.models_dir or default_models_dir())
    bundled = locate_bundled()
    voice = load_voice(bundled.voice_model, bundled.voice_config)
    clips = {}
    for sec, text in TIMING_CLIPS.items():
        pcm, rate = synthesize(voice, text)
        clips[sec] = pad_to(resample(pcm.astype(np.float32) / 32768.0, rate, ASR_SAMPLE_RATE), sec)
    cpp = WhisperCpp(prepared.ggml_path)
    fw = FasterWhisper(bundled.whisper_ct2_dir)
    by_name = {s.name: s for s in SETTINGS}
    runners: dict[str, Callable[[Audio], tuple[str, float]]] = {
        name: partial(_cpp_timed, cpp, by_name[name]) for name in TIMING_SETTINGS
    }
    runners["faster-whisper int8 beam 1"] = partial(fw.run, 1)
    runners["faster-whisper int8 beam 5"] = partial(fw.run, 5)
    for run in runners.values():  # warm-up
        run(clips[1.0])
    samples: dict[tuple[str, float], list[float]] = {}
    texts: dict[tuple[str, float], str] = {}
    load = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for sec, clip in clips.items():
            for name, run in runners.items():
                text, seconds = run(clip)
                samples.setdefault((name, sec), []).append(seconds)
                texts[name, sec] = text
        load.append(os.getloadavg()[0])
    results = {
        name: {
            f"{sec:g}s": {
                "median_s": round(statistics.median(samples[name, sec]), 3),
                "min_s": round(min(samples[name, sec]), 3),
                "errors": word_errors(TIMING_CLIPS[sec], texts[name, sec])[0],
            }
            for sec in clips
        }
        for name in runners
    }
    for name, row in results.items():
        cells = " ".join(
            f"{k}: {v['median_s']:.3f} (min {v['min_s']:.3f}){'*' if v['errors'] else ''}"
            for k, v in row.items()
        )
        print(f"{name:42s} {cells}")
    print(f"1-min load average during the run: {min(load):.2f}-{max(load):.2f}")
    if args.out:
        args.out.write_text(json.dumps({"timing": results, "load": load}, indent=2) + "\n")


def _cpp_timed(cpp: WhisperCpp, setting: Setting, audio: Audio) -> tuple[str, float]:
    text, seconds, _fired = cpp.run(setting, audio)
    return text, seconds


def _line(name: str, row: dict[str, Any]) -> str:
    clips = " ".join(
        f"{k}:{v['median_s']:.3f}s{'*' if v['errors'] else ''}" for k, v in row["clips"].items()
    )
    wers = " ".join(f"{k}:{row[k]['wer_percent']}%" for k in ("base", "rates", "ulaw"))
    return f"{name:45s} {clips}  WER {wers}  mean {row['base']['mean_s']:.3f}s"


if __name__ == "__main__":
    main()
