"""Build the configured recogniser: one factory call per worker thread (one model each)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from voicetyped_speech.asr.base import Recognizer
from voicetyped_speech.asr.languages import ModelLanguages, model_languages
from voicetyped_speech.config import AsrConfig
from voicetyped_speech.models.catalog import source


def prepare_environment() -> None:
    """Process settings the native libraries read at load time (call before importing them).

    ``GGML_NO_BACKTRACE``: on an internal assertion ggml would fork gdb to print a backtrace,
    which hangs the process where gdb is installed. ``HF_HUB_OFFLINE``: faster-whisper looks on
    the Hugging Face hub for files a model directory lacks; audio and models stay local.
    ``OMP_WAIT_POLICY=PASSIVE``: whisper.cpp's (and CTranslate2's) OpenMP threads otherwise
    spin at every barrier; on a machine busy with other work a spinning thread holds the core
    its partner needs, and a 2-thread decode took 4.4 s at the median and up to 13.7 s instead
    of 1.7 s (docs/decisions/2026-12-03-decode-bounds.md).
    """
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def model_path(cfg: AsrConfig) -> Path:
    """The model the configuration names: ``model``, else ``model_name`` as prepared."""
    if cfg.model is not None:
        return cfg.model
    from voicetyped_speech.models.prepare import default_models_dir

    src = source(cfg.model_name)
    models_dir = cfg.models_dir or default_models_dir()
    if cfg.backend == "faster-whisper":
        return src.ct2_dir(models_dir)
    return models_dir / src.ggml_file(cfg.quantization)


@dataclass(frozen=True)
class RecognizerSetup:
    factory: Callable[[], Recognizer]
    languages: ModelLanguages
    default_language: str
    """asr.language as a Whisper code, checked against the model."""


def _prepare_hint(cfg: AsrConfig) -> str:
    kind = "whisper.cpp ggml file" if cfg.backend == "whispercpp" else "CTranslate2 directory"
    return f"run `voicetyped models prepare --model {cfg.model_name}`, or set asr.model to a {kind}"


def recognizer_setup(cfg: AsrConfig) -> RecognizerSetup:
    """A factory for the configured backend and what its model can recognise. Checks the model
    is there and knows ``asr.language`` first (clear errors at start, not a failing worker or
    English transcripts of another language)."""
    prepare_environment()
    path = model_path(cfg)
    name = str(path) if cfg.model is not None else cfg.model_name
    if cfg.backend == "whispercpp":
        from voicetyped_speech.asr.whispercpp import WhisperCppRecognizer
        from voicetyped_speech.models.ggml_converter import read_ggml_header

        if not path.is_file():
            raise FileNotFoundError(f"ggml model {path} not found ({_prepare_hint(cfg)})")
        # Raises ConversionError for a file that is not ggml.
        languages = model_languages(read_ggml_header(path), name)
        default = languages.check(cfg.language, "asr.language")
        return RecognizerSetup(
            lambda: WhisperCppRecognizer(
                path,
                n_threads=cfg.threads,
                language=default,
                min_audio_ctx=cfg.min_audio_ctx,
                fallback_temperature=cfg.fallback_temperature,
            ),
            languages,
            default,
        )
    from voicetyped_speech.asr.fasterwhisper import FasterWhisperRecognizer
    from voicetyped_speech.models.assemble import assembled_problem
    from voicetyped_speech.models.ctranslate2_reader import read_ct2_model
    from voicetyped_speech.models.ggml_converter import derive_hparams

    if not (path / "model.bin").is_file():
        raise FileNotFoundError(
            f"{path} is not a CTranslate2 model directory (no model.bin; {_prepare_hint(cfg)})"
        )
    if cfg.model is None:  # a reassembled model: refuse a damaged one (size: cheap at start)
        problem = assembled_problem(source(cfg.model_name), path.parent, verify_hash=False)
        if problem is not None:
            raise FileNotFoundError(f"{path} is damaged ({problem}): {_prepare_hint(cfg)}")
    languages = model_languages(derive_hparams(read_ct2_model(path / "model.bin")), name)
    default = languages.check(cfg.language, "asr.language")
    return RecognizerSetup(
        lambda: FasterWhisperRecognizer(
            path,
            device=cfg.device,
            compute_type=cfg.compute_type,
            cpu_threads=cfg.threads,
            beam_size=cfg.beam_size,
            language=default,
            fallback_temperature=cfg.fallback_temperature,
        ),
        languages,
        default,
    )


def recognizer_factory(cfg: AsrConfig) -> Callable[[], Recognizer]:
    """:func:`recognizer_setup`'s factory alone."""
    return recognizer_setup(cfg).factory
