"""Reassemble a CTranslate2 model directory whose ``model.bin`` ships in several packages.

The pieces are concatenated into a staging directory next to the destination while their
sha256 is computed; only a file with the recorded size and sha256 is renamed into place (with
the packages' ``config.json``, ``tokenizer.json`` and ``vocabulary.txt``). A missing package,
a truncated or corrupt piece therefore ends in :class:`AssemblyError` naming the packages, and
the destination holds either the verified directory or nothing: never a half-written model.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import os
import shutil
from pathlib import Path

from voicetyped_speech.models.catalog import SplitFile, WhisperSource
from voicetyped_speech.models.ggml_converter import fsync_dir

_CHUNK = 1 << 20


class AssemblyError(RuntimeError):
    """The pieces are missing or do not make the recorded file."""


def package_file(package: str, name: str) -> Path:
    """``<package>/data/<name>`` of an installed model package."""
    if importlib.util.find_spec(package) is None:
        dist = package.replace("_", "-")
        raise AssemblyError(f"{dist} is not installed (it comes with voicetyped-speech)")
    path = Path(str(importlib.resources.files(package) / "data" / name))
    if not path.is_file():
        raise AssemblyError(f"{path} is missing: reinstall {package.replace('_', '-')}")
    return path


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def file_problem(
    path: Path, label: str, size_bytes: int, sha256: str, *, verify_hash: bool
) -> str | None:
    """Why ``path`` is not the recorded file (None: it is); ``label`` names it in the reason."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"{label} is missing"
    if size != size_bytes:
        return f"{label} has the wrong size ({size} bytes, expected {size_bytes})"
    if verify_hash and sha256_file(path) != sha256:
        return f"{label} has the wrong sha256"
    return None


def assembled_problem(source: WhisperSource, models_dir: Path, *, verify_hash: bool) -> str | None:
    """Why ``source``'s reassembled directory is not usable (None: it is)."""
    split = source.split
    if split is None:
        return None
    directory = source.ct2_dir(models_dir)
    missing = [name for _package, name in source.sidecars if not (directory / name).is_file()]
    return file_problem(
        directory / split.name,
        f"{source.assembled_dirname}/{split.name}",
        split.size_bytes,
        split.sha256,
        verify_hash=verify_hash,
    ) or (f"{source.assembled_dirname}/{missing[0]} is missing" if missing else None)


def _concatenate(split: SplitFile, packages: tuple[str, ...], out_path: Path) -> None:
    pieces = [package_file(package, name) for package, name in split.parts]
    sha = hashlib.sha256()
    size = 0
    with out_path.open("wb") as out:
        for piece in pieces:
            with piece.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    out.write(chunk)
                    sha.update(chunk)
                    size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    if size != split.size_bytes or sha.hexdigest() != split.sha256:
        raise AssemblyError(
            f"{split.name} reassembled from {' + '.join(packages)} has {size} bytes, sha256 "
            f"{sha.hexdigest()}; expected {split.size_bytes} bytes, sha256 {split.sha256} "
            "(a corrupt or partial install: reinstall those packages)"
        )


def assemble(source: WhisperSource, models_dir: Path) -> Path:
    """``source``'s CTranslate2 directory in ``models_dir``, reassembled unless it is there
    intact already. Returns the directory."""
    split = source.split
    if split is None:
        raise ValueError(f"{source.name} ships whole; nothing to reassemble")
    final = source.ct2_dir(models_dir)
    if assembled_problem(source, models_dir, verify_hash=True) is None:
        return final
    staging = models_dir / f".staging-{source.assembled_dirname}"
    old = models_dir / f".old-{source.assembled_dirname}"
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _concatenate(split, source.packages, staging / split.name)
        for package, name in source.sidecars:
            shutil.copyfile(package_file(package, name), staging / name)
        for path in staging.iterdir():
            path.chmod(0o644)
        staging.chmod(0o755)
        if final.exists():  # a damaged earlier copy: out of the way first, then removed
            final.rename(old)
        staging.rename(final)
        fsync_dir(models_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return final
