"""Name the field a document meant: the fields a model accepts at an error's location.

Pydantic reports an unknown field as ``extra_forbidden`` at its location but not what would
have been right there. :func:`fields_at` walks the model's annotations along that location
(model fields, list items, mapping values, tagged-union members) to the model holding it;
:func:`did_you_mean` picks the closest of its names with :mod:`difflib`.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

CUTOFF = 0.6
"""difflib similarity below which a name is not offered (difflib's own default)."""
NEARLY = 0.1
"""Names within this similarity of the best are offered with it."""
MAX_LISTED = 12
"""Up to this many accepted names are listed when none is close to the unknown one."""


def _strip(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _members(tp: Any) -> list[Any]:
    if get_origin(tp) in (Union, types.UnionType):
        return [_strip(t) for t in get_args(tp) if t is not type(None)]
    return [tp]


def _model(tp: Any) -> type[BaseModel] | None:
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _field_type(model: type[BaseModel], key: str) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info.annotation
    return None


def _step(tp: Any, part: int | str) -> Any:
    """The type at ``part`` inside ``tp`` (None: unknown there)."""
    members = _members(_strip(tp))
    if isinstance(part, str):
        for member in members:  # a tagged union's branch: the member's own name
            if _model(member) is not None and member.__name__ == part and len(members) > 1:
                return member
    for member in members:
        origin = get_origin(member)
        if isinstance(part, int) and origin in (list, tuple, Sequence):
            return get_args(member)[0]
        if isinstance(part, str) and origin is dict:
            return get_args(member)[1]
        model = _model(member)
        if isinstance(part, str) and model is not None:
            found = _field_type(model, part)
            if found is not None:
                return found
    return None


def fields_at(root: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The field names (aliases where a field has one) of the model at pydantic ``loc``."""
    tp: Any = root
    for part in loc:
        tp = _step(tp, part)
        if tp is None:
            return []
    for member in _members(_strip(tp)):
        model = _model(member)
        if model is not None:
            return [info.alias or name for name, info in model.model_fields.items()]
    return []


def closest(name: str, known: Iterable[str]) -> list[str]:
    """The known names closest to ``name``: the best match and any nearly as good."""
    scored = sorted(
        ((difflib.SequenceMatcher(None, name, k).ratio(), k) for k in set(known)),
        key=lambda item: (-item[0], item[1]),
    )
    if not scored or scored[0][0] < CUTOFF:
        return []
    best = scored[0][0]
    return [k for ratio, k in scored[:3] if ratio >= max(CUTOFF, best - NEARLY)]


def meaning(names: Sequence[str]) -> str:
    return " (did you mean " + " or ".join(repr(n) for n in names) + "?)"


def did_you_mean(name: str, known: Iterable[str], listing: bool = False) -> str:
    """`` (did you mean 'x'?)`` for the closest names; with ``listing``, else the known names."""
    candidates = sorted(set(known))
    close = closest(name, candidates)
    if close:
        return meaning(close)
    if listing and candidates:
        shown = ", ".join(candidates[:MAX_LISTED]) + (
            ", ..." if len(candidates) > MAX_LISTED else ""
        )
        return f" (fields here: {shown})"
    return ""
