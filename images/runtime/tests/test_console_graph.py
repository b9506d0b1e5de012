"""The console's dialog graph: every state a node, every transition an edge carrying the path
a call's history records, laid out in layers without overlaps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from voicetyped_runtime.console.graph import ANY_STATE, NODE_H, NODE_W, dialog_graph
from voicetyped_specs.dialog.compiled import CompiledDialog, load_dialog_file
from voicetyped_testkit.dialogs import load

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples" / "dialogs").glob("*.yaml"))

UNUSUAL = """
name: unusual
initial: menu
vars: {tries: 0}
global_transitions:
  - event: dtmf
    condition: 'digit == "9"'
    target: operator
  - event: timeout
    timer: max_duration
    target: bye
states:
  menu:
    on_enter:
      - play_tts: {text: "Say something."}
      - start_timer: {name: nudge, ms: 3000}
    transitions:
      - event: timeout
        timer: nudge
        condition: 'vars.tries < 3'
        actions: [{set: {tries: 'vars.tries + 1'}}]
      - event: speech
        condition: 'transcript == "again"'
        target: menu
      - event: speech
        target: bye
  operator:
    on_enter: [{transfer: {target: "sip:ops@example.com"}}]
    terminal: true
  bye:
    on_enter: [{play_tts: {text: "Bye."}}, {hangup: {reason_code: 16}}]
    terminal: true
"""


def check_layout(graph: dict[str, Any], dialog: CompiledDialog) -> None:
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert set(nodes) - {ANY_STATE} == set(dialog.states)
    assert nodes[dialog.initial]["x"] == min(n["x"] for n in nodes.values())
    boxes = [(n["x"], n["y"]) for n in nodes.values()]
    assert len(set(boxes)) == len(boxes), "two states drawn on one spot"
    for n in nodes.values():
        assert n["x"] >= 0 and n["x"] + NODE_W <= graph["width"]
        assert n["y"] >= 0 and n["y"] + NODE_H <= graph["height"]
    paths = [t.path for s in dialog.states.values() for t in s.transitions]
    paths += [t.path for t in dialog.global_transitions if t.target]
    assert sorted(e["id"] for e in graph["edges"]) == sorted(paths)
    for edge in graph["edges"]:
        assert edge["from"] in nodes and edge["to"] in nodes


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_dialogs(path: Path) -> None:
    dialog = load_dialog_file(path)
    check_layout(dialog_graph(dialog), dialog)


def test_order_status_edges_say_event_and_condition() -> None:
    dialog = load_dialog_file(next(p for p in EXAMPLES if p.stem == "order-status"))
    graph: dict[str, Any] = dialog_graph(dialog)
    edges = {e["id"]: e for e in graph["edges"]}
    first = edges["states.greet.transitions[0]"]
    assert (first["from"], first["to"], first["event"]) == ("greet", "lookup", "speech")
    assert first["condition"] == "spokenDigits(transcript).size() >= 4"
    assert edges["states.greet.transitions[3]"]["timer"] == "no_input"
    not_found = edges["states.lookup.transitions[2]"]
    assert (not_found["outcome"], not_found["to"]) == ("error", "not_found")
    agent = edges["global_transitions[0]"]
    assert (agent["from"], agent["to"], agent["global"]) == (ANY_STATE, "agent", True)
    retry = edges["states.ask_number.transitions[1]"]
    assert retry["self_loop"] and retry["from"] == retry["to"] == "ask_number"
    layers = sorted({n["x"] for n in graph["nodes"]})
    column = {n["id"]: layers.index(n["x"]) for n in graph["nodes"]}
    assert column["greet"] == 0 and column["ask_number"] == column["lookup"] == 1
    assert column["shipped"] == 2 and column["goodbye"] == 3


def test_global_transitions_timers_and_self_loops() -> None:
    dialog = load(UNUSUAL)
    graph: dict[str, Any] = dialog_graph(dialog)
    check_layout(graph, dialog)
    edges = {e["id"]: e for e in graph["edges"]}
    nudge = edges["states.menu.transitions[0]"]  # no target: stays, a self-loop
    assert (nudge["to"], nudge["timer"], nudge["self_loop"]) == ("menu", "nudge", True)
    assert nudge["condition"] == "vars.tries < 3"
    assert edges["states.menu.transitions[1]"]["self_loop"]
    timeout = edges["global_transitions[1]"]
    assert (timeout["from"], timeout["to"], timeout["timer"]) == (ANY_STATE, "bye", "max_duration")
    nodes = {n["id"]: n for n in graph["nodes"]}
    # operator is reached only through a global transition: a layer after the others.
    assert nodes["operator"]["x"] > nodes["bye"]["x"] > nodes["menu"]["x"]
    assert nodes[ANY_STATE]["label"] == "any state"
    assert nodes["bye"]["terminal"] and not nodes["menu"]["terminal"] and nodes["menu"]["initial"]
