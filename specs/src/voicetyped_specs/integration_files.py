"""Integration documents from files, validated offline: what ``voicetyped dialog validate
--integration`` and ``voicetyped up`` check dialogs' ``call_hook`` targets against.

A file holds either the gateway's document (:class:`Integration`, credentials as files: what
``voicetyped up`` loads) or a ``voicetyped.io`` Integration resource (:class:`IntegrationSpec`,
credentials as Secret references: what ``kubectl apply`` takes). Each is validated with the
model of its form; every problem is reported with its file and field path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from voicetyped.documents import DocumentError, DocumentKindError, read_document, unwrap
from voicetyped.service.config import config_files

from voicetyped_specs.integration import Integration, IntegrationSpec

Catalog = Mapping[str, frozenset[str]]
"""Integration name -> its operation names (what a ``call_hook`` may name)."""


@dataclass(frozen=True)
class FileIssue:
    source: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}: {self.path}" if self.path else self.source
        return f"{where}: {self.message}"


class IntegrationFileError(ValueError):
    """One or more Integration files are invalid; ``issues`` lists every problem."""

    def __init__(self, issues: list[FileIssue]) -> None:
        self.issues = issues
        super().__init__("invalid Integration documents:\n" + "\n".join(f"  - {i}" for i in issues))


def document_files(paths: Iterable[Path]) -> list[Path]:
    """``paths`` with each directory replaced by its YAML/JSON files (sorted, no dot-files)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(p for p, _ in config_files(path))
        else:
            files.append(path)
    return files


def field_path(loc: Iterable[int | str]) -> str:
    """pydantic's error location as a document path: ``operations.get_order.extract``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate_integration(data: Any, source: str) -> Integration | IntegrationSpec:
    """The document in ``data`` (plain, or a voicetyped.io Integration resource) validated by
    the model of its form; raises :class:`IntegrationFileError` naming each bad field."""
    resource = isinstance(data, dict) and "apiVersion" in data and "kind" in data
    try:
        document = unwrap(data, "Integration")
    except DocumentKindError as exc:
        raise IntegrationFileError([FileIssue(source, "", str(exc))]) from None
    if not isinstance(document, dict):
        raise IntegrationFileError([FileIssue(source, "", "an Integration is a YAML mapping")])
    prefix = "spec." if resource else ""
    model: type[Integration | IntegrationSpec] = IntegrationSpec if resource else Integration
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            message = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            elif err["type"] == "missing":
                message = "required field missing"
            where = field_path(err["loc"])
            issues.append(FileIssue(source, f"{prefix}{where}" if where else "", message))
        raise IntegrationFileError(issues) from None


def load_integration_file(path: Path) -> Integration | IntegrationSpec:
    source = str(path)
    try:
        data = read_document(path)  # size, encoding and YAML alias limits
    except DocumentError as exc:
        message = str(exc).removeprefix(f"{source}: ")
        raise IntegrationFileError([FileIssue(source, "", message)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        issue = FileIssue(source, "", f"YAML error{where}: {problem}")
        raise IntegrationFileError([issue]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IntegrationFileError([FileIssue(source, "", f"unreadable: {exc}")]) from None
    return validate_integration(data, source)


def load_catalog(paths: Iterable[Path]) -> dict[str, frozenset[str]]:
    """Every Integration in ``paths`` (files or directories): name -> operations. Raises
    :class:`IntegrationFileError` listing the problems of every bad file (and names used
    twice)."""
    catalog: dict[str, frozenset[str]] = {}
    seen: dict[str, str] = {}
    issues: list[FileIssue] = []
    for path in document_files(paths):
        try:
            integration = load_integration_file(path)
        except IntegrationFileError as exc:
            issues.extend(exc.issues)
            continue
        name = integration.name or path.stem
        if name in seen:
            issues.append(FileIssue(str(path), "name", f"{name!r} is also defined in {seen[name]}"))
            continue
        seen[name] = str(path)
        catalog[name] = frozenset(integration.operations)
    if issues:
        raise IntegrationFileError(issues)
    return catalog
