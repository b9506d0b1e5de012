"""`make demo` as a new user runs it: nothing prepared in an empty cache directory, the models
prepared (with progress lines) before any service starts, the conversation printed.

The Makefile's own recipe runs (``make -o install -o system-deps demo``: the workspace this test
runs in is already installed, and its Debian packages are there)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_make_demo_from_an_empty_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VOICETYPED_MODELS_DIR", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")
    }
    env["VOICETYPED_CACHE"] = str(cache)
    done = subprocess.run(
        ["make", "--no-print-directory", "-o", "install", "-o", "system-deps", "demo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout
    assert done.returncode == 0, f"{out[-6000:]}\n{done.stderr[-3000:]}"

    # The models were prepared into the empty cache, announced, before the services started.
    manifest = json.loads((cache / "models" / "manifest.json").read_text())
    assert manifest["asr"], manifest
    assert all(entry["verification"]["passed"] is True for entry in manifest["asr"].values())
    converting = out.index("converting Whisper")
    assert converting < out.index("verifying Whisper") < out.index("up in"), out
    speech_log = (cache / "run" / "demo" / "logs" / "speech.log").read_text()
    assert "not found" not in speech_log, speech_log[-3000:]

    # The conversation, the backend request and the latency summary.
    lowered = " ".join(out.split()).lower()
    for heard in ("thanks for calling", "order number", "has shipped", "goodbye"):
        assert heard in lowered, out
    assert "caller  My order number is four eight two one three." in out, out
    assert "GET /api/orders/48213 -> 200" in out, out
    assert "turn latency (caller stops speaking -> first bot audio): p50" in out, out
    assert "✗" not in out, out
