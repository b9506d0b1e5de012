"""A real runtime fed hostile dialog documents, as files and over the admin API.

Each is refused with one line, quickly and without the process growing, and the runtime
keeps serving its other dialog: a call on it is greeted afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from voicetyped_testkit.hostile import GROWTH_BYTES, HOSTILE, REFUSED_WITH, SECONDS
from voicetyped_testkit.processes import eventually

GOOD = """
name: good
initial: greet
settings: {no_input_timeout_ms: 0}
states:
  greet:
    on_enter: [{play_tts: {text: "Still serving."}}]
    terminal: true
"""


def status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak(pid: int) -> int:
    """Set the process's peak RSS mark (VmHWM) to its RSS now, and return that."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return status_bytes(pid, "VmRSS")


async def test_hostile_dialogs_are_refused_and_the_others_still_served(
    rt_peers: ModuleType, peers_up: tuple[Any, Any], tmp_path: Path
) -> None:
    speech, integration = peers_up
    replica = rt_peers.runtime_replica(
        "hostile",
        f"sqlite:///{tmp_path / 'sessions.db'}",
        GOOD,
        integration,
        tmp_path,
        {"VOICETYPED_DIALOG_POLL_S": "0.2"},
    )
    runtime, dialogs = replica.process, tmp_path / "hostile-dialogs"
    grpc_port, http_port = replica.grpc_port, replica.http_port
    admin = httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10)
    media = None
    try:
        runtime.start()
        await runtime.wait_ready(http_port)
        assert runtime.proc is not None
        pid = runtime.proc.pid
        before = reset_peak(pid)

        # Over the admin API: each answered at once with the one line.
        for kind, body in HOSTILE.items():
            start = time.monotonic()
            put = await admin.put(f"/v1/dialogs/{kind}", content=body)
            took = time.monotonic() - start
            assert took < SECONDS, (kind, took)
            assert put.status_code == (413 if kind == "five-megabytes" else 422), put.text
            assert put.json()["issues"] == [f"PUT /v1/dialogs/{kind}: {REFUSED_WITH[kind]}"]

        # As files next to the good one (a ConfigMap update): each rejected, one line.
        for kind, body in HOSTILE.items():
            (dialogs / f"{kind}.yaml").write_bytes(body)

        async def rejected() -> dict[str, str] | None:
            listed = (await admin.get("/v1/dialogs")).json()
            files = listed["rejected_files"]
            return files if len(files) == len(HOSTILE) else None

        files = await eventually(rejected, 10, "every hostile file rejected", runtime)
        for kind in HOSTILE:
            path = dialogs / f"{kind}.yaml"
            assert files[str(path)] == f"dialog is invalid:\n  - {path}: {REFUSED_WITH[kind]}"
        grew = status_bytes(pid, "VmHWM") - before
        assert grew < GROWTH_BYTES, grew

        # Still serving the good dialog.
        listed = (await admin.get("/v1/dialogs")).json()["dialogs"]
        assert [d["name"] for d in listed] == ["good"]
        media = rt_peers.MediaPeer(f"127.0.0.1:{grpc_port}", "call-good", speech.endpoint)
        media.open()
        await eventually(
            lambda: "Still serving." in speech.texts("call-good"), 15, "greeting on good"
        )
    finally:
        if media is not None:
            await media.close()
        await admin.aclose()
        runtime.stop()
