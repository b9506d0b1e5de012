"""The shipped example dialogs and scripts, and the ``voicetyped dialog`` CLI on them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner
from voicetyped_runtime import engine as e
from voicetyped_runtime.cli import app
from voicetyped_runtime.dialogs import DialogVersion, prepare
from voicetyped_runtime.simulate import ExpectationError, ScriptStep, Simulator
from voicetyped_specs.dialog.compiled import CompiledDialog, load_dialog_file

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "dialogs"
DIALOGS = sorted(EXAMPLES.glob("*.yaml"))
SCRIPTS = sorted((EXAMPLES / "scripts").glob("*.yaml"))


def dialog_of(script: Path) -> str:
    return script.name.split(".", 1)[0]


@pytest.fixture(scope="module")
def versions() -> dict[str, DialogVersion]:
    """Every example prepared once (the intent model is loaded once for the module)."""
    out = {}
    for path in DIALOGS:
        version = prepare(load_dialog_file(path), str(path))
        out[version.name] = version
    return out


def flat(text: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(text.split())


def test_there_are_examples() -> None:
    assert {p.stem for p in DIALOGS} >= {"order-status", "main-menu", "appointment-confirmation"}
    assert len(SCRIPTS) >= 5


@pytest.mark.parametrize("path", DIALOGS, ids=lambda p: p.stem)
def test_example_dialog_validates(path: Path) -> None:
    dialog = load_dialog_file(path)
    assert dialog.name == path.stem
    assert dialog.initial in dialog.states
    assert len(dialog.content_hash) == 16


@pytest.mark.parametrize("path", DIALOGS, ids=lambda p: p.stem)
def test_every_example_dialog_has_a_script(path: Path) -> None:
    assert path.stem in {dialog_of(s) for s in SCRIPTS}


def test_intent_dialogs_use_the_embedding_model(versions: dict[str, DialogVersion]) -> None:
    order_status = versions["order-status"]
    assert order_status.matcher is not None
    assert order_status.matcher.kind == "embedding"
    assert order_status.intent_note is None
    assert order_status.matcher.match("can I speak to a human please").intent == "agent"
    assert versions["main-menu"].matcher is None


def run_script(version: DialogVersion, script: Path) -> Simulator:
    raw = yaml.safe_load(script.read_text(encoding="utf-8"))
    steps = [ScriptStep.model_validate(step) for step in raw]
    sim = Simulator(version.compiled, matcher=version.matcher)
    sim.run(steps)
    return sim


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_example_script_runs_to_completion(
    script: Path, versions: dict[str, DialogVersion]
) -> None:
    version = versions[dialog_of(script)]
    raw = yaml.safe_load(script.read_text(encoding="utf-8"))
    assert any("expect" in step for step in raw), "a script should check something"
    sim = run_script(version, script)  # raises ExpectationError on a failed expect
    assert sim.state.history[0].event == "start"
    assert len(sim.state.history) > 2
    assert not sim.state.playing


def test_order_status_happy_path(versions: dict[str, DialogVersion]) -> None:
    sim = run_script(versions["order-status"], EXAMPLES / "scripts" / "order-status.happy.yaml")
    assert [h.to_state for h in sim.state.history] == [
        "greet",
        "ask_number",
        "lookup",
        "shipped",
        "goodbye",
    ]
    hooks = [x.effect for x in sim.emitted if isinstance(x.effect, e.ExecuteHook)]
    assert [(h.service, h.method, h.payload, h.key) for h in hooks] == [
        ("shop", "get_order", {"order_id": "48213"}, "sim-1:3")
    ]
    assert sim.state.ended
    assert isinstance(sim.emitted[-1].effect, e.SessionEnded)


def test_order_status_not_found_then_agent_by_intent(versions: dict[str, DialogVersion]) -> None:
    sim = run_script(versions["order-status"], EXAMPLES / "scripts" / "order-status.not-found.yaml")
    assert sim.state.history[-1].transition == "global_transitions[1]"
    transfers = [x.effect for x in sim.emitted if isinstance(x.effect, e.TransferCall)]
    assert [t.target for t in transfers] == ["sip:agents@pbx.example.com"]


def test_a_failing_expectation_names_the_step(versions: dict[str, DialogVersion]) -> None:
    sim = Simulator(versions["order-status"].compiled, matcher=versions["order-status"].matcher)
    steps = [
        ScriptStep.model_validate({"say": "I'm calling about my order"}),
        ScriptStep.model_validate({"expect": {"state": "lookup", "vars": {"order_id": "1"}}}),
    ]
    with pytest.raises(ExpectationError) as info:
        sim.run(steps)
    assert str(info.value) == (
        "step 2 (expect): state is 'ask_number', expected 'lookup'; "
        "vars.order_id is '', expected '1'"
    )


def test_script_step_has_exactly_one_kind() -> None:
    with pytest.raises(ValueError, match="a step has exactly one of"):
        ScriptStep.model_validate({"say": "hi", "press": "1"})


def test_simulated_prompts_take_time_and_timers_fire(versions: dict[str, DialogVersion]) -> None:
    dialog: CompiledDialog = versions["main-menu"].compiled
    sim = Simulator(dialog)
    sim.wait(6_000)  # the welcome plays, then 6 s of silence: no_input
    assert sim.state.vars["misses"] == 1
    assert sim.state.session.state == "menu"
    assert sim.state.history[-1].event == "timeout"


# ---- the CLI --------------------------------------------------------------------------

runner = CliRunner()


def test_cli_validate_ok() -> None:
    result = runner.invoke(app, ["validate", *map(str, DIALOGS)])
    assert result.exit_code == 0, result.output
    out = flat(result.stdout)
    for path in DIALOGS:
        dialog = load_dialog_file(path)
        assert (
            f"✓ {path}: dialog {dialog.name!r}, {len(dialog.states)} states, "
            f"hash {dialog.content_hash}"
        ) in out
    assert result.stderr == ""


def test_cli_validate_invalid(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\ninitial: ask\nstates:\n"
        "  ask:\n    on_enter:\n      - play_tts: {txt: hi}\n    terminal: true\n",
        encoding="utf-8",
    )
    worse = tmp_path / "worse.yaml"
    worse.write_text(
        "name: worse\ninitial: ask\nstates:\n"
        "  ask:\n    transitions:\n      - {event: speech, target: dne}\n"
        "  orphan: {terminal: true}\n",
        encoding="utf-8",
    )
    good = DIALOGS[0]
    result = runner.invoke(app, ["validate", str(bad), str(good), str(worse)])
    assert result.exit_code == 1
    errors = flat(result.stderr)
    assert f"✗ {bad}: 1 problem(s) states.ask.on_enter[0].play_tts.txt: unknown field" in errors
    assert (
        f"✗ {worse}: 2 problem(s) states.ask.transitions[0].target: unknown state 'dne' "
        "states.orphan: unreachable from the initial state 'ask'"
    ) in errors
    assert f"✓ {good}: dialog" in flat(result.stdout)


def test_cli_validate_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "No such file or directory" in flat(result.stderr)


def test_cli_validate_yaml_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nstates: {a: [\n", encoding="utf-8")
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert f"✗ {bad}: 1 problem(s) {bad}: YAML error at line 3, column 1:" in flat(result.stderr)


@pytest.mark.parametrize("path", DIALOGS, ids=lambda p: p.stem)
def test_cli_graph_mermaid(path: Path) -> None:
    dialog = load_dialog_file(path)
    result = runner.invoke(app, ["graph", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "stateDiagram-v2"
    ids = dict(re.findall(r'^    state "([^"]+)" as (\w+)$', result.stdout, re.MULTILINE))
    assert set(ids) == set(dialog.states) | ({"any state"} if dialog.global_transitions else set())
    assert f"    [*] --> {ids[dialog.initial]}" in lines
    for name, state in dialog.states.items():
        assert (f"    {ids[name]} --> [*]" in lines) is state.terminal
        for t in state.transitions:
            assert any(
                line.startswith(f"    {ids[name]} --> {ids[t.target or name]}: {t.event.value}")
                for line in lines
            ), (name, t.path)


@pytest.mark.parametrize("path", DIALOGS, ids=lambda p: p.stem)
def test_cli_graph_dot(path: Path) -> None:
    dialog = load_dialog_file(path)
    result = runner.invoke(app, ["graph", str(path), "--format", "dot"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f'digraph "{dialog.name}" {{'
    assert lines[-1] == "}"
    assert f'    "__start" -> "{dialog.initial}";' in lines
    for name, state in dialog.states.items():
        shape = ", peripheries=2" if state.terminal else ""
        assert f'    "{name}" [label="{name}"{shape}];' in lines
    edges = [line for line in lines if " -> " in line and "__start" not in line]
    expected = sum(len(s.transitions) for s in dialog.states.values()) + sum(
        1 for t in dialog.global_transitions if t.target
    )
    assert len(edges) == expected


def test_cli_graph_of_an_invalid_dialog_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ninitial: nowhere\nstates: {a: {terminal: true}}\n", "utf-8")
    result = runner.invoke(app, ["graph", str(bad)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "initial: unknown state 'nowhere'" in flat(result.stderr)


def test_cli_simulate_prints_the_path() -> None:
    result = runner.invoke(
        app,
        [
            "simulate",
            str(EXAMPLES / "order-status.yaml"),
            "--script",
            str(EXAMPLES / "scripts" / "order-status.happy.yaml"),
        ],
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    rows = [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in out.split("path", 1)[1].splitlines()
        if line.startswith("│")
    ]
    assert [row[1:4] for row in rows if row[1]] == [
        ["start", "", "greet"],
        ["speech", "greet", "ask_number"],
        ["digits", "ask_number", "lookup"],
        ["backend_result", "lookup", "shipped"],
        ["speech", "shipped", "goodbye"],
    ]
    flat_out = flat(out)
    assert "call shop.get_order {'order_id': '48213'}" in flat_out
    assert "say 'Thanks for calling. Goodbye!' (no barge-in)" in flat_out
    assert "session ended: dialog reached a terminal state" in flat_out
    assert "final state: goodbye; vars: {'order_id': '48213', 'attempts': 0}" in flat_out
    assert "✗" not in result.stderr


def test_cli_simulate_exits_1_when_an_expect_fails(tmp_path: Path) -> None:
    script = tmp_path / "wrong.yaml"
    script.write_text(
        '- say: "I\'m calling about my order"\n- expect: {state: shipped}\n', encoding="utf-8"
    )
    result = runner.invoke(
        app, ["simulate", str(EXAMPLES / "order-status.yaml"), "--script", str(script)]
    )
    assert result.exit_code == 1
    # The path up to the failure is still printed.
    assert "final state: ask_number" in flat(result.stdout)
    assert flat(result.stderr) == ("✗ step 2 (expect): state is 'ask_number', expected 'shipped'")


def test_cli_simulate_rejects_a_bad_script(tmp_path: Path) -> None:
    script = tmp_path / "bad.yaml"
    script.write_text("say: not a list\n", encoding="utf-8")
    result = runner.invoke(
        app, ["simulate", str(EXAMPLES / "order-status.yaml"), "--script", str(script)]
    )
    assert result.exit_code == 1
    assert flat(result.stderr) == f"✗ {script}: a script is a YAML list of steps"
    assert result.stdout == ""
