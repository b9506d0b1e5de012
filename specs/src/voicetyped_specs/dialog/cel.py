"""CEL expressions in dialogs: type-checked once at load, evaluated over a fixed activation.

Conditions, ``set`` values and ``{{ }}`` template parts are all CEL (cel-cpp, through the
``cel-expr-python`` package; the language Kubernetes uses for validation rules). The same
library checks an expression against its declarations when the dialog is loaded and evaluates
it on a call, so an expression that passed validation cannot meet a function or an overload
the evaluator lacks. Nothing in a dialog is ever evaluated as Python.

The activation (names an expression can use, and their CEL types):

==================  ================  ===================================================
``event``           string            the event type being handled (``"speech"``, ...)
``state``           string            the current state's name
``turn``            int               caller turns so far (speech, dtmf and digits events)
``elapsed_ms``      int               milliseconds since the call started
``state_elapsed_ms`` int              milliseconds since the current state was entered
``transcript``      string            the caller's words (speech, partial; else the last)
``confidence``      double            recogniser confidence of ``transcript`` (0..1)
``intent``          string            best matching intent of ``transcript`` ("" if none)
``intent_score``    double            its similarity score (0..1)
``digit``           string            the key of a dtmf event ("" otherwise)
``digits``          string            the string of a digits event (else the last)
``timer``           string            the timer that fired (timeout events)
``timer_elapsed_ms`` int              how long that timer ran
``ok``              bool              backend_result: whether the backend call succeeded
``result``          dyn               backend_result: the response JSON (else the last)
``error``           map(string, string)  ``{"kind", "code", "message"}`` of a failure
``sip_status``      int               transfer_failed: the SIP status that refused it (486...)
``label``           string            llm_result (classify): the chosen label
``slots``           map(string, dyn)  llm_result (extract): slot name -> value
``vars``            (declared)        the dialog variables: ``vars.NAME``, typed by ``vars:``
``caller``          map(string, dyn)  ``{"id": caller id, "headers": {name: value}}``
==================  ================  ===================================================

Every name is in every activation (outside its event: "", 0, ``{}`` or the last value).
A dialog variable is read as ``vars.NAME`` and must be declared under ``vars:``; its type is
its initial value's (:class:`VarType`). Outside a dialog (a bare :class:`Expression`) ``vars``
is an unchecked ``map(string, dyn)``.

Functions: CEL's standard library, the cel-go strings (``lowerAscii``, ``split``, ``trim``,
``replace``, ``format``, ...), math (``math.greatest``, ``math.round``, ...) and encoders
(``base64.encode``) extensions and ``cel.bind``, and the numbers a caller said
(:mod:`.spoken`, in the dialog's language): ``spokenDigits(text)`` (every digit, as a string:
"four eight two one three" -> ``"48213"``) and ``spokenNumbers(text)`` (the numbers, as a list:
"two tickets" -> ``[2]``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cel_expr_python.cel as cel
import cel_expr_python.ext.ext_bindings as ext_bindings
import cel_expr_python.ext.ext_encoders as ext_encoders
import cel_expr_python.ext.ext_math as ext_math
import cel_expr_python.ext.ext_strings as ext_strings

from voicetyped_specs.dialog.spoken import spoken_digits, spoken_numbers

_T = cel.Type
_STRING_MAP = _T.Map(_T.STRING, _T.STRING)
_DYN_MAP = _T.Map(_T.STRING, _T.DYN)

ACTIVATION_TYPES: dict[str, cel.Type] = {
    "event": _T.STRING,
    "state": _T.STRING,
    "turn": _T.INT,
    "elapsed_ms": _T.INT,
    "state_elapsed_ms": _T.INT,
    "transcript": _T.STRING,
    "confidence": _T.DOUBLE,
    "intent": _T.STRING,
    "intent_score": _T.DOUBLE,
    "digit": _T.STRING,
    "digits": _T.STRING,
    "timer": _T.STRING,
    "timer_elapsed_ms": _T.INT,
    "ok": _T.BOOL,
    "result": _T.DYN,
    "error": _STRING_MAP,
    "sip_status": _T.INT,
    "label": _T.STRING,
    "slots": _DYN_MAP,
    "caller": _DYN_MAP,
}
"""The activation's names (``vars`` apart) with their CEL types."""

