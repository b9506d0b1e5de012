"""A dialog's ``call_hook`` targets checked against the Integrations that are loaded.

One check for every place that knows both: ``voicetyped dialog validate --integration``,
``voicetyped up`` (refuses to start) and the operator (the Dialog's ``IntegrationsResolved``
condition). A ``call_hook`` names an Integration (``service``) and one of its operations
(``method``); a name that is not loaded is an issue at the call_hook's path, with the closest
loaded names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from voicetyped_specs.dialog import model as m
from voicetyped_specs.dialog.compiled import Issue


@dataclass(frozen=True)
class HookRef:
    path: str
    """Where the call_hook is: ``states.lookup.on_enter[0].call_hook``."""
    service: str
    method: str


def call_hooks(spec: m.Dialog) -> list[HookRef]:
    """Every ``call_hook`` of the dialog, in document order."""
    found: list[HookRef] = []
    for name, state in spec.states.items():
        found += _in(state.on_enter, f"states.{name}.on_enter")
        for i, t in enumerate(state.transitions):
            found += _in(t.actions, f"states.{name}.transitions[{i}].actions")
    for i, t in enumerate(spec.global_transitions):
        found += _in(t.actions, f"global_transitions[{i}].actions")
    return found


def _in(actions: Sequence[m.Action], path: str) -> Iterator[HookRef]:
    for i, action in enumerate(actions):
        if isinstance(action, m.CallHook):
            hook = action.call_hook
            yield HookRef(f"{path}[{i}].call_hook", hook.service, hook.method)


def services(spec: m.Dialog) -> set[str]:
    """The Integrations the dialog's call_hooks name."""
    return {h.service for h in call_hooks(spec)}


def check_call_hooks(spec: m.Dialog, integrations: Mapping[str, frozenset[str]]) -> list[Issue]:
    """An issue for each call_hook whose Integration or operation is not in ``integrations``
    (name -> operation names)."""
    issues = []
    for hook in call_hooks(spec):
        operations = integrations.get(hook.service)
        if operations is None:
            loaded = ", ".join(sorted(integrations)) or "none"
            issues.append(
                Issue(
                    f"{hook.path}.service",
                    f"no Integration {hook.service!r}{_closest(hook.service, integrations)} "
                    f"(loaded: {loaded})",
                )
            )
        elif hook.method not in operations:
            known = ", ".join(sorted(operations))
            issues.append(
                Issue(
                    f"{hook.path}.method",
                    f"Integration {hook.service!r} has no operation {hook.method!r}"
                    f"{_closest(hook.method, operations)} (its operations: {known})",
                )
            )
    return issues


def _closest(name: str, known: Mapping[str, object] | frozenset[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
