"""Load, validate and compile a dialog document.

:func:`load_dialog` turns YAML (or an already-parsed mapping) into a
:class:`CompiledDialog`: every CEL expression and template compiled once,
every cross-reference checked. Problems are collected, not stopped at the
first, and each names where it is (``states.greet.transitions[1].target``).
The operator uses this same function to validate Dialog resources.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from voicetyped.documents import (
    DocumentError,
    DocumentKindError,
    parse_document,
    read_limited,
    unwrap,
)

from voicetyped_specs.dialog import model as m
from voicetyped_specs.dialog.cel import CelCompileError, CelEnv, Expression, VarType, type_name
from voicetyped_specs.dialog.salvage import document_path, salvage
from voicetyped_specs.dialog.template import JsonTemplate, Template
from voicetyped_specs.fields import closest, did_you_mean, fields_at, meaning

BUILTIN_TIMERS = {
    "no_input": "settings.no_input_timeout_ms (or a state's no_input_timeout_ms)",
    "max_duration": "settings.max_call_duration_ms",
    "collect_digits": "collect_digits.timeout_ms and inter_digit_timeout_ms",
}
"""The timers the runtime starts itself, and where their length is set."""
CALL_TARGET = re.compile(r"^(sips?|tel):\S+$")
"""A transfer target: a SIP, SIPS or tel URI."""


@dataclass(frozen=True)
class Issue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


WHOLE_DIALOG_CHECKS = (
    "reachability, variables, timers and intents are checked once the shape problems are fixed"
)


class DialogError(ValueError):
    """The dialog is invalid; ``issues`` lists every problem found.

    ``complete`` is False when shape problems kept the whole-dialog checks (reachability,
    variables, timers, intents) from running: ``note`` says so.
    """

    def __init__(self, issues: list[Issue], name: str = "", complete: bool = True) -> None:
        self.issues = issues
        self.name = name
        self.complete = complete
        self.note = "" if complete else WHOLE_DIALOG_CHECKS
        head = f"dialog {name!r} is invalid" if name else "dialog is invalid"
        lines = [f"  - {i}" for i in issues] + ([f"  ({self.note})"] if self.note else [])
        super().__init__(head + ":\n" + "\n".join(lines))


# ---- compiled forms ---------------------------------------------------------


@dataclass(frozen=True)
class PlayTts:
    text: Template
    voice: str | None
    barge_in: m.BargeIn


@dataclass(frozen=True)
class Transfer:
    target: Template


@dataclass(frozen=True)
class Hangup:
    reason_code: int


@dataclass(frozen=True)
class CallHook:
    service: str
    method: str
    payload: JsonTemplate
    timeout_ms: int


@dataclass(frozen=True)
class Assignment:
    var: str
    value: Expression
    type: VarType
    """The variable's declared type: :meth:`VarType.admit` its values (``result`` and ``slots``
    are dyn, known only at run time)."""


@dataclass(frozen=True)
class SetVars:
    assignments: tuple[Assignment, ...]


@dataclass(frozen=True)
class CollectDigits:
    spec: m.CollectDigitsSpec


@dataclass(frozen=True)
class StartTimer:
    name: str
    ms: int


@dataclass(frozen=True)
class CancelTimer:
    name: str


@dataclass(frozen=True)
class Llm:
    spec: m.LlmSpec
    prompt: Template
    input: Template
    timeout_ms: int


CompiledAction = (
    PlayTts
    | Transfer
    | Hangup
    | CallHook
    | SetVars
    | CollectDigits
    | StartTimer
    | CancelTimer
    | Llm
)


@dataclass(frozen=True)
class CompiledTransition:
    path: str
    event: m.EventType
    condition: Expression | None
    outcome: m.Outcome
    timer: str | None
    actions: tuple[CompiledAction, ...]
    target: str | None


@dataclass(frozen=True)
class CompiledState:
    name: str
    on_enter: tuple[CompiledAction, ...]
    transitions: tuple[CompiledTransition, ...]
    terminal: bool
    no_input_timeout_ms: int
    endpointing: m.Endpointing


@dataclass(frozen=True)
class CompiledDialog:
    spec: m.Dialog
    states: dict[str, CompiledState]
    global_transitions: tuple[CompiledTransition, ...]
    content_hash: str
    document: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def initial(self) -> str:
        return self.spec.initial


# ---- loading ----------------------------------------------------------------


def parse_yaml(text: str | bytes, source: str = "<dialog>") -> dict[str, Any]:
    """The dialog in YAML ``text``, read within the document limits of voicetyped.documents."""
    try:
        data = parse_document(text, source)
    except DocumentError as exc:
        raise DialogError([Issue("", str(exc))]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DialogError([Issue("", f"{source}: YAML error{where}: {problem}")]) from None
    try:
        data = unwrap(data, "Dialog")
    except DocumentKindError as exc:
        raise DialogError([Issue("", f"{source}: {exc}")]) from None
    if not isinstance(data, dict):
        raise DialogError([Issue("", f"{source}: a dialog is a YAML mapping")])
    return data


def load_dialog_file(path: Path) -> CompiledDialog:
    return load_dialog(parse_yaml(read_limited(path), str(path)))


def load_dialog(document: dict[str, Any]) -> CompiledDialog:
    """Validate and compile a dialog document; raises DialogError listing every problem."""
    name = str(document.get("name", ""))
    try:
        spec = m.Dialog.model_validate(document)
    except ValidationError as exc:
        raise DialogError(
            _shape_issues(exc) + _salvaged_issues(document, exc), name, False
        ) from None
    return _Compiler(spec, document).compile()


def _salvaged_issues(document: dict[str, Any], exc: ValidationError) -> list[Issue]:
    """The expression, template and target problems of what the shape errors left intact."""
    rest = salvage(document, exc)
    if rest is None:
        return []
    spec, cut = rest
    states = document.get("states")
    compiler = _Compiler(spec, document, set(states) if isinstance(states, dict) else None)
    cut_paths = [_loc(c) for c in cut]
    return [
        i
        for i in compiler.local_issues()
        if not any(i.path == c or i.path.startswith((f"{c}.", f"{c}[")) for c in cut_paths)
    ]


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in document_path(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


ACTION_LIST = ", ".join(m.ACTION_KEYS)


def _shape_issues(exc: ValidationError) -> list[Issue]:
    """One issue per pydantic error; unknown fields and values with the closest known names.

    A misspelt required field is also reported missing; when the misspelling's closest name
    is that missing field, or it is the only unknown and that the only missing field of its
    mapping (``seconds`` for ``ms``), only the misspelling is reported: it is one mistake.
    """
    errors = exc.errors()
    by_parent: dict[str, dict[str, list[str]]] = {}
    for e in errors:
        if e["type"] in ("missing", "extra_forbidden"):
            kinds = by_parent.setdefault(_loc(e["loc"][:-1]), {})
            kinds.setdefault(e["type"], []).append(str(e["loc"][-1]))
    meant: set[str] = set()
    issues = []
    for err in errors:
        path = _loc(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parent, name = err["loc"][:-1], str(err["loc"][-1])
            known = fields_at(m.Dialog, parent)
            close = closest(name, known)
            here = by_parent[_loc(parent)]
            gone = here.get("missing", [])
            wanted = [k for k in close if k in gone]
            if not close and len(gone) == 1 and len(here["extra_forbidden"]) == 1:
                wanted = gone
            meant.update(_loc((*parent, k)) for k in wanted)
            msg = "unknown field" + (
                meaning(wanted) if wanted else did_you_mean(name, known, listing=True)
            )
        elif err["type"] == "missing":
            msg = "required field missing"
        elif err["type"] in ("enum", "literal_error") and isinstance(err["input"], str):
            msg += did_you_mean(err["input"], re.findall(r"'([^']*)'", err["ctx"]["expected"]))
        elif err["type"] == m.NOT_AN_ACTION:
            value = err["input"]
            if isinstance(value, dict) and len(value) == 1:
                key = str(next(iter(value)))
                msg = f"unknown action {key!r}{did_you_mean(key, m.ACTION_KEYS)}; expected one of "
                msg += ACTION_LIST
            else:
                msg = f"an action is a mapping with exactly one key, one of {ACTION_LIST}"
        issues.append(Issue(path, msg))
    return [i for i in issues if not (i.message == "required field missing" and i.path in meant)]


class _Compiler:
    def __init__(
        self, spec: m.Dialog, document: dict[str, Any], state_names: set[str] | None = None
    ) -> None:
        self.spec = spec
        self.document = document
        self.state_names = set(spec.states) if state_names is None else state_names
        self.issues: list[Issue] = []
        self.env = CelEnv(spec.vars, spec.settings.language)
        self.undeclared_reads: list[tuple[str, str]] = []  # (path, var)
        self.undeclared_sets: dict[str, list[str]] = {}  # var -> the paths setting it
        self.timers_started: set[str] = set(BUILTIN_TIMERS)
        self.timers_used: list[tuple[str, str]] = []
        self.intents_used: list[tuple[str, str]] = []
        self.uses_llm: list[str] = []

    def _pieces(self) -> tuple[dict[str, CompiledState], tuple[CompiledTransition, ...]]:
        states = {
            name: self._state(name, state, f"states.{name}")
            for name, state in self.spec.states.items()
        }
        globals_ = tuple(
            self._transition(t, f"global_transitions[{i}]")
            for i, t in enumerate(self.spec.global_transitions)
        )
        return states, globals_

    def local_issues(self) -> list[Issue]:
        """The problems of each expression, template, action and target on its own."""
        self._pieces()
        return self.issues

    def compile(self) -> CompiledDialog:
        spec = self.spec
        states, globals_ = self._pieces()
        self._check_graph(states, globals_)
        self._check_references()
        if self.issues:
            raise DialogError(self.issues, spec.name)
        canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return CompiledDialog(
            spec=spec,
            states=states,
            global_transitions=globals_,
            content_hash=hashlib.sha256(canonical.encode()).hexdigest()[:16],
            document=spec.model_dump(mode="json", exclude_defaults=False),
        )

    # -- pieces --

    def _expr(self, source: str, path: str, condition: bool = False) -> Expression | None:
        try:
            expr = Expression(source, self.env)
        except CelCompileError as exc:
            self._cel_issues(exc, path)
            return None
        if condition and expr.type.name() not in ("BOOL", "DYN"):
            self.issues.append(
                Issue(path, f"a condition is a bool; {source!r} is {type_name(expr.type)}")
            )
        self._note_refs(expr, path)
        return expr

    def _cel_issues(self, exc: CelCompileError, path: str) -> None:
        for problem in exc.problems:
            if problem.var is not None:  # reported with where it is set: _check_references
                self.undeclared_reads.append((path, problem.var))
            else:
                self.issues.append(Issue(path, str(problem)))

    def _template(self, source: str, path: str, spoken: bool = False) -> Template:
        try:
            tpl = Template(source, env=self.env)
        except CelCompileError as exc:
            self._cel_issues(exc, path)
            return Template("")
        except ValueError as exc:
            self.issues.append(Issue(path, str(exc)))
            return Template("")
        if tpl.hints and not spoken:
            self.issues.append(
                Issue(path, f"say_as hints ('| {tpl.hints[0]}') only apply to play_tts text")
            )
        for expr in tpl.expressions:
            self._note_refs(expr, path)
        return tpl

    def _note_refs(self, expr: Expression, path: str) -> None:
        for intent in re.findall(r"\bintent\s*==\s*[\"']([^\"']+)[\"']", expr.source):
            self.intents_used.append((path, intent))
        for intent in re.findall(r"[\"']([^\"']+)[\"']\s*==\s*intent\b", expr.source):
            self.intents_used.append((path, intent))

    def _assignment(self, var: str, source: str, path: str) -> Assignment | None:
        expr = self._expr(source, path)
        declared = self.env.var_types or {}
        if var not in declared:
            self.undeclared_sets.setdefault(var, []).append(path)
            return None
        if expr is None:
            return None
        if not self.env.fits(var, expr):
            got = type_name(expr.type)
            hint = ""
            if {str(declared[var]), got} == {"int", "double"}:
                hint = (
                    "; CEL does not convert between int and double: declare a double with a "
                    "decimal point (0.0), or convert with int(...) or double(...)"
                )
            self.issues.append(
                Issue(
                    path,
                    f"{source!r} is {got}, but vars.{var} is {declared[var]} (declared "
                    f"{json.dumps(self.spec.vars[var])} under vars:){hint}",
                )
            )
            return None
        return Assignment(var, expr, declared[var])

    def _state(self, name: str, state: m.State, path: str) -> CompiledState:
        settings = self.spec.settings
        return CompiledState(
            name=name,
            on_enter=self._actions(state.on_enter, f"{path}.on_enter"),
            transitions=tuple(
                self._transition(t, f"{path}.transitions[{i}]")
                for i, t in enumerate(state.transitions)
            ),
            terminal=state.terminal,
            no_input_timeout_ms=(
                settings.no_input_timeout_ms
                if state.no_input_timeout_ms is None
                else state.no_input_timeout_ms
            ),
            endpointing=state.endpointing or settings.endpointing,
        )

    def _transition(self, t: m.Transition, path: str) -> CompiledTransition:
        condition = (
            self._expr(t.condition, f"{path}.condition", condition=True) if t.condition else None
        )
        if t.outcome != m.Outcome.SUCCESS and t.event != m.EventType.BACKEND_RESULT:
            self.issues.append(Issue(f"{path}.outcome", "only backend_result transitions have one"))
        if t.timer is not None:
            if t.event != m.EventType.TIMEOUT:
                self.issues.append(Issue(f"{path}.timer", "only timeout transitions have one"))
            self.timers_used.append((f"{path}.timer", t.timer))
        if t.target is not None and t.target not in self.state_names:
            self.issues.append(
                Issue(
                    f"{path}.target",
                    f"unknown state {t.target!r}{_suggest(t.target, self.state_names)}",
                )
            )
        return CompiledTransition(
            path=path,
            event=t.event,
            condition=condition,
            outcome=t.outcome,
            timer=t.timer,
            actions=self._actions(t.actions, f"{path}.actions"),
            target=t.target,
        )

    def _actions(self, actions: list[m.Action], path: str) -> tuple[CompiledAction, ...]:
        return tuple(
            a for i, spec in enumerate(actions) if (a := self._action(spec, f"{path}[{i}]"))
        )

    def _action(self, action: m.Action, path: str) -> CompiledAction | None:
        settings = self.spec.settings
        match action:
            case m.PlayTts(play_tts=s):
                text = self._template(s.text, f"{path}.play_tts.text", spoken=True)
                return PlayTts(text, s.voice, s.barge_in)
            case m.Transfer(transfer=s):
                tpl = self._template(s.target, f"{path}.transfer.target")
                if not tpl.expressions and not CALL_TARGET.match(s.target):
                    self.issues.append(
                        Issue(
                            f"{path}.transfer.target",
                            f"{s.target!r} is not a sip:, sips: or tel: URI",
                        )
                    )
                return Transfer(tpl)
            case m.Hangup(hangup=s):
                return Hangup(s.reason_code)
            case m.CallHook(call_hook=s):
                payload = self._json_template(s.payload, f"{path}.call_hook.payload")
                return CallHook(
                    s.service, s.method, payload, s.timeout_ms or settings.backend_timeout_ms
                )
            case m.SetVars(set=assignments):
                compiled = (
                    self._assignment(var, source, f"{path}.set.{var}")
                    for var, source in assignments.items()
                )
                return SetVars(tuple(a for a in compiled if a is not None))
            case m.CollectDigits(collect_digits=s):
                return CollectDigits(s)
            case m.StartTimer(start_timer=s):
                self.timers_started.add(s.name)
                if s.name in BUILTIN_TIMERS:
                    self.issues.append(
                        Issue(
                            f"{path}.start_timer.name",
                            f"{s.name!r} is a built-in timer: the runtime starts it; set its "
                            f"length with {BUILTIN_TIMERS[s.name]}",
                        )
                    )
                return StartTimer(s.name, s.ms)
            case m.CancelTimer(cancel_timer=s):
                self.timers_used.append((f"{path}.cancel_timer.name", s.name))
                return CancelTimer(s.name)
            case m.Llm(llm=s):
                self.uses_llm.append(path)
                timeout = s.timeout_ms or (settings.llm.timeout_ms if settings.llm else 3000)
                return Llm(
                    s,
                    self._template(s.prompt, f"{path}.llm.prompt"),
                    self._template(s.input, f"{path}.llm.input"),
                    timeout,
                )
        raise AssertionError(f"unhandled action {action!r}")  # pragma: no cover

    def _json_template(self, value: Any, path: str) -> JsonTemplate:
        try:
            tpl = JsonTemplate(value, env=self.env)
        except CelCompileError as exc:
            self._cel_issues(exc, path)
            return JsonTemplate({})
        except ValueError as exc:
            self.issues.append(Issue(path, str(exc)))
            return JsonTemplate({})
        if hints := [h for t in tpl.templates for h in t.hints]:
            self.issues.append(
                Issue(path, f"say_as hints ('| {hints[0]}') only apply to play_tts text")
            )
        for expr in tpl.expressions:
            self._note_refs(expr, path)
        return tpl

    # -- whole-dialog checks --

    def _check_graph(
        self, states: dict[str, CompiledState], globals_: tuple[CompiledTransition, ...]
    ) -> None:
        spec = self.spec
        if spec.initial not in spec.states:
            self.issues.append(
                Issue(
                    "initial",
                    f"unknown state {spec.initial!r}{_suggest(spec.initial, spec.states)}",
                )
            )
            return
        global_targets = {t.target for t in globals_ if t.target}
        reachable = {spec.initial}
        frontier = [spec.initial, *sorted(global_targets & set(states))]
        reachable.update(frontier)
        while frontier:
            state = states[frontier.pop()]
            for t in state.transitions:
                if t.target and t.target in states and t.target not in reachable:
                    reachable.add(t.target)
                    frontier.append(t.target)
        for name in spec.states:
            if name not in reachable:
                self.issues.append(
                    Issue(f"states.{name}", f"unreachable from the initial state {spec.initial!r}")
                )
        for name, state in states.items():
            if not state.terminal and not _way_out(name, state, globals_):
                self.issues.append(Issue(f"states.{name}", NO_WAY_OUT))

    def _check_references(self) -> None:
        spec = self.spec
        for path, var in self.undeclared_reads:
            if var in self.undeclared_sets:
                where = self.undeclared_sets[var][0]
                message = (
                    f"vars.{var} is read but never declared under vars: (it is set at {where}); "
                    "declare it with an initial value"
                )
            else:
                close = closest(var, spec.vars)
                hint = f" (did you mean vars.{close[0]}?)" if close else ""
                message = (
                    f"vars.{var} is not declared under vars:{hint}; declare it with an initial "
                    "value"
                )
            self.issues.append(Issue(path, message))
        read = {var for _, var in self.undeclared_reads}
        for var, paths in self.undeclared_sets.items():
            if var not in read:  # a read names the set's path already
                for path in paths:
                    self.issues.append(
                        Issue(
                            path,
                            f"vars.{var} is set but not declared under vars:; declare it with an "
                            "initial value (it gives the variable its type)",
                        )
                    )
        for path, timer in self.timers_used:
            if timer not in self.timers_started:
                self.issues.append(Issue(path, f"timer {timer!r} is never started"))
        for path, intent in self.intents_used:
            if intent not in spec.intents:
                known = ", ".join(sorted(spec.intents)) or "none are defined under `intents:`"
                self.issues.append(Issue(path, f"unknown intent {intent!r} (known: {known})"))
        if self.uses_llm and spec.settings.llm is None:
            for path in self.uses_llm:
                self.issues.append(Issue(path, "llm action needs `settings.llm` (base_url, model)"))


NO_WAY_OUT = (
    "no way out: neither its transitions nor a global transition lead to another state, hang "
    "up or transfer, and it is not terminal (add one, or `terminal: true`)"
)


def _way_out(name: str, state: CompiledState, globals_: tuple[CompiledTransition, ...]) -> bool:
    """Whether a call in state ``name`` can leave it: a self-loop (a re-prompt) is fine when
    one of its own or the global transitions goes elsewhere or ends the call."""
    if any(isinstance(a, Hangup | Transfer) for a in state.on_enter):
        return True
    return any(
        (t.target is not None and t.target != name)
        or any(isinstance(a, Hangup | Transfer) for a in t.actions)
        for t in (*state.transitions, *globals_)
    )


def _suggest(name: str, known: Any) -> str:
    return did_you_mean(name, known)
