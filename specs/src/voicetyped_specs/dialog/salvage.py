"""The part of a misshapen dialog that can still be checked.

Shape errors (unknown fields, wrong types) stop pydantic from building the model, and with
it every check of expressions, templates and targets. :func:`salvage` cuts each error's
smallest enclosing piece out of a copy of the document (an optional field is dropped, a bad
action becomes a no-op, a bad transition one that goes nowhere) until the rest validates, so
those checks can run on everything the errors did not touch in the same run.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import ValidationError

from voicetyped_specs.dialog import model as m

ROUNDS = 8
"""A cut may uncover an error one level up (a dropped required field): a few rounds."""
NO_OP_ACTION: dict[str, Any] = {"set": {}}
INERT_TRANSITION: dict[str, Any] = {"event": "hangup"}
ROOT_PLACEHOLDERS: dict[str, Any] = {"name": "invalid", "initial": ""}

Path = tuple[int | str, ...]


ACTION_TAGS = frozenset(model.__name__ for model in m.ACTION_KEYS.values())


def document_path(loc: tuple[int | str, ...]) -> Path:
    """A pydantic location without the tagged action union's branch names."""
    return tuple(p for p in loc if not (isinstance(p, str) and p in ACTION_TAGS))


def salvage(document: dict[str, Any], exc: ValidationError) -> tuple[m.Dialog, set[Path]] | None:
    """The validated remainder of ``document`` and the paths cut; None if too little is left."""
    doc = copy.deepcopy(document)
    cut: set[Path] = set()
    for _ in range(ROUNDS):
        for err in exc.errors():
            path = document_path(err["loc"])
            if any(path[: len(c)] == c for c in cut):
                continue  # inside a piece already cut
            if err["type"] == "missing" and len(path) == 1 and path[0] in ROOT_PLACEHOLDERS:
                doc[str(path[0])] = ROOT_PLACEHOLDERS[str(path[0])]
                cut.add(path)
                continue
            where = _cut(doc, path[:-1] if err["type"] == "missing" else path)
            if where is None:
                return None
            cut.add(where)
        try:
            return m.Dialog.model_validate(doc), cut
        except ValidationError as again:
            exc = again
    return None


def _get(doc: Any, path: Path) -> Any:
    for part in path:
        if isinstance(doc, dict):
            doc = doc.get(part)
        elif isinstance(doc, list) and isinstance(part, int) and part < len(doc):
            doc = doc[part]
        else:
            return None
    return doc


def _cut(doc: dict[str, Any], path: Path) -> Path | None:
    """Remove or neutralise the piece at ``path``, or the smallest one holding it."""
    while path:
        parent, key = _get(doc, path[:-1]), path[-1]
        holder = path[-2] if len(path) > 1 else None
        if isinstance(parent, list) and isinstance(key, int) and 0 <= key < len(parent):
            if holder in ("on_enter", "actions"):
                parent[key] = dict(NO_OP_ACTION)
                return path
            if holder in ("transitions", "global_transitions"):
                parent[key] = dict(INERT_TRANSITION)
                return path
        elif isinstance(parent, dict) and key in parent:
            if len(path) > 1 or key not in ("states", *ROOT_PLACEHOLDERS):
                del parent[key]
                return path
            if key == "states" or parent[key] == ROOT_PLACEHOLDERS[str(key)]:
                return None
            parent[key] = ROOT_PLACEHOLDERS[str(key)]
            return path
        path = path[:-1]
    return None
