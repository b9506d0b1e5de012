"""Load, validate and compile a dialog document.

:func:`load_dialog` turns YAML (or an already-parsed mapping) into a
:class:`CompiledDialog`: every CEL expression and template compiled once,
every cross-reference checked. Problems are collected, not stopped at the
first, and each names where it is (``states.greet.transitions[1].target``).
The operator uses this same function to validate Dialog resources.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from voicetyped.documents import DocumentKindError, unwrap

from voicetyped_specs.dialog import model as m
from voicetyped_specs.dialog.cel import CelCompileError, Expression
from voicetyped_specs.dialog.template import JsonTemplate, Template

BUILTIN_TIMERS = frozenset({"no_input", "max_duration", "collect_digits"})
CALL_TARGET = re.compile(r"^(sips?|tel):\S+$")
"""A transfer target: a SIP, SIPS or tel URI."""


@dataclass(frozen=True)
class Issue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class DialogError(ValueError):
    """The dialog is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[Issue], name: str = "") -> None:
        self.issues = issues
        self.name = name
        head = f"dialog {name!r} is invalid" if name else "dialog is invalid"
        super().__init__(head + ":\n" + "\n".join(f"  - {i}" for i in issues))


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
class SetVars:
    assignments: tuple[tuple[str, Expression], ...]


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


def parse_yaml(text: str, source: str = "<dialog>") -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
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
    return load_dialog(parse_yaml(path.read_text(encoding="utf-8"), str(path)))


def load_dialog(document: dict[str, Any]) -> CompiledDialog:
    """Validate and compile a dialog document; raises DialogError listing every problem."""
    name = str(document.get("name", ""))
    try:
        spec = m.Dialog.model_validate(document)
    except ValidationError as exc:
        raise DialogError(_shape_issues(exc), name) from None
    return _Compiler(spec, document).compile()


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ACTION_TAGS:
            continue  # pydantic's union branch names, not document keys
        else:
            out += f".{part}" if out else str(part)
    return out


ACTION_TAGS = frozenset(
    {
        "PlayTts",
        "Transfer",
        "Hangup",
        "CallHook",
        "SetVars",
        "CollectDigits",
        "StartTimer",
        "CancelTimer",
        "Llm",
    }
)


def _shape_issues(exc: ValidationError) -> list[Issue]:
    issues = []
    for err in exc.errors():
        path = _loc(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        # Errors raised while parsing one action carry their own sub-path.
        nested = re.match(r"^((?:on_enter|actions)\[\d+\][^:]*): (.*)$", msg, re.DOTALL)
        if nested:
            path = f"{path}.{nested.group(1)}" if path else nested.group(1)
            msg = nested.group(2)
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field missing"
        issues.append(Issue(path, msg))
    return issues


class _Compiler:
    def __init__(self, spec: m.Dialog, document: dict[str, Any]) -> None:
        self.spec = spec
        self.document = document
        self.issues: list[Issue] = []
        self.vars_read: list[tuple[str, str]] = []  # (path, var)
        self.vars_set: set[str] = set(spec.vars)
        self.timers_started: set[str] = set(BUILTIN_TIMERS)
        self.timers_used: list[tuple[str, str]] = []
        self.intents_used: list[tuple[str, str]] = []
        self.uses_llm: list[str] = []

    def compile(self) -> CompiledDialog:
        spec = self.spec
        states = {
            name: self._state(name, state, f"states.{name}") for name, state in spec.states.items()
        }
        globals_ = tuple(
            self._transition(t, f"global_transitions[{i}]")
            for i, t in enumerate(spec.global_transitions)
        )
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

    def _expr(self, source: str, path: str) -> Expression | None:
        try:
            expr = Expression(source, self.spec.settings.language)
        except CelCompileError as exc:
            self.issues.append(Issue(path, str(exc)))
            return None
        self._note_refs(expr, path)
        return expr

    def _template(self, source: str, path: str, spoken: bool = False) -> Template:
        try:
            tpl = Template(source, self.spec.settings.language)
        except (CelCompileError, ValueError) as exc:
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
        self.vars_read.extend((path, v) for v in expr.var_refs)
        for intent in re.findall(r"\bintent\s*==\s*[\"']([^\"']+)[\"']", expr.source):
            self.intents_used.append((path, intent))
        for intent in re.findall(r"[\"']([^\"']+)[\"']\s*==\s*intent\b", expr.source):
            self.intents_used.append((path, intent))

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
        condition = self._expr(t.condition, f"{path}.condition") if t.condition else None
        if t.outcome != m.Outcome.SUCCESS and t.event != m.EventType.BACKEND_RESULT:
            self.issues.append(Issue(f"{path}.outcome", "only backend_result transitions have one"))
        if t.timer is not None:
            if t.event != m.EventType.TIMEOUT:
                self.issues.append(Issue(f"{path}.timer", "only timeout transitions have one"))
            self.timers_used.append((f"{path}.timer", t.timer))
        if t.target is not None and t.target not in self.spec.states:
            self.issues.append(
                Issue(
                    f"{path}.target",
                    f"unknown state {t.target!r}{_suggest(t.target, self.spec.states)}",
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
                compiled = []
                for var, source in assignments.items():
                    expr = self._expr(source, f"{path}.set.{var}")
                    self.vars_set.add(var)
                    if expr is not None:
                        compiled.append((var, expr))
                return SetVars(tuple(compiled))
            case m.CollectDigits(collect_digits=s):
                return CollectDigits(s)
            case m.StartTimer(start_timer=s):
                self.timers_started.add(s.name)
                if s.name in BUILTIN_TIMERS:
                    self.issues.append(
                        Issue(f"{path}.start_timer.name", f"{s.name!r} is a built-in timer")
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
            tpl = JsonTemplate(value, self.spec.settings.language)
        except (CelCompileError, ValueError) as exc:
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
            if state.terminal:
                continue
            leaves = any(t.target and t.target != name for t in (*state.transitions, *globals_))
            ends = any(isinstance(a, Hangup | Transfer) for a in state.on_enter)
            if not leaves and not ends:
                self.issues.append(
                    Issue(
                        f"states.{name}",
                        "no way out: no transition leads to another state and it is not "
                        "terminal (add a transition or `terminal: true`)",
                    )
                )

    def _check_references(self) -> None:
        spec = self.spec
        for path, var in self.vars_read:
            if var not in self.vars_set:
                self.issues.append(
                    Issue(
                        path,
                        f"undefined variable vars.{var} (declare it under `vars:` or `set` it)",
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


def _suggest(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
