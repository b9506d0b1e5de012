"""Warm the prompt cache with the fixed prompts of the dialogs a deployment serves.

The speech gateway does not interpret dialogs (the runtime does); it only needs their prompt
texts. It reads the same documents the runtime loads (the Dialog ConfigMap mounted as a
directory, or files given to ``voicetyped up``): every ``play_tts`` action's ``text`` with its
``voice`` (or the dialog's ``settings.voice``). Templated prompts (``{{ ... }}``) differ per call
and are skipped by the synthesizer. A document may also be a ``Dialog`` resource
(``kind: Dialog`` with the dialog under ``spec``). The directory is polled; changed files are
warmed again (already-cached prompts cost nothing). Each time, the dialogs' recognition
languages (``settings.language``) are also checked against the model: one the model cannot
recognise is logged as an error then, not first noticed in a call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from voicetyped.documents import (
    DocumentError,
    DocumentKindError,
    parse_documents,
    read_limited,
    unwrap,
)
from voicetyped.service.config import config_files
from voicetyped.service.logs import get_logger

from voicetyped_speech.asr.languages import LanguageError, ModelLanguages
from voicetyped_speech.tts import Synthesizer, TTSError, VoiceError

log = get_logger("voicetyped.speech.warmup")


def _walk(node: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(node, Mapping):
        play = node.get("play_tts")
        if isinstance(play, Mapping):
            yield play
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def dialog_prompts(document: Any) -> list[tuple[str, str]]:
    """``(text, voice)`` of every play_tts action in a dialog document (voice "" = default)."""
    try:
        document = unwrap(document, "Dialog")
    except DocumentKindError:
        return []
    if not isinstance(document, Mapping):
        return []
    settings = document.get("settings")
    default = settings.get("voice") if isinstance(settings, Mapping) else None
    prompts: list[tuple[str, str]] = []
    for play in _walk(document):
        text = play.get("text")
        voice = play.get("voice") or default or ""
        if isinstance(text, str) and isinstance(voice, str):
            prompts.append((text, voice))
    return list(dict.fromkeys(prompts))


def read_prompts(directory: Path) -> list[tuple[str, str]]:
    """Prompts of every dialog document in ``directory`` (blocking: call in a thread).
    Unreadable documents are logged and skipped."""
    prompts: list[tuple[str, str]] = []
    for path, _ in config_files(directory):
        try:
            for document in parse_documents(read_limited(path), str(path)):
                prompts.extend(dialog_prompts(document))
        except (OSError, DocumentError, yaml.YAMLError) as exc:
            log.warning("dialog document unreadable for warm-up", path=str(path), error=str(exc))
    return list(dict.fromkeys(prompts))


async def warm_prompts(
    synth: Synthesizer, prompts: Sequence[tuple[str, str]], rates: Sequence[int], default: str
) -> int:
    """Synthesize ``prompts`` into the cache; returns how many were newly synthesized."""
    by_voice: dict[str, list[str]] = {}
    for text, voice in prompts:
        by_voice.setdefault(voice or default, []).append(text)
    synthesized = 0
    for voice, texts in by_voice.items():
        for rate in rates:
            try:
                report = await synth.warm_up(texts, voice, rate)
            except (TTSError, VoiceError, OSError) as exc:
                log.warning("prompt warm-up failed", voice=voice, rate=rate, error=str(exc))
                continue
            synthesized += report.synthesized
    return synthesized


def dialog_languages(directory: Path) -> list[tuple[str, str]]:
    """``(dialog name, settings.language)`` of every dialog document in ``directory`` that
    names a language (blocking: call in a thread). Unreadable documents are skipped (their
    prompts' warm-up logs them)."""
    found: list[tuple[str, str]] = []
    for path, _ in config_files(directory):
        try:
            documents = parse_documents(read_limited(path), str(path))
        except (OSError, DocumentError, yaml.YAMLError):
            continue
        for document in documents:
            try:
                dialog = unwrap(document, "Dialog")
            except DocumentKindError:
                continue
            if not isinstance(dialog, Mapping):
                continue
            settings = dialog.get("settings")
            language = settings.get("language") if isinstance(settings, Mapping) else None
            if isinstance(language, str) and language:
                found.append((str(dialog.get("name", path.name)), language))
    return found


def check_dialog_languages(directory: Path, languages: ModelLanguages) -> list[str]:
    """One error line per dialog whose language the recognition model does not know (an
    English-only model serving a German dialog would otherwise hear English in German)."""
    problems = []
    for name, language in dialog_languages(directory):
        try:
            languages.check(language, f"dialog {name!r} settings.language")
        except LanguageError as exc:
            problems.append(str(exc))
    return problems


async def watch_and_warm(
    synth: Synthesizer,
    directory: Path,
    rates: Sequence[int],
    default: str,
    poll_s: float,
    languages: ModelLanguages | None = None,
    warmed: asyncio.Event | None = None,
) -> None:
    """Warm ``directory``'s prompts now and again whenever its files change (runs forever);
    with ``languages``, also check each dialog's recognition language against the model;
    ``warmed`` is set once the first pass is over (the service is ready then)."""
    seen: list[tuple[Path, float]] | None = None
    while True:
        try:
            files = await asyncio.to_thread(config_files, directory)
        except OSError as exc:
            log.warning("dialog directory unreadable", path=str(directory), error=str(exc))
            files = seen or []
        if files != seen:
            seen = files
            try:
                prompts = await asyncio.to_thread(read_prompts, directory)
                count = await warm_prompts(synth, prompts, rates, default)
                log.info("prompt cache warmed", prompts=len(prompts), synthesized=count)
                if languages is not None:
                    for problem in await asyncio.to_thread(
                        check_dialog_languages, directory, languages
                    ):
                        log.error("dialog language not supported", error=problem)
            except Exception:  # a dialog we cannot read must not keep the service unready
                log.exception("prompt warm-up failed")
        if warmed is not None:
            warmed.set()
        await asyncio.sleep(poll_s)
