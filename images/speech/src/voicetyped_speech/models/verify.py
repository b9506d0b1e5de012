"""End-to-end check of a prepared ASR model: Piper speaks a sentence, whisper.cpp hears it.

Heavy libraries (onnxruntime via piper, libwhisper via pywhispercpp) are imported inside the
functions, so importing this module (and ``voicetyped models --help``) stays fast.
"""

from __future__ import annotations

import importlib
import re
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from piper import PiperVoice, SynthesisConfig
    from pywhispercpp.model import Model

ASR_SAMPLE_RATE = 16000
# Chosen for margin: tiny.en gets it right at 0.8x-1.25x speaking rate, after a mu-law round
# trip, at 10 % volume, from an int8 source and with 1 or 2 threads. ("Please transfer me to the
# billing department." is a bad check: "please" turns into "place" in half of those variants.)
VERIFY_SENTENCE = "I would like to check the status of my order."

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation: ``"Hi, it's me."`` -> ``["hi", "it's", "me"]``."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def resample(audio: NDArray[np.float32], rate_in: int, rate_out: int) -> NDArray[np.float32]:
    """High-quality resampling with soxr (typed wrapper: soxr ships no type information)."""
    if rate_in == rate_out:
        return audio
    soxr: Any = importlib.import_module("soxr")
    return np.asarray(soxr.resample(audio, rate_in, rate_out), dtype=np.float32)


def load_voice(model_path: Path, config_path: Path) -> PiperVoice:
    from piper import PiperVoice

    return PiperVoice.load(model_path, config_path=config_path)


def synthesize(
    voice: PiperVoice, text: str, config: SynthesisConfig | None = None
) -> tuple[NDArray[np.int16], int]:
    """Piper's int16 PCM for ``text`` (all sentences joined) and its sample rate."""
    chunks = list(voice.synthesize(text, syn_config=config))
    if not chunks:
        return np.zeros(0, dtype=np.int16), int(voice.config.sample_rate)
    pcm = np.concatenate([np.asarray(c.audio_int16_array, dtype=np.int16) for c in chunks])
    return pcm, int(chunks[0].sample_rate)


def synthesize_16k(
    voice: PiperVoice, text: str, config: SynthesisConfig | None = None
) -> NDArray[np.float32]:
    """``text`` spoken by Piper as float32 mono at 16 kHz, what Whisper expects."""
    pcm, rate = synthesize(voice, text, config)
    return resample(pcm.astype(np.float32) / 32768.0, rate, ASR_SAMPLE_RATE)


def load_whisper_cpp(path: Path, *, n_threads: int = 2, **params: Any) -> Model:
    """Load a ggml file with pywhispercpp, English, quiet. Never downloads: the file must exist
    (pywhispercpp treats a missing path as a model *name* to download)."""
    from pywhispercpp.model import Model

    if not path.is_file():
        raise FileNotFoundError(path)
    return Model(
        str(path),
        n_threads=n_threads,
        print_progress=False,
        language="en",
        redirect_whispercpp_logs_to=None,
        **params,
    )


def transcribe(model: Model, audio: NDArray[np.float32], **params: Any) -> str:
    segments = model.transcribe(audio, **params)
    return " ".join(s.text.strip() for s in segments).strip()


@dataclass(frozen=True)
class Verification:
    sentence: str
    transcript: str
    passed: bool
    audio_seconds: float
    transcribe_seconds: float


@cache
def spoken(voice_model: Path, voice_config: Path, sentence: str) -> NDArray[np.float32]:
    """``sentence`` in the Piper voice at 16 kHz, read-only. Synthesized once per process:
    ``models prepare`` checks every file it writes (float16 and q8_0) against the same words."""
    audio = synthesize_16k(load_voice(voice_model, voice_config), sentence)
    audio.setflags(write=False)
    return audio


def verify_ggml(
    ggml_path: Path,
    voice_model: Path,
    voice_config: Path,
    sentence: str = VERIFY_SENTENCE,
) -> Verification:
    """Synthesize ``sentence``, transcribe it with ``ggml_path``; pass if the words match."""
    audio = spoken(voice_model, voice_config, sentence)
    model = load_whisper_cpp(ggml_path)
    started = time.perf_counter()
    transcript = transcribe(model, audio)
    elapsed = time.perf_counter() - started
    return Verification(
        sentence=sentence,
        transcript=transcript,
        passed=normalize_words(transcript) == normalize_words(sentence),
        audio_seconds=len(audio) / ASR_SAMPLE_RATE,
        transcribe_seconds=elapsed,
    )
