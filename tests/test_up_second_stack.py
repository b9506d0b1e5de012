"""A second `voicetyped up` beside the default one: its own ports (--base-port), the dialog
named with --dialog-name among several, and `voicetyped call` finding that stack's traces by
the SIP port it dials (no --traces, no --runtime-admin). Real processes, as a user types them."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import urllib.request
from pathlib import Path

from voicetyped_dev.caller.match import says
from voicetyped_speech.models.prepare import default_models_dir, prepare_models
from voicetyped_testkit.processes import free_port_block, free_sip_port
from voicetyped_testkit.up_process import VOICETYPED, VoicetypedUp

REPO = Path(__file__).resolve().parents[1]


def _dialog(directory: Path, name: str) -> None:
    (directory / f"{name}.yaml").write_text(
        textwrap.dedent(
            f"""
            name: {name}
            initial: greet
            settings: {{no_input_timeout_ms: 8000}}
            states:
              greet:
                on_enter: [{{play_tts: {{text: "Say something to the {name} dialog."}}}}]
                transitions: [{{event: speech, target: bye}}]
              bye:
                on_enter: [{{play_tts: {{text: "This was the {name} dialog. Goodbye."}}}}]
                terminal: true
            """
        )
    )


def test_up_with_base_port_and_dialog_name_then_call_finds_its_traces(tmp_path: Path) -> None:
    models = prepare_models(default_models_dir()).models_dir
    env = {**os.environ, "VOICETYPED_CACHE": str(tmp_path), "VOICETYPED_MODELS_DIR": str(models)}
    dialogs = tmp_path / "dialogs"
    dialogs.mkdir()
    for name in ("first", "second", "third"):
        _dialog(dialogs, name)
    base, sip_port = free_port_block(9), free_sip_port()
    run_dir = tmp_path / "second-stack"
    options = [
        "--dialog", str(dialogs), "--dialog-name", "second", "--no-backend",
        "--base-port", str(base), "--sip-port", str(sip_port), "--run-dir", str(run_dir),
    ]  # fmt: skip
    with VoicetypedUp(options, REPO, env) as up:
        script = tmp_path / "call.yaml"
        script.write_text('- listen: {}\n- say: "hello there"\n- expect: "second dialog"\n')
        call = subprocess.run(
            [*VOICETYPED, "call", "--target", f"sip:bot@127.0.0.1:{sip_port}",
             "--script", str(script), "--json"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert call.returncode == 0, call.stdout[-3000:] + call.stderr[-3000:]
        result = json.loads(call.stdout.strip().splitlines()[-1])
        assert result["failures"] == [] and result["ended_by_bot"], result
        assert says(result["turns"][0]["bot"], "second dialog").matched, result["turns"]
        # The stage table's spans came from this stack's run directory, found by the port.
        said = result["turns"][1]
        # The caller's Whisper hears the last prompt ("... dialog. Goodbye.") as "Goodbye" or
        # "Bye bye": either way its words, and the second dialog's, not the first's.
        assert "bye" in said["bot"].lower() and says(said["bot"], "second").matched, said
        assert "network" in said["stages_ms"], said
        assert said["heard"], said  # from its runtime's admin API (base + 2)
        # Its live call console, on the runtime's HTTP port, printed by `up`, listed the call.
        console = f"http://127.0.0.1:{base + 2}/console/"
        assert f"console: {console}" in up.output, up.output[-3000:]
        with urllib.request.urlopen(console, timeout=5) as page:
            assert b"live calls" in page.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{base + 2}/v1/console/calls") as listing:
            calls = json.loads(listing.read())["calls"]
        assert [(c["dialog"], c["status"], c["data"]) for c in calls] == [
            ("second", "ended", "dropped")
        ], calls
    assert up.exit_code == 0, up.output[-5000:]
    assert not (run_dir / "stack.json").exists()  # unregistered on the way out
