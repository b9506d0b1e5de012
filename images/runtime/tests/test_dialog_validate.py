"""``voicetyped dialog validate``: every problem of a dialog in one run, and the exit codes."""

from __future__ import annotations

import textwrap
from pathlib import Path

from typer.testing import CliRunner
from voicetyped_runtime.cli import app
from voicetyped_testkit.footprint import measure
from voicetyped_testkit.hostile import GROWTH_BYTES, HOSTILE, REFUSED_WITH, SECONDS

runner = CliRunner()

# A refill line written the way a newcomer would: shape mistakes (misspelt fields, a bad
# enum value, an action that is none) and expression/template/target mistakes in five states,
# their actions and transitions.
MANY_MISTAKES = """\
name: refill
initial: welcome
settings:
  no_input_timeout: 5000
vars: {retries: 0}
states:
  welcome:
    on_enter:
      - play_tts: {text: "Welcome {{ caller.id }", bargein: allow}
      - start_timer: {name: nag, seconds: 5}
      - collect_digits: {max_digit: 6}
    transitions:
      - {event: digits, target: lookp, condtion: 'true'}
      - event: timeout
        timer: nag
        target: welcome
        actions: [{play_tts: {txt: "Still there?"}}]
      - {event: dtmf, condition: 'digit = "0"', target: agent}
  lookup:
    on_enter:
      - call_hook: {service: pharmacy, method: refill, timeout: 3000}
      - say: {text: "One moment"}
    transitions:
      - {event: backend_result, outcome: sucess, target: done}
      - {event: backend_result, outcome: error, target: done}
  agent:
    on_enter:
      - start_timer: {name: no_input, ms: 4000}
      - transfer: {target: "pharmacist"}
  done:
    on_enter:
      - hangup: {reason: 16}
    terminal: true
    no_input_timeout: 0
"""

EXPECTED = [
    "settings.no_input_timeout: unknown field (did you mean 'no_input_timeout_ms'?)",
    "states.welcome.on_enter[0].play_tts.bargein: unknown field (did you mean 'barge_in'?)",
    "states.welcome.on_enter[1].start_timer.seconds: unknown field (did you mean 'ms'?)",
    "states.welcome.on_enter[2].collect_digits.max_digit: unknown field "
    "(did you mean 'max_digits'?)",
    "states.welcome.transitions[0].condtion: unknown field (did you mean 'condition'?)",
    "states.welcome.transitions[1].actions[0].play_tts.txt: unknown field (did you mean 'text'?)",
    "states.lookup.on_enter[0].call_hook.timeout: unknown field (did you mean 'timeout_ms'?)",
    "states.lookup.on_enter[1]: unknown action 'say'; expected one of "
    "play_tts, transfer, hangup, call_hook, set, collect_digits, start_timer, cancel_timer, llm",
    "states.lookup.transitions[0].outcome: Input should be 'success', 'error' or 'any' "
    "(did you mean 'success'?)",
    "states.done.on_enter[0].hangup.reason: unknown field (did you mean 'reason_code'?)",
    "states.done.no_input_timeout: unknown field (did you mean 'no_input_timeout_ms'?)",
    "states.welcome.on_enter[0].play_tts.text: unclosed {{ in template 'Welcome {{ caller.id }'",
    "states.welcome.transitions[0].target: unknown state 'lookp' (did you mean 'lookup'?)",
    "states.welcome.transitions[2].condition: Syntax error: token recognition error at: '= ' "
    "at column 7 of 'digit = \"0\"'",
    "states.agent.on_enter[0].start_timer.name: 'no_input' is a built-in timer: the runtime "
    "starts it; set its length with settings.no_input_timeout_ms (or a state's "
    "no_input_timeout_ms)",
    "states.agent.on_enter[1].transfer.target: 'pharmacist' is not a sip:, sips: or tel: URI",
]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_every_mistake_is_reported_in_one_run_with_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, "refill.yaml", MANY_MISTAKES)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = [line.strip() for line in result.stderr.splitlines()]
    assert lines[0] == f"✗ {path}: {len(EXPECTED)} problem(s)"
    # One line per problem (a CEL error adds its caret lines, which start with "|" or "ERROR").
    problems = [line for line in lines[1:] if line.startswith(("settings.", "states."))]
    assert len(problems) == len(EXPECTED)
    for expected in EXPECTED:
        assert any(line.startswith(expected) for line in problems), expected
    # Shape mistakes keep the whole-dialog checks for the next run, and the output says so.
    assert lines[-1] == (
        "(reachability, variables, timers and intents are checked once the shape problems "
        "are fixed)"
    )


