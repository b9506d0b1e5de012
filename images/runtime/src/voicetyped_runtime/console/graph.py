"""A dialog as a graph for the console: its states as nodes laid out in layers (breadth first
from the initial state, left to right), its transitions as edges with their event, timer,
outcome and condition. Pure: the page draws the SVG from this JSON, no layout library.

Global transitions leave a node ``*`` ("any state"). Every edge carries the transition's path
(``states.greet.transitions[1]``, ``global_transitions[0]``), which is what a call's history
records, so the page can mark the transitions a call took.
"""

from __future__ import annotations

from pydantic import JsonValue
from voicetyped_specs.dialog.compiled import CompiledDialog, CompiledTransition

ANY_STATE = "*"
NODE_W = 150
NODE_H = 36
COL_GAP = 70
ROW_GAP = 34
MARGIN = 24


def _edge(source: str, t: CompiledTransition) -> dict[str, JsonValue]:
    target = t.target or source
    return {
        "id": t.path,
        "from": source,
        "to": target,
        "event": t.event.value,
        "timer": t.timer or "",
        "outcome": t.outcome.value if t.event.value == "backend_result" else "",
        "condition": t.condition.source if t.condition is not None else "",
        "self_loop": source == target,
        "global": source == ANY_STATE,
    }


def _layers(dialog: CompiledDialog, edges: list[dict[str, JsonValue]]) -> list[list[str]]:
    """Breadth-first from the initial state; states reached only by a global transition come
    after the others, unreachable ones (none in a valid dialog) last."""
    local: dict[str, list[str]] = {name: [] for name in dialog.states}
    for edge in edges:
        if not edge["global"]:
            local[str(edge["from"])].append(str(edge["to"]))
    depth = {dialog.initial: 0}
    frontier = [dialog.initial]
    while frontier:
        nxt = []
        for name in frontier:
            for target in local[name]:
                if target not in depth:
                    depth[target] = depth[name] + 1
                    nxt.append(target)
        frontier = nxt
    deepest = max(depth.values())
    for name in dialog.states:  # reached only through global transitions
        depth.setdefault(name, deepest + 1)
    layers: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for name in dialog.states:
        layers[depth[name]].append(name)
    return layers


def dialog_graph(dialog: CompiledDialog) -> dict[str, JsonValue]:
    edges = [_edge(name, t) for name, s in dialog.states.items() for t in s.transitions]
    edges += [_edge(ANY_STATE, t) for t in dialog.global_transitions if t.target]
    layers = _layers(dialog, edges)
    if any(e["global"] for e in edges):
        layers[0].append(ANY_STATE)
    nodes: list[JsonValue] = []
    for col, names in enumerate(layers):
        for row, name in enumerate(names):
            state = dialog.states.get(name)
            nodes.append(
                {
                    "id": name,
                    "label": "any state" if name == ANY_STATE else name,
                    "initial": name == dialog.initial,
                    "terminal": bool(state and state.terminal),
                    "x": MARGIN + col * (NODE_W + COL_GAP),
                    "y": MARGIN + row * (NODE_H + ROW_GAP),
                }
            )
    rows = max(len(names) for names in layers)
    return {
        "dialog": dialog.name,
        "version": dialog.content_hash,
        "initial": dialog.initial,
        "node_w": NODE_W,
        "node_h": NODE_H,
        "width": 2 * MARGIN + len(layers) * NODE_W + (len(layers) - 1) * COL_GAP,
        "height": 2 * MARGIN + rows * NODE_H + (rows - 1) * ROW_GAP,
        "nodes": nodes,
        "edges": list[JsonValue](edges),
    }
