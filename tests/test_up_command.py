"""The README's "same pieces, by hand": `voicetyped up` in one terminal, `voicetyped call` in
another, Ctrl-C to stop. Run as the commands a user types (real processes, the default ports
of `voicetyped up`, a SIP port of its own)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

from voicetyped_specs.dialog.spoken import spoken_digits
from voicetyped_speech.models.prepare import default_models_dir, prepare_models
from voicetyped_testkit.processes import free_sip_port
from voicetyped_testkit.up_process import VOICETYPED, VoicetypedUp

REPO = Path(__file__).resolve().parents[1]


def test_voicetyped_up_then_call_then_ctrl_c(tmp_path: Path) -> None:
    # Preparing the models from nothing is test_make_demo's business: reuse a prepared copy.
    models = prepare_models(default_models_dir()).models_dir
    env = {**os.environ, "VOICETYPED_CACHE": str(tmp_path), "VOICETYPED_MODELS_DIR": str(models)}
    sip_port = free_sip_port()
    with VoicetypedUp(["--sip-port", str(sip_port)], REPO, env) as up:
        assert "already prepared" in up.output, up.output
        # The call page for browser calls (WebRTC), served by the media gateway.
        deadline = time.monotonic() + 10  # the line after "voicetyped is up"
        while "/call/" not in up.output and time.monotonic() < deadline:
            time.sleep(0.05)
        page = re.search(r"browser calls: (http://127\.0\.0\.1:\d+/call/)", up.output)
        assert page is not None, up.output[-3000:]
        with urllib.request.urlopen(page.group(1), timeout=5) as reply:
            assert b"Call this dialog" in reply.read()
        call = subprocess.run(
            [
                *VOICETYPED,
                "call",
                "--target",
                f"sip:bot@127.0.0.1:{sip_port}",
                "--script",
                "examples/calls/order-status.yaml",
                "--json",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert call.returncode == 0, call.stdout[-3000:] + call.stderr[-3000:]
        result = json.loads(call.stdout.strip().splitlines()[-1])
        assert result["failures"] == [] and result["ended_by_bot"], result
        lookups = [(c["method"], c["path"]) for c in result["backend_calls"]]
        assert ("GET", "/api/orders/48213") in lookups, result["backend_calls"]
        # Every answered turn has its stages from the services' spans.
        answered = [t for t in result["turns"][1:] if t["bot"]]
        assert answered and all("network" in t["stages_ms"] for t in answered), answered
        # And what the recogniser heard, from the runtime's admin API during the call.
        said = [t for t in result["turns"] if t["caller"] != "(listening)"]
        assert said and all(t["heard"] for t in said), said
        number = next(t for t in said if "four eight two one three" in t["caller"])
        assert spoken_digits(" ".join(number["heard"])) == "48213", number
    assert up.exit_code == 0, up.output[-5000:]  # Ctrl-C
    assert "Traceback" not in up.output, up.output[-5000:]
