"""Research harness: what lowers the word error rate on voices the recogniser was not tuned on.

Every phrase of a set (``voicetyped_testkit.phrases``, the TUNING set unless told otherwise) is
spoken by each espeak-ng voice (``voicetyped_testkit.espeak``) and by the project's Piper voice,
cut the way the VAD cuts an utterance (200 ms before the speech, 300 ms after), taken through
the call path (to 8 kHz, G.711 mu-law and back) and decoded by each configuration: a
recogniser (whisper.cpp or faster-whisper; tiny.en or Whisper base), its decoding settings
(beam, temperature fallback, initial prompt) and a front end (how 8 kHz becomes 16 kHz:
the media gateway's FIR, soxr, linear; pre-emphasis; level normalisation). It reports WER per
voice and the decode time per utterance (median, p90) next to it. The machine is shared:
compare decode times within one run only.

    python images/speech/bench/asr_accuracy.py --out /tmp/accuracy.json \
        [--set tuning] [--configs wcpp-tiny,fw-base-b5] [--voices en-us-male,piper] [--every 3]
        [--threads 1] [--base-model DIR]

``--base-model``: a CTranslate2 Whisper base directory (``voicetyped models prepare --model base``
writes ``<models dir>/ct2-base``); without it the base configurations are left out.
Findings: docs/decisions/2026-12-03-recognition-accuracy.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from voicetyped_media.codecs.resample import Resampler
from voicetyped_speech.asr.whispercpp import audio_ctx_for
from voicetyped_speech.models.prepare import default_models_dir, locate_bundled, prepare_models
from voicetyped_speech.models.verify import load_voice, synthesize_16k
from voicetyped_testkit import espeak
from voicetyped_testkit.phrases import SETS
from voicetyped_testkit.speech import (
    SAMPLE_RATE,
    Pcm,
    Score,
    resample,
    to_pcm,
    ulaw_decode,
    ulaw_encode,
)
from voicetyped_testkit.stats import pct

Audio = NDArray[np.float32]
PROMPT = "A caller on the phone to customer service."
"""A generic call-centre prompt (no phrase of any set): the initial-prompt experiment."""


@dataclass(frozen=True)
class FrontEnd:
    upsample: Literal["fir", "soxr-hq", "soxr-vhq", "linear", "wideband"] = "fir"
    """8 -> 16 kHz: the media gateway's polyphase FIR (what calls get), soxr, linear
    interpolation; ``wideband`` skips the telephone path (the 16 kHz source: a reference)."""
    preemphasis: float = 0.0
    """y[n] = x[n] - a*x[n-1] at 16 kHz (0: off)."""
    level_dbfs: float | None = None
    """Scale the utterance so its loud frames' RMS is this (None: as received)."""

    def apply(self, wide: Pcm, narrow: Pcm) -> Audio:
        audio: NDArray[Any]
        if self.upsample == "wideband":
            audio = wide.astype(np.float32) / 32768
        elif self.upsample == "fir":
            pcm = Resampler(8000, SAMPLE_RATE)(narrow.tobytes(), last=True)
            audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
        elif self.upsample == "linear":
            x = narrow.astype(np.float32) / 32768
            t = np.arange(2 * len(x)) / 2
            audio = np.interp(t, np.arange(len(x)), x).astype(np.float32)
        else:
            import soxr

            quality = "VHQ" if self.upsample == "soxr-vhq" else "HQ"
            x = narrow.astype(np.float32) / 32768
            audio = np.asarray(soxr.resample(x, 8000, SAMPLE_RATE, quality=quality), np.float32)
        if self.preemphasis:
            audio = np.append(audio[:1], audio[1:] - self.preemphasis * audio[:-1]).astype(
                np.float32
            )
        if self.level_dbfs is not None:
            audio = level(audio, self.level_dbfs)
        return np.clip(audio, -1.0, 1.0).astype(np.float32)