ACTIVATION_NAMES = frozenset({*ACTIVATION_TYPES, "vars"})

# Numbers the engine may hand over as Python ints (a confidence of 1): CEL keeps int and double
# apart, so they are made doubles before evaluation.
_DOUBLES = frozenset(name for name, t in ACTIVATION_TYPES.items() if t == _T.DOUBLE)
_IDENT = re.compile(r"[A-Za-z_]\w*")
_VAR_READ = re.compile(r"\bvars\s*\.\s*([A-Za-z_]\w*)")
_HAS_VAR = re.compile(r"\bhas\s*\(\s*vars\s*\.\s*([A-Za-z_]\w*)\s*\)")
_PROBLEM = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*?)(?:\n \|[^\n]*){0,2}(?=\nERROR: |$)", re.S)
_UNDECLARED = re.compile(r"^undeclared reference to '([^']+)'")


class CelCompileError(ValueError):
    """CEL expressions do not parse or do not type-check; ``problems`` lists each."""

    def __init__(self, problems: list[CelProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class CelEvalError(RuntimeError):
    """A CEL expression failed at run time (missing key, wrong type, division by zero)."""


@dataclass(frozen=True)
class CelProblem:
    """One thing the checker found wrong, where it is in its expression."""

    source: str
    message: str
    line: int = 1
    column: int = 1
    undeclared: str | None = None
    """The name, for an undeclared reference (``vars.retries``, ``trnscript``, ``sort``)."""

    @property
    def var(self) -> str | None:
        """The dialog variable read without being declared (``retries`` of ``vars.retries``)."""
        if self.undeclared and self.undeclared.startswith("vars."):
            return self.undeclared.removeprefix("vars.")
        return None

    def __str__(self) -> str:
        where = f"column {self.column}"
        if "\n" in self.source.strip():
            where = f"line {self.line}, {where}"
        message = self.message
        name = self.undeclared
        if name == "vars":
            message = "vars is not a value: read a dialog variable as vars.NAME"
        elif self.var:
            message = f"{name} is not declared under vars:"
        elif name and re.search(rf"(?<!\w){re.escape(name)}\s*\(", self.source):
            message = f"unknown function {name!r}"
        elif name:
            close = difflib.get_close_matches(name, sorted(ACTIVATION_NAMES), n=1, cutoff=0.8)
            message = f"unknown name {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        return f"{message} at {where} of {self.source!r}"


# ---- dialog variables ----------------------------------------------------------------


@dataclass(frozen=True)
class VarType:
    """A dialog variable's type: its initial value's (``0`` int, ``0.0`` double, ``""`` string,
    ``false`` bool, a list, an object; ``null`` any). A list whose items share one type is a
    list of it (``["vip"]``: ``list(string)``), any other a ``list(dyn)``; an object is a
    ``map(string, dyn)``."""

    kind: str  # dyn | bool | int | double | string | list | map
    item: VarType | None = None  # list items

    @classmethod
    def of(cls, value: Any) -> VarType:
        match value:
            case None:
                return cls("dyn")
            case bool():
                return cls("bool")
            case int():
                return cls("int")
            case float():
                return cls("double")
            case str():
                return cls("string")
            case list():
                items = {cls.of(v) for v in value}
                return cls("list", items.pop() if len(items) == 1 else cls("dyn"))
            case dict():
                return cls("map")
        raise TypeError(f"not a JSON value: {value!r}")

    @property
    def cel(self) -> cel.Type:
        if self.kind == "list":
            return _T.List(self.item.cel if self.item else _T.DYN)
        if self.kind == "map":
            return _DYN_MAP
        return _SCALARS[self.kind]

    def __str__(self) -> str:
        if self.kind == "list":
            return f"list({self.item or 'dyn'})"
        if self.kind == "map":
            return "map(string, dyn)"
        return self.kind

    def admit(self, value: Any) -> Any:
        """``value`` as this type holds it (an int for a double becomes a float); TypeError if
        it is not one (a value from ``result`` or ``slots`` is only known at run time)."""
        match self.kind:
            case "dyn":
                return value
            case "bool" if isinstance(value, bool):
                return value
            case "int" if isinstance(value, int) and not isinstance(value, bool):
                return value
            case "double" if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            case "string" if isinstance(value, str):
                return value
            case "map" if isinstance(value, dict):
                return value
            case "list" if isinstance(value, list):
                item = self.item or VarType("dyn")
                return [item.admit(v) for v in value]
        raise TypeError(f"{_json_type(value)} {value!r}, not {self}")


_SCALARS = {
    "dyn": _T.DYN,
    "bool": _T.BOOL,
    "int": _T.INT,
    "double": _T.DOUBLE,
    "string": _T.STRING,
}


def type_name(t: cel.Type) -> str:
    """A CEL type as dialogs and CEL's own messages write it: ``list(string)``, ``double``."""
    return str(t.name()).lower().replace("<", "(").replace(">", ")")


def _json_type(value: Any) -> str:
    return str(VarType.of(value)) if value is not None else "null"


# ---- the environment ------------------------------------------------------------------


class CelEnv:
    """What expressions are checked against and evaluated with: the activation names and their
    types, the dialog variables (``variables``: name -> initial value; None outside a dialog,
    where ``vars`` is an unchecked map) and the functions (spokenDigits/spokenNumbers in
    ``language``)."""

    def __init__(self, variables: Mapping[str, Any] | None = None, language: str = "en") -> None:
        self.language = language
        self.var_types: dict[str, VarType] | None = (
            None if variables is None else {n: VarType.of(v) for n, v in variables.items()}
        )
        declared = dict(ACTIVATION_TYPES)
        if self.var_types is None:
            declared["vars"] = _DYN_MAP
        else:
            declared |= {f"vars.{n}": t.cel for n, t in self.var_types.items()}
        self._env = cel.NewEnv(
            variables=declared,
            extensions=[
                ext_strings.ExtStrings(),
                ext_math.ExtMath(),
                ext_encoders.ExtEncoders(),
                ext_bindings.ExtBindings(),
            ],
            functions=_spoken_functions(language),
        )

    def compile(self, source: str) -> cel.Expression:
        try:
            return self._env.compile(source)
        except Exception as exc:  # cel-cpp raises a bare Exception with its status text
            message = str(exc)
        problems = []
        if self.var_types is not None:
            # A declared variable always has a value, and cel-cpp types has(vars.x) as x itself:
            # say so, and check the rest with `true` in its place (the same columns).
            checked = source
            for match in _HAS_VAR.finditer(source):
                if (name := match.group(1)) in self.var_types:
                    problems.append(
                        CelProblem(
                            source,
                            f"has(vars.{name}) is always true: vars.{name} is declared under vars: "
                            "and always has a value (test its value instead)",
                            *_position(source, match.start()),
                        )
                    )
                    start, end = match.span()
                    checked = checked[:start] + "true".ljust(end - start) + checked[end:]
            if problems:
                try:
                    self._env.compile(checked)
                    message = ""
                except Exception as exc:
                    message = str(exc)
        if message:
            problems += _problems(source, message)
        raise CelCompileError(problems)

    def fits(self, name: str, expr: Expression) -> bool:
        """Whether ``expr``'s value may be assigned to the declared variable ``name`` (the
        checker's own rule: the two types unify; dyn on either side does)."""
        assert self.var_types is not None
        if self.var_types[name].kind == "dyn" or expr.type == _T.DYN:
            return True
        try:
            self._env.compile(f"vars.{name} == ({expr.source}\n)")
        except Exception:
            return False
        return True


_DEFAULT_ENVS: dict[str, CelEnv] = {}


def default_env(language: str) -> CelEnv:
    """The environment of expressions outside a dialog (``vars`` unchecked), one a language."""
    env = _DEFAULT_ENVS.get(language)
    if env is None:
        env = _DEFAULT_ENVS[language] = CelEnv(None, language)
    return env


def _spoken_functions(language: str) -> list[cel.FunctionDecl]:
    """``spokenDigits(text)`` and ``spokenNumbers(text)`` in the dialog's language (an explicit
    second argument, ``spokenDigits(text, "fr")``, overrides it); see :mod:`.spoken`."""
    s, numbers = _T.STRING, _T.List(_T.DYN)
    return [
        cel.FunctionDecl(
            "spokenDigits",
            [
                cel.Overload(
                    "spokenDigits_string", s, [s], impl=lambda t: spoken_digits(t, language)
                ),
                cel.Overload("spokenDigits_string_string", s, [s, s], impl=spoken_digits),
            ],
        ),
        cel.FunctionDecl(
            "spokenNumbers",
            [
                cel.Overload(
                    "spokenNumbers_string",
                    numbers,
                    [s],
                    impl=lambda t: spoken_numbers(t, language),
                ),
                cel.Overload("spokenNumbers_string_string", numbers, [s, s], impl=spoken_numbers),
            ],
        ),
    ]


def _problems(source: str, message: str) -> list[CelProblem]:
    found = []
    for match in _PROBLEM.finditer(message.removesuffix(" [INVALID_ARGUMENT]")):
        text = match.group(3).removesuffix(" (in container '')")
        undeclared = _UNDECLARED.match(text)
        found.append(
            CelProblem(
                source,
                text,
                int(match.group(1)),
                int(match.group(2)),
                undeclared.group(1) if undeclared else None,
            )
        )
    syntax = [p for p in found if p.message.startswith("Syntax error")]
    if syntax:  # the parser's later complaints follow from its first
        return syntax[:1]
    return found or [CelProblem(source, message)]


def _position(source: str, offset: int) -> tuple[int, int]:
    before = source[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


# ---- expressions ----------------------------------------------------------------------


class Expression:
    """One type-checked CEL expression."""

    __slots__ = ("_doubles", "_names", "_program", "_vars", "env", "source", "type")

    def __init__(self, source: str, env: CelEnv | str = "en") -> None:
        self.source = source
        self.env = env if isinstance(env, CelEnv) else default_env(env)
        self._program = self.env.compile(source)
        self.type: cel.Type = self._program.return_type()
        # Hand cel only the names this expression may use (a superset: every identifier):
        # converting the whole activation on every evaluation would be most of its cost.
        idents = set(_IDENT.findall(source))
        self._names = tuple(sorted(idents & set(ACTIVATION_TYPES)))
        self._doubles = frozenset(self._names) & _DOUBLES
        var_types = self.env.var_types
        if var_types is None:
            self._vars: tuple[tuple[str, VarType], ...] | None = None
            if "vars" in idents:
                self._names += ("vars",)
        else:
            self._vars = tuple(
                (name, var_types[name])
                for name in sorted(set(_VAR_READ.findall(source)))
                if name in var_types
            )

    def evaluate(self, activation: Mapping[str, Any]) -> Any:
        data = {name: activation[name] for name in self._names if name in activation}
        for name in self._doubles:
            if type(data.get(name)) is int:
                data[name] = float(data[name])
        if self._vars:
            values = activation.get("vars") or {}
            for name, var_type in self._vars:
                if name in values:
                    given = values[name]
                    if var_type.kind == "double" and type(given) is int:
                        given = float(given)
                    data[f"vars.{name}"] = given
        try:
            value = self._program.eval(data=data)
        except Exception as exc:  # a Python function raised, or a value cel cannot convert
            raise CelEvalError(f"{self.source!r}: {type(exc).__name__}: {exc}") from None
        if value.type() == _T.ERROR:
            raise CelEvalError(f"{self.source!r}: {_status_text(str(value.plain_value()))}")
        return value.plain_value()

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def _status_text(message: str) -> str:
    # cel-cpp's errors are statuses: "NOT_FOUND: Key not found in map : \"x\"".
    message = re.sub(r"^[A-Z_]+: ", "", message)
    return re.sub(r"^Key not found in map : ", "no such key: ", message)


def truthy(value: Any) -> bool:
    """Conditions must produce a bool: anything else is an evaluation error."""
    if isinstance(value, bool):
        return value
    raise CelEvalError(f"condition produced {type(value).__name__} {value!r}, not a bool")
