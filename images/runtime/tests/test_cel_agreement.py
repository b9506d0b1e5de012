"""The checker and the runtime agree: what validation accepts, a call evaluates.

One library (cel-cpp, through cel-expr-python) both type-checks a dialog's CEL at load and
evaluates it on a call, so functions and overloads cannot differ between the two. What could
still differ is the *values*: the checker trusts that ``turn`` is an int and ``error`` a
map(string, string); the engine builds the activation. These tests drive the real engine
through every event a dialog can handle, record each activation it evaluates against, and
check the values against the declarations, then evaluate a corpus covering every activation
name and every function over those activations; the example dialogs' scripts run in the
simulator without one evaluation warning; and the simulator refuses what validation refuses.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner
from voicetyped_runtime import engine as e
from voicetyped_runtime.cli import app
from voicetyped_runtime.dialogs import prepare
from voicetyped_runtime.fsm import DialogFsm
from voicetyped_runtime.simulate import BackendReply, ScriptStep, Simulator
from voicetyped_specs.dialog import compiled as c
from voicetyped_specs.dialog.cel import (
    ACTIVATION_NAMES,
    ACTIVATION_TYPES,
    CelEnv,
    Expression,
    VarType,
    truthy,
    type_name,
)
from voicetyped_specs.dialog.compiled import load_dialog, load_dialog_file, parse_yaml

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "dialogs"

PROBE_VARS: dict[str, Any] = {
    "n": 0,
    "score": 0.0,
    "name": "",
    "answered": False,
    "log": [],
    "tags": ["vip"],
    "info": {},
    "anything": None,
}

# A dialog that meets every event: speech, dtmf, digits, timeout (no_input, collect_digits,
# a named timer), backend_result (success, error), llm_result, error, barge_in,
# transfer_failed, hangup.
PROBE = """
name: probe
initial: listen
settings:
  no_input_timeout_ms: 3000
  llm: {base_url: "http://llm.invalid/v1", model: m}
vars: {n: 0, score: 0.0, name: "", answered: false, log: [], tags: [vip], info: {}, anything: null}
global_transitions:
  - event: hangup
    actions: [{set: {anything: state}}]
states:
  listen:
    on_enter:
      - play_tts: {text: "Hello {{ vars.name }}, turn {{ turn }}."}
      - start_timer: {name: reminder, ms: 20000}
    transitions:
      - event: speech
        actions:
          - set: {n: vars.n + 1, score: confidence, log: 'vars.log + [transcript]'}
          - call_hook: {service: s, method: m, payload: {said: "{{ transcript }}"}}
      - event: dtmf
        condition: digit == "5"
        target: collect
      - event: dtmf
        condition: digit == "9"
        target: handoff
      - event: dtmf
        actions:
          - llm: {mode: classify, prompt: "yes or no", labels: ["yes", "no"]}
      - event: backend_result
        outcome: any
        actions: [{set: {answered: ok, info: 'ok ? result : error'}}]
      - event: llm_result
        actions: [{set: {name: label}}]
      - {event: timeout, timer: no_input}
      - {event: timeout, timer: reminder}
      - {event: barge_in}
      - {event: error, actions: [{set: {anything: error}}]}
  handoff:
    on_enter:
      - transfer: {target: "sip:desk@pbx.example.com"}
    transitions:
      - event: transfer_failed
        condition: 'sip_status == 486 && error.kind == "transfer"'
        target: listen
  collect:
    on_enter:
      - collect_digits: {max_digits: 4, timeout_ms: 2000}
    transitions:
      - {event: digits, target: listen}
      - {event: timeout, target: listen}
