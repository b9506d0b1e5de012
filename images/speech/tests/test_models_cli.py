"""``voicetyped models prepare|list`` through typer's CliRunner."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from typer.testing import CliRunner
from voicetyped.cli import build_app
from voicetyped_speech.cli import app
from voicetyped_speech.models.prepare import PrepareResult, read_manifest

runner = CliRunner()


def test_registered_as_voicetyped_models() -> None:
    result = runner.invoke(build_app(), ["models", "--help"])
    assert result.exit_code == 0, result.output
    assert "prepare" in result.output and "list" in result.output


def test_prepare_skips_when_prepared_and_force_redoes(
    prepared: PrepareResult, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(prepared.models_dir, models)  # the session's directory stays as it is
    before = read_manifest(models)
    assert before is not None

    result = runner.invoke(app, ["prepare", "--models-dir", str(models)])
    assert result.exit_code == 0, result.output
    assert "already prepared" in result.output
    assert read_manifest(models) == before

    result = runner.invoke(app, ["prepare", "--models-dir", str(models), "--force"])
    assert result.exit_code == 0, result.output
    assert "converting Whisper tiny.en to ggml" in result.output
    assert "verified" in result.output and "status of my order" in result.output
    after = read_manifest(models)
    assert after is not None
    assert after.asr["tiny.en"].created_at > before.asr["tiny.en"].created_at
    assert after.asr["tiny.en"].sha256 == before.asr["tiny.en"].sha256


def test_list_uses_the_environment_and_shows_models(
    linked_models_dir: Path, prepared: PrepareResult
) -> None:
    # A model a user mounted next to the prepared one is listed as unmanaged.
    (linked_models_dir / "ggml-custom.bin").symlink_to(prepared.ggml_path)
    (linked_models_dir / "notes.bin").write_bytes(b"not a model")
    env = {"VOICETYPED_MODELS_DIR": str(linked_models_dir)}
    result = runner.invoke(app, ["list"], env=env)
    assert result.exit_code == 0, result.output
    for expected in (
        "whisper-tiny.en",
        "English only",
        "en_US-joe",
        "ok",
        "ggml-custom",
        "unmanaged",
    ):
        assert expected in result.output
    assert "notes" not in result.output
    assert os.environ.get("VOICETYPED_MODELS_DIR") != str(linked_models_dir)


def test_list_reports_a_damaged_model(linked_models_dir: Path) -> None:
    ggml = linked_models_dir / "ggml-tiny.en.bin"
    ggml.unlink()
    ggml.write_bytes(b"truncated")
    result = runner.invoke(app, ["list", "--models-dir", str(linked_models_dir)])
    assert result.exit_code == 1
    assert "wrong size" in result.output


def test_list_on_an_empty_directory(tmp_path: Path) -> None:
    result = runner.invoke(app, ["list", "--models-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no prepared models" in result.output