def test_whole_dialog_problems_follow_in_the_next_run(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "next.yaml",
        """\
        name: next
        initial: ask
        states:
          ask:
            on_enter:
              - play_tts: {text: "Hello {{ vars.who }}"}
            transitions:
              - {event: timeout, timer: nag, target: ask}
              - {event: speech, target: bye}
          bye: {terminal: true}
          orphan: {terminal: true}
        """,
    )
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert [line.strip() for line in result.stderr.splitlines()] == [
        f"✗ {path}: 3 problem(s)",
        "states.orphan: unreachable from the initial state 'ask'",
        "states.ask.on_enter[0].play_tts.text: vars.who is not declared under vars:; declare it "
        "with an initial value",
        "states.ask.transitions[0].timer: timer 'nag' is never started",
    ]


def test_valid_exits_0_and_invalid_exits_1_with_every_file_reported(tmp_path: Path) -> None:
    good = write(
        tmp_path,
        "good.yaml",
        """\
        name: good
        initial: bye
        states:
          bye:
            on_enter: [{play_tts: {text: "Bye"}}]
            terminal: true
        """,
    )
    bad = write(tmp_path, "bad.yaml", "name: bad\ninitial: x\nstates: {x: {terminl: true}}\n")
    ok = runner.invoke(app, ["validate", str(good)])
    assert ok.exit_code == 0
    assert ok.stderr == ""
    assert ok.stdout.startswith(f"✓ {good}: dialog 'good', 1 states, hash ")

    both = runner.invoke(app, ["validate", str(bad), str(good)])
    assert both.exit_code == 1
    assert ok.stdout.strip() in both.stdout
    assert [line.strip() for line in both.stderr.splitlines()] == [
        f"✗ {bad}: 1 problem(s)",
        "states.x.terminl: unknown field (did you mean 'terminal'?)",
        "(reachability, variables, timers and intents are checked once the shape problems "
        "are fixed)",
    ]


# ---- hostile files ----------------------------------------------------------------------

GOOD = """\
name: good
initial: bye
states:
  bye:
    on_enter: [{play_tts: {text: "Bye"}}]
    terminal: true
"""


def test_every_dialog_command_refuses_hostile_files_quickly(tmp_path: Path) -> None:
    files = {kind: tmp_path / f"{kind}.yaml" for kind in HOSTILE}
    for kind, path in files.items():
        path.write_bytes(HOSTILE[kind])
    script = write(tmp_path, "steps.yaml", "- press: '1'\n")
    commands = {"validate": [], "graph": [], "simulate": ["--script", str(script)]}
    calls = {
        f"{command} {kind}": f"_cli({[command, str(path), *extra]!r})"
        for command, extra in commands.items()
        for kind, path in files.items()
    }
    # The CLI's own process: the typer app called in place, its exit code the outcome.
    found = measure(
        """
        from typer.testing import CliRunner
        from voicetyped_runtime.cli import app
        runner = CliRunner()

        def _cli(args):
            result = runner.invoke(app, args)
            return (result.exit_code, " ".join(result.stderr.split()))
        """,
        calls,
    )
    for label, footprint in found.items():
        kind = label.split()[1]
        path = files[kind]
        assert footprint.outcome == repr(
            (1, f"✗ {path}: 1 problem(s) {path}: {REFUSED_WITH[kind]}")
        ), label
        assert footprint.seconds < SECONDS, (label, footprint)
        assert footprint.grew_bytes < GROWTH_BYTES, (label, footprint)


def test_a_hostile_simulator_script_is_one_line(tmp_path: Path) -> None:
    dialog = write(tmp_path, "good.yaml", GOOD)
    script = tmp_path / "steps.yaml"
    script.write_bytes(HOSTILE["not-utf8"])
    result = runner.invoke(app, ["simulate", str(dialog), "--script", str(script)])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"✗ {script}: {REFUSED_WITH['not-utf8']}"
