"""docs/dialogs.md, "Your first dialog", as a newcomer follows it: its files written as shown,
every ``$`` command run in order in a directory of its own (real processes: the CLI, then
``voicetyped up`` with the dialog and ``voicetyped call`` against it).

Only what keeps the run apart from the rest of the machine is added to the commands: ``up``
gets free ports and a run directory of its own, ``call`` the SIP port ``up`` listens on and
``--json`` (to read the result); the models prepared once are reused (test_make_demo prepares
them from nothing).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

from voicetyped_dev.caller.match import says
from voicetyped_speech.models.prepare import default_models_dir, prepare_models
from voicetyped_testkit.processes import free_port_block, free_sip_port
from voicetyped_testkit.up_process import VOICETYPED, VoicetypedUp

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "dialogs.md"
SECTION = ("## Your first dialog", "## The document")


def walkthrough() -> tuple[dict[str, str], list[list[str]]]:
    """The section's files (``# file: NAME`` blocks) and its commands, in order."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(SECTION[0]) : text.index(SECTION[1])]
    files = {
        m.group(1): m.group(2)
        for m in re.finditer(r"```yaml\n# file: (\S+)\n(.*?)```", section, re.S)
    }
    commands = [
        shlex.split(line.removeprefix("$ "))
        for block in re.findall(r"```console\n(.*?)```", section, re.S)
        for line in block.splitlines()
        if line.startswith("$ ")
    ]
    return files, commands


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert argv[0] == "voicetyped", argv
    return subprocess.run(
        [*VOICETYPED, *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def test_the_walkthrough_has_what_it_promises() -> None:
    files, commands = walkthrough()
    assert set(files) == {"library-hours.yaml", "library-hours.test.yaml", "call.yaml"}
    assert [c[:3] for c in commands] == [
        ["voicetyped", "dialog", "validate"],
        ["voicetyped", "dialog", "simulate"],
        ["voicetyped", "up", "--dialog"],
        ["voicetyped", "call", "--script"],
    ]


def test_the_misspelling_it_shows_is_reported_as_it_says(tmp_path: Path) -> None:
    files, _ = walkthrough()
    section = DOC.read_text(encoding="utf-8")
    shown = re.search(r"gives\s+`(states\.hours[^`]+)`", section)
    assert shown is not None
    dialog = files["library-hours.yaml"].replace('text: "We are open', 'txt: "We are open')
    (tmp_path / "library-hours.yaml").write_text(dialog, encoding="utf-8")
    result = run(
        ["voicetyped", "dialog", "validate", "library-hours.yaml"], tmp_path, {**os.environ}
    )
    assert result.returncode == 1
    assert shown.group(1) in " ".join(result.stderr.split()), result.stderr


def test_your_first_dialog_from_writing_to_calling(tmp_path: Path) -> None:
    files, commands = walkthrough()
    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    models = prepare_models(default_models_dir()).models_dir
    env = {
        **os.environ,
        "VOICETYPED_CACHE": str(tmp_path / "cache"),
        "VOICETYPED_MODELS_DIR": str(models),
    }
    validate, simulate, up, call = commands

    result = run(validate, tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓ library-hours.yaml: dialog 'library-hours', 3 states" in result.stdout

    result = run(simulate, tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "final state: hours" in result.stdout

    sip_port = free_sip_port()
    options = [*up[2:], "--sip-port", str(sip_port), "--base-port", str(free_port_block(9))]
    with VoicetypedUp([*options, "--run-dir", str(tmp_path / "run")], tmp_path, env) as stack:
        result = run([*call, "--target", f"sip:bot@127.0.0.1:{sip_port}", "--json"], tmp_path, env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert stack.exit_code == 0, stack.output[-5000:]
    assert "Traceback" not in stack.output, stack.output[-5000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["failures"] == [] and outcome["ended_by_bot"], outcome
    said = [t for t in outcome["turns"] if t["caller"] != "(listening)"]
    assert [t["caller"] for t in said] == ["Yes, please."]
    assert "yes" in " ".join(said[0]["heard"]).lower(), said  # what the recogniser heard
    assert says(said[0]["bot"], "monday to friday").matched, said
