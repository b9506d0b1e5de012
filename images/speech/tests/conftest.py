"""Session fixtures with the real bundled models: one conversion, one prepared directory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from voicetyped_speech.models.ggml_converter import ConversionResult, convert_ct2_to_ggml
from voicetyped_speech.models.prepare import (
    BundledModels,
    PrepareResult,
    locate_bundled,
    prepare_models,
)
from voicetyped_speech.models.verify import load_voice, load_whisper_cpp

if TYPE_CHECKING:
    from piper import PiperVoice
    from pywhispercpp.model import Model


@pytest.fixture(scope="session")
def bundled() -> BundledModels:
    return locate_bundled()


@pytest.fixture(scope="session")
def converted(bundled: BundledModels, tmp_path_factory: pytest.TempPathFactory) -> ConversionResult:
    out = tmp_path_factory.mktemp("ggml") / "ggml-tiny.en.bin"
    return convert_ct2_to_ggml(bundled.whisper_ct2_dir, out)


@pytest.fixture(scope="session")
def voice(bundled: BundledModels) -> PiperVoice:
    return load_voice(bundled.voice_model, bundled.voice_config)


@pytest.fixture(scope="session")
def whisper_cpp(converted: ConversionResult) -> Model:
    return load_whisper_cpp(converted.path)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PrepareResult:
    return prepare_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def prepared_base(tmp_path_factory: pytest.TempPathFactory) -> PrepareResult:
    """Whisper base reassembled from its two packages, converted and verified."""
    return prepare_models(tmp_path_factory.mktemp("models-base"), names=("base",))


@pytest.fixture
def linked_models_dir(prepared: PrepareResult, tmp_path: Path) -> Path:
    """A models directory whose entries are symlinks into the prepared one (cheap to alter)."""
    dst = tmp_path / "linked"
    dst.mkdir()
    for entry in prepared.models_dir.iterdir():
        (dst / entry.name).symlink_to(entry)
    return dst