def level(audio: NDArray[Any], target_dbfs: float) -> Audio:
    """Gain so that the RMS of the loudest half of the 20 ms frames is ``target_dbfs``."""
    frames = audio[: len(audio) // 320 * 320].reshape(-1, 320)
    if not len(frames):
        return audio
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    loud = np.sort(rms)[len(rms) // 2 :]
    current = float(np.sqrt(np.mean(loud**2)))
    if current <= 1e-6:
        return audio
    gain = 10 ** (target_dbfs / 20) / current
    peak = float(np.max(np.abs(audio))) * gain
    gain /= max(1.0, peak)  # never clip
    return (audio * gain).astype(np.float32)


@dataclass(frozen=True)
class Decoder:
    backend: Literal["whispercpp", "faster-whisper"] = "whispercpp"
    model: Literal["tiny.en", "base"] = "tiny.en"
    beam: int = 1
    fallback: bool = True
    """Temperature fallback (both backends' default: re-decode hotter when the compression
    ratio or mean log-probability says the result is bad)."""
    prompt: str | None = None


@dataclass(frozen=True)
class Config:
    name: str
    decoder: Decoder = field(default_factory=Decoder)
    front: FrontEnd = field(default_factory=FrontEnd)


_WCPP = Decoder()
_FW = Decoder(backend="faster-whisper")
_FWB = Decoder(backend="faster-whisper", model="base")
CONFIGS: tuple[Config, ...] = (
    # The gateway as it is: whisper.cpp tiny.en, greedy, fallback on; faster-whisper beam 1.
    Config("wcpp-tiny", _WCPP),
    Config("wcpp-tiny-wideband", _WCPP, FrontEnd(upsample="wideband")),
    Config("wcpp-tiny-nofallback", replace(_WCPP, fallback=False)),
    Config("wcpp-tiny-b5", replace(_WCPP, beam=5)),
    Config("wcpp-tiny-prompt", replace(_WCPP, prompt=PROMPT)),
    Config("fw-tiny", _FW),
    Config("fw-tiny-b5", replace(_FW, beam=5)),
    Config("fw-base", _FWB),
    Config("fw-base-b5", replace(_FWB, beam=5)),
    Config("fw-base-nofallback", replace(_FWB, fallback=False)),
    Config("fw-base-prompt", replace(_FWB, prompt=PROMPT)),
    Config("fw-base-wideband", _FWB, FrontEnd(upsample="wideband")),
    # Front ends, on both models.
    Config("wcpp-tiny-soxr-vhq", _WCPP, FrontEnd(upsample="soxr-vhq")),
    Config("wcpp-tiny-linear", _WCPP, FrontEnd(upsample="linear")),
    Config("wcpp-tiny-preemph", _WCPP, FrontEnd(preemphasis=0.97)),
    Config("wcpp-tiny-level-20", _WCPP, FrontEnd(level_dbfs=-20.0)),
    Config("wcpp-tiny-level-30", _WCPP, FrontEnd(level_dbfs=-30.0)),
    Config("fw-base-soxr-vhq", _FWB, FrontEnd(upsample="soxr-vhq")),
    Config("fw-base-preemph", _FWB, FrontEnd(preemphasis=0.97)),
    Config("fw-base-level-20", _FWB, FrontEnd(level_dbfs=-20.0)),
)

Transcribe = Callable[[Audio], str]


def whispercpp(decoder: Decoder, ggml: Path, threads: int) -> Transcribe:
    """Decoding as the gateway's WhisperCppRecognizer does it, plus the decoder's settings."""
    from pywhispercpp.model import Model

    model: Any = Model(
        str(ggml),
        params_sampling_strategy=1 if decoder.beam > 1 else 0,
        n_threads=threads,
        print_progress=False,
        language="en",
        redirect_whispercpp_logs_to=None,
    )
    extra: dict[str, Any] = {}
    if decoder.beam > 1:
        extra["beam_search"] = {"beam_size": decoder.beam, "patience": -1.0}
    if not decoder.fallback:
        extra["temperature_inc"] = 0.0
    if decoder.prompt:
        extra["initial_prompt"] = decoder.prompt

    def run(audio: Audio) -> str:
        segments = model.transcribe(
            audio,
            no_context=True,
            single_segment=True,
            audio_ctx=audio_ctx_for(len(audio)),
            max_tokens=16 + 8 * math.ceil(len(audio) / 16000),
            **extra,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    return run


def faster_whisper(decoder: Decoder, model_dir: Path, threads: int) -> Transcribe:
    """Decoding as the gateway's FasterWhisperRecognizer does it, plus the decoder's settings."""
    from faster_whisper import WhisperModel

    model: Any = WhisperModel(
        str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads
    )
    temperature: Any = [0.0] if not decoder.fallback else [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]

    def run(audio: Audio) -> str:
        segments, _ = model.transcribe(
            audio,
            language="en",
            beam_size=decoder.beam,
            temperature=temperature,
            initial_prompt=decoder.prompt,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    return run


@dataclass
class Clip:
    voice: str
    text: str
    wide: Pcm
    """16 kHz, as synthesised (trimmed and padded like a VAD segment)."""
    narrow: Pcm
    """8 kHz after the mu-law round trip: what the media gateway decodes from RTP."""


def _segment(pcm: Pcm) -> Pcm:
    """The speech with 200 ms before and 300 ms after, as the VAD hands an utterance over."""
    level_ = np.abs(pcm.astype(np.int32))
    loud = np.flatnonzero(level_ > max(200, int(level_.max()) // 50))
    speech = pcm[loud[0] : loud[-1] + 1] if len(loud) else pcm
    return np.concatenate([np.zeros(3200, np.int16), speech, np.zeros(4800, np.int16)])


def build_clips(phrases: tuple[str, ...], voices: list[str]) -> list[Clip]:
    piper = None
    clips = []
    for name in voices:
        for text in phrases:
            if name == "piper":
                if piper is None:
                    bundled = locate_bundled()
                    piper = load_voice(bundled.voice_model, bundled.voice_config)
                wide = to_pcm(synthesize_16k(piper, text))
            else:
                voice = next(v for v in espeak.VOICES if v.name == name)
                wide = espeak.speak_16k(text, voice)
            wide = _segment(wide)
            narrow = to_pcm(resample(wide.astype(np.float32) / 32768, SAMPLE_RATE, 8000))
            clips.append(Clip(name, text, wide, ulaw_decode(ulaw_encode(narrow))))
    return clips


def evaluate(config: Config, transcribe: Transcribe, clips: list[Clip]) -> dict[str, Any]:
    per_voice: dict[str, Score] = {}
    total = Score()
    seconds: list[float] = []
    errors: list[dict[str, str]] = []
    for clip in clips:
        audio = config.front.apply(clip.wide, clip.narrow)
        started = time.perf_counter()
        heard = transcribe(audio)
        seconds.append(time.perf_counter() - started)
        n = per_voice.setdefault(clip.voice, Score()).add(clip.text, heard)
        total.add(clip.text, heard)
        if n:
            errors.append({"voice": clip.voice, "said": clip.text, "heard": heard})
    return {
        "config": asdict(config),
        "wer": round(total.wer, 4),
        "espeak_wer": round(_pooled([s for v, s in per_voice.items() if v != "piper"]), 4),
        "per_voice": {v: s.summary() for v, s in per_voice.items()},
        "decode_s": {
            "median": round(statistics.median(seconds), 3),
            "p90": round(pct(seconds, 0.9), 3),
        },
        "errors": errors,
    }


def _pooled(scores: list[Score]) -> float:
    words = sum(s.words for s in scores)
    return sum(s.errors for s in scores) / words if words else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--set", choices=sorted(SETS), default="tuning")
    parser.add_argument("--configs", default="", help="comma-separated names (default: all)")
    parser.add_argument("--voices", default="", help="comma-separated (default: espeak + piper)")
    parser.add_argument("--every", type=int, default=1, help="every Nth phrase of the set")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="compute threads per decode (the gateway's default is 2; on a machine loaded by "
        "other work, 1 avoids spinning threads waiting for each other)",
    )
    parser.add_argument("--base-model", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    wanted = [c for c in args.configs.split(",") if c]
    configs = [c for c in CONFIGS if not wanted or c.name in wanted]
    if unknown := set(wanted) - {c.name for c in configs}:
        parser.error(f"unknown configs {sorted(unknown)}; known: {[c.name for c in CONFIGS]}")
    if args.base_model is None:
        configs = [c for c in configs if c.decoder.model != "base"]
    voices = [v for v in args.voices.split(",") if v] or [v.name for v in espeak.VOICES] + ["piper"]
    phrases = SETS[args.set][:: args.every]
    prepared = prepare_models(default_models_dir())
    bundled = locate_bundled()
    clips = build_clips(phrases, voices)
    print(f"{len(clips)} utterances ({len(voices)} voices x {len(phrases)} phrases)", flush=True)
    result: dict[str, Any] = {
        "harness": "asr_accuracy",
        "set": args.set,
        "phrases": len(phrases),
        "threads": args.threads,
        "voices": voices,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "loadavg_start": os.getloadavg(),
        "runs": [],
    }
    for config in configs:
        d = config.decoder
        if d.backend == "whispercpp":
            if d.model != "tiny.en":
                print(f"skip {config.name}: no whisper.cpp {d.model} model here", flush=True)
                continue
            transcribe = whispercpp(d, prepared.ggml_path, args.threads)
        else:
            model_dir = bundled.whisper_ct2_dir if d.model == "tiny.en" else args.base_model
            assert model_dir is not None
            transcribe = faster_whisper(d, model_dir, args.threads)
        run = evaluate(config, transcribe, clips)
        run["loadavg"] = os.getloadavg()
        result["runs"].append(run)
        per_voice = {v: s["wer"] for v, s in run["per_voice"].items()}
        print(
            f"{config.name:24s} WER {run['wer']:.3f} espeak {run['espeak_wer']:.3f} "
            f"decode median {run['decode_s']['median']:.2f}s p90 {run['decode_s']['p90']:.2f}s "
            f"{per_voice}",
            flush=True,
        )
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
