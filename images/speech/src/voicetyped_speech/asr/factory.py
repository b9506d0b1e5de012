"""Build the configured recogniser: one factory call per worker thread (one model each)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from voicetyped_speech.asr.base import Recognizer
from voicetyped_speech.config import AsrConfig


def prepare_environment() -> None:
    """Process settings the native libraries read at load time.

    ``GGML_NO_BACKTRACE``: on an internal assertion ggml would fork gdb to print a backtrace,
    which hangs the process where gdb is installed. ``HF_HUB_OFFLINE``: faster-whisper looks on
    the Hugging Face hub for files a model directory lacks; audio and models stay local.
    """
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def model_path(cfg: AsrConfig) -> Path:
    """The model the configuration names, or the default one for its backend."""
    if cfg.model is not None:
        return cfg.model
    from voicetyped_speech.models.prepare import default_models_dir, locate_bundled

    bundled = locate_bundled()
    if cfg.backend == "faster-whisper":
        return bundled.whisper_ct2_dir
    return (cfg.models_dir or default_models_dir()) / bundled.ggml_filename


def recognizer_factory(cfg: AsrConfig) -> Callable[[], Recognizer]:
    """A factory for the configured backend; checks the model is there first (clear errors at
    start instead of a failing worker)."""
    prepare_environment()
    path = model_path(cfg)
    if cfg.backend == "whispercpp":
        from voicetyped_speech.asr.whispercpp import WhisperCppRecognizer
        from voicetyped_speech.models.ggml_converter import read_ggml_header

        if not path.is_file():
            raise FileNotFoundError(
                f"ggml model {path} not found (run `voicetyped models prepare`, or set "
                "asr.model to a whisper.cpp ggml file)"
            )
        read_ggml_header(path)  # raises ConversionError for a file that is not ggml
        return lambda: WhisperCppRecognizer(
            path, n_threads=cfg.threads, language=cfg.language, min_audio_ctx=cfg.min_audio_ctx
        )
    from voicetyped_speech.asr.fasterwhisper import FasterWhisperRecognizer

    if not (path / "model.bin").is_file():
        raise FileNotFoundError(f"{path} is not a CTranslate2 model directory (no model.bin)")
    return lambda: FasterWhisperRecognizer(
        path,
        device=cfg.device,
        compute_type=cfg.compute_type,
        cpu_threads=cfg.threads,
        beam_size=cfg.beam_size,
        language=cfg.language,
    )
