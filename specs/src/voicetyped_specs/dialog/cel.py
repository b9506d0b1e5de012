"""CEL expressions in dialogs: compiled once at load, evaluated over a fixed activation.

Conditions, ``set`` values and ``{{ }}`` template parts are all CEL (the
``common-expression-language`` package, the language Kubernetes uses for
validation rules). Nothing in a dialog is ever evaluated as Python.

The activation (names an expression can use):

==================  ==========================================================
``event``           the event type being handled (``"speech"``, ``"dtmf"``, ...)
``state``           the current state's name
``turn``            caller turns so far (speech, dtmf and digits events)
``elapsed_ms``      milliseconds since the call started
``state_elapsed_ms`` milliseconds since the current state was entered
``transcript``      the caller's words (speech, partial; else the last final)
``confidence``      recogniser confidence of ``transcript`` (0..1)
``intent``          best matching intent of ``transcript`` ("" if none)
``intent_score``    its similarity score (0..1)
``digit``           the key of a dtmf event ("" otherwise)
``digits``          the string of a digits event (else the last collected)
``timer``           the timer that fired (timeout events)
``timer_elapsed_ms`` how long that timer ran
``ok``              backend_result: whether the backend call succeeded
``result``          backend_result: the response JSON (else the last one)
``error``           ``{"kind", "code", "message"}`` of a failure (error, backend_result)
``label``           llm_result (classify): the chosen label
``slots``           llm_result (extract): slot name -> value
``vars``            the dialog variables
``caller``          ``{"id": caller id, "headers": {name: value}}``
==================  ==========================================================

Functions: CEL's standard library, the cel-go string/list/math extensions
(``lowerAscii``, ``split``, ``trim``, ``replace``, ...), and the numbers a caller said
(:mod:`.spoken`, in the dialog's language): ``spokenDigits(text)`` (every digit, as a string:
"four eight two one three" -> ``"48213"``) and ``spokenNumbers(text)`` (the numbers, as a list:
"two tickets" -> ``[2]``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import cel
import cel.stdlib

from voicetyped_specs.dialog.spoken import spoken_digits, spoken_numbers

ACTIVATION_NAMES = frozenset(
    {
        "event",
        "state",
        "turn",
        "elapsed_ms",
        "state_elapsed_ms",
        "transcript",
        "confidence",
        "intent",
        "intent_score",
        "digit",
        "digits",
        "timer",
        "timer_elapsed_ms",
        "ok",
        "result",
        "error",
        "label",
        "slots",
        "vars",
        "caller",
    }
)

# The cel-go style extension functions (lowerAscii, split, trim, ...), as a dict
# so each expression gets only those it references.
_context = cel.Context()
cel.stdlib.add_stdlib_to_context(_context)
_EXTENSIONS: dict[str, Callable[..., Any]] = _context.functions


def _spoken_functions(language: str) -> dict[str, Callable[..., Any]]:
    """``spokenDigits(text)`` and ``spokenNumbers(text)`` in the dialog's language (an explicit
    second argument, ``spokenDigits(text, "fr")``, overrides it); see :mod:`.spoken`."""

    def digits(text: Any, lang: Any = language) -> str:
        return spoken_digits(str(text), str(lang))

    def numbers(text: Any, lang: Any = language) -> list[int | float]:
        return spoken_numbers(str(text), str(lang))

    return {"spokenDigits": digits, "spokenNumbers": numbers}


class CelCompileError(ValueError):
    """A CEL expression does not compile or uses names outside the activation."""


class CelEvalError(RuntimeError):
    """A CEL expression failed at run time (missing key, wrong type, division by zero)."""


class Expression:
    """One compiled CEL expression."""

    __slots__ = ("_functions", "_names", "_program", "source", "var_refs")

    def __init__(self, source: str, language: str = "en") -> None:
        self.source = source
        try:
            self._program = cel.compile(source)
        except ValueError as exc:
            raise CelCompileError(_first_line(str(exc), source)) from None
        used = set(self._program.functions())
        variables = set(self._program.variables())
        # `math.greatest(...)` compiles to the variable `math` and the function `greatest`.
        self._functions = {
            name: fn
            for name, fn in (_EXTENSIONS | _spoken_functions(language)).items()
            if name in used
            or (name.partition(".")[0] in variables and name.partition(".")[2] in used)
        }
        namespaces = {name.partition(".")[0] for name in self._functions if "." in name}
        self._names = frozenset(variables & ACTIVATION_NAMES)
        self.var_refs = _vars_referenced(source)
        unknown = _free_variables(variables - namespaces, source) - ACTIVATION_NAMES
        if unknown:
            raise CelCompileError(
                f"unknown name(s) {', '.join(sorted(unknown))} in {source!r}; "
                f"available: {', '.join(sorted(ACTIVATION_NAMES))}"
            )

    def evaluate(self, activation: Mapping[str, Any]) -> Any:
        # Hand CEL only the names this expression uses: converting the whole activation
        # on every evaluation was most of the engine's time.
        used = {name: activation[name] for name in self._names if name in activation}
        try:
            if self._functions:
                return self._program.execute(cel.Context(used, self._functions))
            return self._program.execute(used)
        except Exception as exc:
            raise CelEvalError(f"{self.source!r}: {_describe(exc)}") from None

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def _describe(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0]!r}"
    return f"{type(exc).__name__}: {exc}"


def _first_line(message: str, source: str) -> str:
    # cel's message starts with "Failed to parse expression '<src>': ERROR: ..."; keep
    # the diagnosis and the caret lines, which point at the problem.
    detail = message.split("ERROR: ", 1)[-1]
    return f"CEL syntax error in {source!r}: {detail}"


def _free_variables(names: set[str], source: str) -> set[str]:
    """Referenced names minus comprehension variables (``x`` in ``l.map(x, ...)``)."""
    bound = set(
        re.findall(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)", source)
    )
    return names - bound


def _vars_referenced(source: str) -> frozenset[str]:
    """Dialog variables read as ``vars.name`` or ``vars["name"]`` (for validation)."""
    dotted = re.findall(r"\bvars\s*\.\s*([A-Za-z_]\w*)", source)
    indexed = re.findall(r"\bvars\s*\[\s*[\"']([A-Za-z_]\w*)[\"']\s*\]", source)
    guarded = set(re.findall(r"has\s*\(\s*vars\s*\.\s*([A-Za-z_]\w*)", source))
    return frozenset(set(dotted) | set(indexed)) - guarded


def truthy(value: Any) -> bool:
    """Conditions must produce a bool: anything else is an evaluation error."""
    if isinstance(value, bool):
        return value
    raise CelEvalError(f"condition produced {type(value).__name__} {value!r}, not a bool")
