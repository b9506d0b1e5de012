"""Render a dialog's state machine as Mermaid or Graphviz DOT."""

from __future__ import annotations

import json

from voicetyped_specs.dialog.compiled import CompiledDialog, CompiledTransition


def _label(t: CompiledTransition) -> str:
    label = t.event.value
    if t.timer:
        label += f"[{t.timer}]"
    if t.event.value == "backend_result" and t.outcome.value != "success":
        label += f"({t.outcome.value})"
    if t.condition is not None:
        label += f": {t.condition.source}"
    return label


def _edges(dialog: CompiledDialog) -> list[tuple[str, str, str]]:
    edges = []
    for name, state in dialog.states.items():
        for t in state.transitions:
            edges.append((name, t.target or name, _label(t)))
    for t in dialog.global_transitions:
        if t.target:
            edges.append(("*", t.target, _label(t)))
    return edges


def to_mermaid(dialog: CompiledDialog) -> str:
    ids = {name: f"s{i}" for i, name in enumerate(dialog.states)}
    ids["*"] = "any"
    lines = ["stateDiagram-v2", f"    [*] --> {ids[dialog.initial]}"]
    for name, state in dialog.states.items():
        lines.append(f'    state "{name}" as {ids[name]}')
        if state.terminal:
            lines.append(f"    {ids[name]} --> [*]")
    if dialog.global_transitions:
        lines.append('    state "any state" as any')
    for src, dst, label in _edges(dialog):
        text = label.replace(":", "#colon;").replace('"', "#quot;")
        lines.append(f"    {ids[src]} --> {ids[dst]}: {text}")
    return "\n".join(lines) + "\n"


def to_dot(dialog: CompiledDialog) -> str:
    q = json.dumps  # DOT accepts JSON-style quoted strings
    lines = [
        f"digraph {q(dialog.name)} {{",
        "    rankdir=LR;",
        "    node [shape=box, style=rounded];",
    ]
    lines.append('    "__start" [shape=point];')
    lines.append(f'    "__start" -> {q(dialog.initial)};')
    for name, state in dialog.states.items():
        shape = ", peripheries=2" if state.terminal else ""
        lines.append(f"    {q(name)} [label={q(name)}{shape}];")
    if dialog.global_transitions:
        lines.append('    "*" [label="any state", shape=ellipse, style=dashed];')
    for src, dst, label in _edges(dialog):
        lines.append(f"    {q(src)} -> {q(dst)} [label={q(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
