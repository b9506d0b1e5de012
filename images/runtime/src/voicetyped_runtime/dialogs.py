"""Loaded dialogs: every version the process has seen, and which one is current per name.

A live call keeps the version it started with (its ``dialog_hash``); loading a
changed document makes a new version current for new calls only. Versions are
also kept in the session store, so a call resumed after a restart finds its
own version even if the file changed meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicetyped.documents import read_limited
from voicetyped.service.config import config_files
from voicetyped.service.logs import get_logger
from voicetyped_specs.dialog.compiled import (
    CompiledDialog,
    DialogError,
    load_dialog,
    parse_yaml,
)

from voicetyped_runtime.engine import Engine
from voicetyped_runtime.intents import IntentMatcher, build_intent_matcher

log = get_logger("voicetyped.runtime.dialogs")


@dataclass(frozen=True)
class DialogVersion:
    compiled: CompiledDialog
    engine: Engine
    matcher: IntentMatcher | None
    intent_note: str | None  # why intent matching fell back to keywords, if it did
    source: str
    loaded_at: float

    @property
    def name(self) -> str:
        return self.compiled.name

    @property
    def content_hash(self) -> str:
        return self.compiled.content_hash

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hash": self.content_hash,
            "states": len(self.compiled.states),
            "intents": (self.matcher.kind if self.matcher else "none"),
            "intent_note": self.intent_note,
            "source": self.source,
        }


def prepare(compiled: CompiledDialog, source: str, model_dir: Path | None = None) -> DialogVersion:
    """Build the engine and intent matcher of a compiled dialog (blocking: may load a model)."""
    matcher: IntentMatcher | None = None
    note = None
    if compiled.spec.intents:
        matcher, note = build_intent_matcher(
            compiled.spec.intents, compiled.spec.settings.intent_threshold, model_dir
        )
        if note:
            log.warning("intent matching fell back", dialog=compiled.name, reason=note)
    return DialogVersion(compiled, Engine(compiled), matcher, note, source, time.time())


class DialogRegistry:
    def __init__(self, model_dir: Path | None = None) -> None:
        self._model_dir = model_dir
        self._versions: dict[str, DialogVersion] = {}
        self._current: dict[str, str] = {}
        self._files: dict[Path, tuple[float, str]] = {}  # path -> (mtime, dialog name)
        self.file_errors: dict[str, str] = {}

    # -- loading --

    async def load_document(self, document: dict[str, Any], source: str) -> DialogVersion:
        """Validate, compile and make current; raises DialogError."""
        compiled = load_dialog(document)
        version = self._versions.get(compiled.content_hash)
        if version is None:
            version = await asyncio.to_thread(prepare, compiled, source, self._model_dir)
        self._versions[compiled.content_hash] = version
        previous = self._current.get(version.name)
        self._current[version.name] = version.content_hash
        if previous != version.content_hash:
            log.info("dialog loaded", dialog=version.name, hash=version.content_hash, source=source)
        return version

    async def load_text(self, text: str | bytes, source: str) -> DialogVersion:
        return await self.load_document(parse_yaml(text, source), source)

    async def adopt(self, document: dict[str, Any], source: str) -> DialogVersion:
        """Register an old version (from the store) without making it current."""
        compiled = load_dialog(document)
        if compiled.content_hash not in self._versions:
            self._versions[compiled.content_hash] = await asyncio.to_thread(
                prepare, compiled, source, self._model_dir
            )
        return self._versions[compiled.content_hash]

    async def sync_directory(self, directory: Path) -> list[DialogVersion]:
        """Load new or changed dialog files; bad files are reported and keep the old version."""
        changed = []
        for path, mtime in await asyncio.to_thread(config_files, directory):
            seen = self._files.get(path)
            if seen and seen[0] == mtime:
                continue
            try:
                data = await asyncio.to_thread(read_limited, path)
                version = await self.load_text(data, str(path))
            except (DialogError, OSError) as exc:
                self.file_errors[str(path)] = str(exc)
                self._files[path] = (mtime, "")
                log.error("dialog file rejected", path=str(path), error=str(exc))
                continue
            self.file_errors.pop(str(path), None)
            self._files[path] = (mtime, version.name)
            changed.append(version)
        return changed

    # -- lookup --

    def current(self, name: str) -> DialogVersion | None:
        digest = self._current.get(name)
        return self._versions.get(digest) if digest else None

    def version(self, content_hash: str) -> DialogVersion | None:
        return self._versions.get(content_hash)

    def names(self) -> list[str]:
        return sorted(self._current)

    def default(self) -> DialogVersion | None:
        """The only dialog, when exactly one is loaded (calls that name none use it)."""
        names = self.names()
        return self.current(names[0]) if len(names) == 1 else None
