"""``{{ expr }}`` templates: text with embedded CEL expressions.

``"Your order {{ vars.order_id }} ships {{ result.eta }}"`` renders each
expression and inserts its text. A template that is exactly one expression
(``"{{ result.items }}"``) keeps the value's type, which is how call_hook
payloads pass numbers, lists and objects. In prompts a part may end with a
say_as hint, ``{{ vars.order_id | digits }}`` (:mod:`.say_as`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from voicetyped_specs.dialog.cel import (
    CelCompileError,
    CelEnv,
    CelProblem,
    Expression,
    default_env,
)
from voicetyped_specs.dialog.say_as import SayAs, parse_hint, say, split_hint

_PART = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


class Template:
    __slots__ = ("_hints", "_parts", "_whole", "language", "source")

    def __init__(self, source: str, language: str = "en", env: CelEnv | None = None) -> None:
        """``env``: what its expressions are checked against (a dialog's; by default the
        activation with unchecked ``vars``); its language is the template's."""
        env = env or default_env(language)
        self.source = source
        self.language = language = env.language
        self._parts: list[str | Expression] = []
        self._hints: dict[int, SayAs] = {}  # part index -> its say_as hint (``{{ x | digits }}``)
        problems: list[CelProblem] = []
        pos = 0
        for match in _PART.finditer(source):
            if match.start() > pos:
                self._parts.append(source[pos : match.start()])
            expr, kind, arg = split_hint(match.group(1).strip())
            if not expr:
                raise ValueError(f"empty {{{{ }}}} in template {source!r}")
            if kind is not None:
                self._hints[len(self._parts)] = parse_hint(kind, arg, language)
            try:
                self._parts.append(Expression(expr, env))
            except CelCompileError as exc:  # every part's problems, not only the first's
                problems += exc.problems
                self._parts.append("")
            pos = match.end()
        if pos < len(source):
            self._parts.append(source[pos:])
        if "{{" in _PART.sub("", source):
            raise ValueError(f"unclosed {{{{ in template {source!r}")
        if problems:
            raise CelCompileError(problems)
        self._whole = len(self._parts) == 1 and isinstance(self._parts[0], Expression)

    @property
    def expressions(self) -> list[Expression]:
        return [p for p in self._parts if isinstance(p, Expression)]

    @property
    def hints(self) -> list[SayAs]:
        """The say_as hints of its parts (only prompts read them: :meth:`render_speech`)."""
        return list(self._hints.values())

    def render(self, activation: Mapping[str, Any]) -> Any:
        """The value (a whole-expression template) or the text."""
        if self._whole:
            expr = self._parts[0]
            assert isinstance(expr, Expression)
            return plain(expr.evaluate(activation))
        return "".join(
            p if isinstance(p, str) else _text(p.evaluate(activation)) for p in self._parts
        )

    def render_text(self, activation: Mapping[str, Any]) -> str:
        value = self.render(activation)
        return value if isinstance(value, str) else _text(value)

    def render_speech(self, activation: Mapping[str, Any]) -> str:
        """The text of a prompt: each part's value read as its hint says (identifiers as
        identifiers without one; :mod:`.say_as`), the fixed text as written."""
        out = []
        for index, part in enumerate(self._parts):
            if isinstance(part, str):
                out.append(part)
                continue
            value = plain(part.evaluate(activation))
            out.append(say(value, self._hints.get(index), self.language, _text(value)))
        return "".join(out)


def plain(value: Any) -> Any:
    """CEL results as JSON-compatible Python values."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(plain(value), ensure_ascii=False)


class JsonTemplate:
    """A JSON value whose strings are templates (call_hook payloads)."""

    def __init__(self, value: Any, language: str = "en", env: CelEnv | None = None) -> None:
        problems: list[CelProblem] = []
        self._value = _compile(value, env or default_env(language), problems)
        if problems:
            raise CelCompileError(problems)

    @property
    def expressions(self) -> list[Expression]:
        return [e for t in self.templates for e in t.expressions]

    @property
    def templates(self) -> list[Template]:
        out: list[Template] = []
        _collect(self._value, out)
        return out

    def render(self, activation: Mapping[str, Any]) -> Any:
        return _render(self._value, activation)


def _compile(value: Any, env: CelEnv, problems: list[CelProblem]) -> Any:
    if isinstance(value, str):
        if "{{" not in value:
            return value
        try:
            return Template(value, env=env)
        except CelCompileError as exc:
            problems += exc.problems
            return value
    if isinstance(value, dict):
        return {k: _compile(v, env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_compile(v, env, problems) for v in value]
    return value


def _collect(value: Any, out: list[Template]) -> None:
    if isinstance(value, Template):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, out)
    elif isinstance(value, list):
        for v in value:
            _collect(v, out)


def _render(value: Any, activation: Mapping[str, Any]) -> Any:
    if isinstance(value, Template):
        return value.render(activation)
    if isinstance(value, dict):
        return {k: _render(v, activation) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, activation) for v in value]
    return value