"""

PROBE_STEPS: list[dict[str, Any]] = [
    {"wait": 100},
    {"say": "four two please"},
    {"backend": {"ok": True, "response": {"status": "shipped", "eta_days": 2}}},
    {"press": "1"},
    {"llm": {"label": "yes"}},
    {"press": "5"},
    {"press": "1234"},
    {"press": "5"},
    {"wait": 2500},  # collect_digits times out
    {"wait": 3500},  # no_input
    {"say": "again"},
    {"backend": {"ok": False, "error_code": "timeout", "error_message": "took too long"}},
    {"press": "2"},
    {"llm": {"error": "timeout"}},  # an error event
    {"wait": 25000},  # the reminder timer (and no_input again)
    {"press": "5"},
    {"press": "7"},
    {"press": "#"},
    {"interrupt": "stop"},  # barge-in over the welcome on re-entering listen
    {"press": "9"},
    {"transfer": {"status": 486, "reason": "Busy Here"}},  # transfer_failed, back to listen
    {"hangup": True},
]


def _run_recording(
    dialog: c.CompiledDialog, steps: list[dict[str, Any]]
) -> tuple[Simulator, list[dict[str, Any]]]:
    """Run ``steps`` and return the activations the engine evaluated expressions against."""
    seen: list[dict[str, Any]] = []
    original = DialogFsm._activation

    def recording(self: DialogFsm, s: Any, ev: Any, now: int) -> dict[str, Any]:
        activation = original(self, s, ev, now)
        seen.append(copy.deepcopy(activation))
        return activation

    DialogFsm._activation = recording  # type: ignore[method-assign]
    try:
        sim = Simulator(dialog)
        sim.run([ScriptStep.model_validate(step) for step in steps])
    finally:
        DialogFsm._activation = original  # type: ignore[method-assign]
    return sim, seen


@pytest.fixture(scope="module")
def probe() -> tuple[Simulator, list[dict[str, Any]]]:
    return _run_recording(load_dialog(parse_yaml(PROBE)), PROBE_STEPS)


def test_the_probe_meets_every_event(probe: tuple[Simulator, list[dict[str, Any]]]) -> None:
    sim, activations = probe
    events = {a["event"] for a in activations}
    assert events >= {
        "speech",
        "dtmf",
        "digits",
        "timeout",
        "backend_result",
        "llm_result",
        "error",
        "barge_in",
        "transfer_failed",
        "hangup",
    }
    assert {a["timer"] for a in activations} >= {"no_input", "collect_digits", "reminder"}
    assert {a["ok"] for a in activations if a["event"] == "backend_result"} == {True, False}
    warnings = [x.effect for x in sim.emitted if isinstance(x.effect, e.Warn)]
    # The refused transfer is logged; nothing else warns (no expression failed to evaluate).
    assert warnings == [e.Warn("transfer failed", {"sip_status": 486, "reason": "486 Busy Here"})]


# CEL-side type tests: the evaluator's own view of each value against the declaration.
_TYPE_TEST = {
    "string": "type({0}) == string",
    "int": "type({0}) == int",
    "double": "type({0}) == double",
    "bool": "type({0}) == bool",
    "map(string, string)": "type({0}) == map && {0}.all(k, type({0}[k]) == string)",
    "map(string, dyn)": "type({0}) == map && {0}.all(k, type(k) == string)",
    "list(dyn)": "type({0}) == list",
    "list(string)": "type({0}) == list && {0}.all(x, type(x) == string)",
}


def test_activation_values_have_the_declared_types(
    probe: tuple[Simulator, list[dict[str, Any]]],
) -> None:
    _, activations = probe
    env = CelEnv(PROBE_VARS)
    tests = {
        name: Expression(_TYPE_TEST[type_name(t)].format(name), env)
        for name, t in ACTIVATION_TYPES.items()
        if type_name(t) != "dyn"
    }
    var_tests = {
        name: Expression(_TYPE_TEST[str(t)].format(f"vars.{name}"), env)
        for name, t in env.var_types.items()  # type: ignore[union-attr]
        if t.kind != "dyn"
    }
    assert set(tests) | {"result", "vars"} == ACTIVATION_NAMES
    wrong = [
        (a["event"], name, a[name] if name in a else a["vars"][name])
        for a in activations
        for name, test in (tests | var_tests).items()
        if test.evaluate(a) is not True
    ]
    assert wrong == []
    # ... and every variable's value is one its declared type admits, after every set.
    for a in activations:
        for name, value in a["vars"].items():
            assert VarType.of(PROBE_VARS[name]).admit(value) == value


def test_values_that_changed_during_the_probe(
    probe: tuple[Simulator, list[dict[str, Any]]],
) -> None:
    """The probe did exercise the sets (so the type tests above saw more than initial values)."""
    sim, _ = probe
    assert sim.state.vars["n"] == 3  # the barge-in's words are a turn too
    assert sim.state.vars["log"] == ["four two please", "again", "stop"]
    assert sim.state.vars["name"] == "yes"
    assert sim.state.vars["answered"] is False
    assert sim.state.vars["info"] == {
        "kind": "backend",
        "code": "timeout",
        "message": "took too long",
    }
    assert isinstance(sim.state.vars["score"], float)
    assert sim.state.vars["anything"] == "listen"


# Every activation name and every function (CEL's standard ones, the strings, math and
# encoders extensions, cel.bind, spokenDigits/spokenNumbers), each written the way validation
# accepts it, the dyn ones guarded as a dialog must guard them.
CORPUS = [
    'event != "" && state != ""',
    "turn >= 0 && elapsed_ms >= 0 && state_elapsed_ms >= 0 && timer_elapsed_ms >= 0",
    "confidence >= 0.0 && intent_score <= 1.0",
    "transcript.size() >= 0 && intent.size() >= 0 && label.size() >= 0",
    'digit == "" || digit.matches("^[0-9*#]$")',
    "digits.size() <= 64",
    'timer in ["", "no_input", "collect_digits", "reminder"]',
    "ok || !ok",
    "result == null || type(result) == map || has(result.status) || true",
    "has(error.code) ? error.code.size() > 0 : error.size() == 0",
    'error.exists(k, k == "kind") || error.size() == 0',
    'slots.size() >= 0 && (has(slots.day) ? string(slots.day) != "" : true)',
    'caller.id.startsWith("+") && size(caller.headers) >= 0',
    '"X-Account" in caller.headers || !("X-Account" in caller.headers)',
    "vars.n + 1 > vars.n && vars.score + 0.5 > vars.score",
    'vars.name + "!" != "" && !vars.answered || vars.answered',
    'vars.log.size() >= 0 && vars.tags.exists(t, t == "vip")',
    "vars.info.size() >= 0 && vars.anything == vars.anything",
    # standard library
    'int("42") + int(2.9) == 44 && uint(3) == 3u && double(turn) >= 0.0',
    'string(turn) != "" && bytes("a") == b"a" && dyn(1) == 1',
    'type(transcript) == string && size([1, 2]) == 2 && size({"a": 1}) == 1',
    'transcript.contains("") && transcript.startsWith("") && transcript.endsWith("")',
    "[1, 2, 3].all(x, x > 0) && [1, 2].exists(x, x == 2) && [1, 2].exists_one(x, x == 1)",
    "[1, 2].map(x, x * 2) == [2, 4] && [1, 2, 3].filter(x, x > 1).size() == 2",
    'timestamp("2026-12-04T10:00:00Z").getHours() == 10 && duration("90s").getSeconds() == 90',
    "math.greatest(1, 2) == 2 && math.least([3, 1]) == 1 && math.abs(-2) == 2",
    "math.ceil(1.2) == 2.0 && math.floor(1.8) == 1.0 && math.round(2.5) == 3.0",
    "math.trunc(-1.5) == -1.0 && math.sign(-3) == -1 && math.sqrt(4) == 2.0",
    "!math.isInf(1.0) && !math.isNaN(1.0) && math.isFinite(1.0)",
    "math.bitAnd(6, 3) == 2 && math.bitOr(4, 1) == 5 && math.bitXor(5, 1) == 4",
    "math.bitNot(0) == -1 && math.bitShiftLeft(1, 3) == 8 && math.bitShiftRight(8, 3) == 1",
    '"abc".charAt(1) == "b" && "abcb".indexOf("b") == 1 && "abcb".lastIndexOf("b") == 3',
    '"AbC".lowerAscii() == "abc" && "abc".upperAscii() == "ABC" && " a ".trim() == "a"',
    '"a-b".replace("-", "+") == "a+b" && "a,b".split(",") == ["a", "b"]',
    '"hello".substring(1, 3) == "el" && ["a", "b"].join("-") == "a-b"',
    'strings.quote("a") == "\\"a\\"" && "%s=%d".format(["n", 1]) == "n=1"',
    '"abc".reverse() == "cba"',
    'base64.decode(base64.encode(b"hi")) == b"hi"',
    "cel.bind(t, transcript.size(), t >= 0)",
    "sip_status == 0 || sip_status >= 300",
    'spokenDigits("four two") == "42" && spokenDigits(transcript).size() >= 0',
    'spokenNumbers("two tickets") == [2] && spokenNumbers(transcript, "en").size() >= 0',
    'spokenDigits("quatre deux", "fr") == "42"',
]


def test_the_corpus_uses_every_name_and_function() -> None:
    text = "\n".join(CORPUS)
    for name in ACTIVATION_NAMES:
        assert re.search(rf"\b{name}\b", text), name
    functions = [
        *("size", "contains", "startsWith", "endsWith", "matches", "int", "uint", "double"),
        *("string", "bytes", "dyn", "type", "has", "all", "exists", "exists_one", "map"),
        *("filter", "timestamp", "duration", "getHours", "getSeconds", "greatest", "least"),
        *("abs", "ceil", "floor", "round", "trunc", "sign", "sqrt", "isInf", "isNaN"),
        *("isFinite", "bitAnd", "bitOr", "bitXor", "bitNot", "bitShiftLeft", "bitShiftRight"),
        *("charAt", "indexOf", "lastIndexOf", "lowerAscii", "upperAscii", "trim", "replace"),
        *("split", "substring", "join", "quote", "format", "reverse", "encode", "decode"),
        *("bind", "spokenDigits", "spokenNumbers"),
    ]
    missing = [f for f in functions if not re.search(rf"\b{f}\(", text)]
    assert missing == []


@pytest.mark.parametrize("source", CORPUS)
def test_checked_expressions_evaluate_over_every_engine_activation(
    source: str, probe: tuple[Simulator, list[dict[str, Any]]]
) -> None:
    _, activations = probe
    expr = Expression(source, CelEnv(PROBE_VARS))  # the checker accepts it
    results = [truthy(expr.evaluate(a)) for a in activations]  # and it never fails
    assert all(results), [a["event"] for a, r in zip(activations, results, strict=True) if not r]


@pytest.mark.parametrize("script", sorted((EXAMPLES / "scripts").glob("*.yaml")), ids=str)
def test_example_scripts_meet_no_evaluation_error(script: Path) -> None:
    path = EXAMPLES / f"{script.name.split('.', 1)[0]}.yaml"
    dialog = load_dialog_file(path)
    version = prepare(dialog, str(path))
    sim = Simulator(dialog, matcher=version.matcher)
    sim.run([ScriptStep.model_validate(s) for s in yaml.safe_load(script.read_text())])
    warnings = [x.effect for x in sim.emitted if isinstance(x.effect, e.Warn)]
    assert [w for w in warnings if w.message in CEL_WARNINGS] == []


CEL_WARNINGS = {"condition failed; transition skipped", "action failed"}


def test_a_dyn_value_of_the_wrong_type_fails_its_set_at_run_time() -> None:
    """``result`` is dyn: validation lets ``set: {n: result.count}`` through for an int n, and
    the runtime refuses a value that is not an int rather than storing it."""
    dialog = load_dialog(
        parse_yaml(
            """
            name: t
            initial: ask
            vars: {n: 0, why: ""}
            global_transitions:
              - {event: error, actions: [{set: {why: error.message}}], target: done}
            states:
              ask:
                on_enter:
                  - call_hook: {service: s, method: m}
                transitions:
                  - {event: backend_result, actions: [{set: {n: result.count}}], target: done}
              done: {terminal: true}
            """
        )
    )
    sim = Simulator(dialog)
    sim.backend(BackendReply(ok=True, response={"count": "3"}))
    assert sim.state.vars == {
        "n": 0,
        "why": "set n: 'result.count' gave string '3', not int (the type of vars.n)",
    }
    sim = Simulator(dialog)
    sim.backend(BackendReply(ok=True, response={"count": 3}))
    assert sim.state.vars == {"n": 3, "why": ""}


RETRY_COUNTER = """\
name: refill
initial: ask
states:
  ask:
    transitions:
      - event: timeout
        actions: [{set: {retries: 'vars.retries + 1'}}]
        target: retry
  retry:
    transitions:
      - {event: speech, condition: 'vars.retries < 3', target: ask}
      - {event: speech, target: goodbye}
  goodbye: {terminal: true}
"""


def test_the_simulator_refuses_what_validation_refuses(tmp_path: Path) -> None:
    dialog = tmp_path / "refill.yaml"
    dialog.write_text(RETRY_COUNTER)
    script = tmp_path / "steps.yaml"
    script.write_text("- wait: 9000\n- say: yes\n")
    runner = CliRunner()
    validated = runner.invoke(app, ["validate", str(dialog)])
    simulated = runner.invoke(app, ["simulate", str(dialog), "--script", str(script)])
    assert validated.exit_code == simulated.exit_code == 1
    expected = (
        "states.retry.transitions[0].condition: vars.retries is read but never declared under "
        "vars: (it is set at states.ask.transitions[0].actions[0].set.retries); declare it "
        "with an initial value"
    )
    for result in (validated, simulated):
        assert expected in " ".join(result.output.split())
    assert "condition failed" not in simulated.output
