"""The runtime's admin API and dialog hot reload, on a real runtime process.

Live calls keep the dialog version they started with while new calls get the
new one, whether the dialog is replaced over the API or by editing its file.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from voicetyped_testkit.processes import ServiceProcess, eventually, free_port


def dialog(version: str) -> str:
    return f"""
name: versions
initial: greet
settings: {{no_input_timeout_ms: 0}}
states:
  greet:
    on_enter: [{{play_tts: {{text: "Version {version}."}}}}]
    transitions:
      - event: dtmf
        target: next
  next:
    on_enter: [{{play_tts: {{text: "{version}: next."}}}}]
    terminal: true
"""


async def test_admin_api_and_hot_reload(
    rt_peers: ModuleType, peers_up: tuple[Any, Any], tmp_path: Path
) -> None:
    speech, integration = peers_up
    dialogs = tmp_path / "dialogs"
    dialogs.mkdir()
    dialog_file = dialogs / "versions.yaml"
    dialog_file.write_text(dialog("one"))
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    grpc_port, http_port = free_port(), free_port()
    runtime = ServiceProcess(
        "voicetyped_runtime",
        {
            **os.environ,
            "VOICETYPED_STORE_URL": f"sqlite:///{tmp_path / 'sessions.db'}",
            "VOICETYPED_DIALOGS_DIR": str(dialogs),
            "VOICETYPED_DIALOG_POLL_S": "0.2",
            "VOICETYPED_INTEGRATION_TARGET": integration.endpoint,
            "VOICETYPED_ADMIN_TOKEN_FILE": str(token_file),
            "VOICETYPED_GRPC_HOST": "127.0.0.1",
            "VOICETYPED_GRPC_PORT": str(grpc_port),
            "VOICETYPED_HTTP_HOST": "127.0.0.1",
            "VOICETYPED_HTTP_PORT": str(http_port),
        },
        tmp_path / "runtime.log",
    )
    target = f"127.0.0.1:{grpc_port}"
    auth = {"Authorization": "Bearer s3cret-token"}
    admin = httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=5, headers=auth)
    calls: list[Any] = []

    def call(sid: str) -> Any:
        media = rt_peers.MediaPeer(target, sid, speech.endpoint)
        media.open()
        calls.append(media)
        return media

    try:
        runtime.start()
        await runtime.wait_ready(http_port)
        a = call("call-a")
        await eventually(lambda: "Version one." in speech.texts("call-a"), 15, "call A greeting")
        listed = (await admin.get("/v1/sessions")).json()["sessions"]
        assert [(s["session_id"], s["state"]) for s in listed] == [("call-a", "greet")]
        hash_one = listed[0]["dialog_hash"]
        detail = (await admin.get("/v1/sessions/call-a")).json()
        assert detail["session"]["caller"]["caller_id"] == "+15550100"
        assert [s["event"] for s in detail["history"]] == ["start"]
        unauthorized = await httpx.AsyncClient(base_url=admin.base_url).get("/v1/sessions")
        assert unauthorized.status_code == 401

        # An invalid replacement is refused with the problems named; the old version stays.
        bad = await admin.put(
            "/v1/dialogs/versions", content=dialog("two").replace("target: next", "target: nxt")
        )
        assert bad.status_code == 422
        assert bad.json()["issues"] == [
            "states.greet.transitions[0].target: unknown state 'nxt' (did you mean 'next'?)",
            "states.next: unreachable from the initial state 'greet'",
        ]
        mismatch = await admin.put("/v1/dialogs/other", content=dialog("two"))
        assert mismatch.status_code == 400

        # Replaced over the API: new calls get version two, call A keeps version one.
        put = await admin.put("/v1/dialogs/versions", content=dialog("two"))
        assert put.status_code == 200, put.text
        hash_two = put.json()["hash"]
        assert hash_two != hash_one
        call("call-b")
        await eventually(lambda: "Version two." in speech.texts("call-b"), 10, "call B greeting")
        a.dtmf("5")
        await eventually(
            lambda: "one: next." in speech.texts("call-a"), 10, "call A on its own version"
        )

        # Replaced by editing the file (a ConfigMap update): picked up without a restart.
        dialog_file.write_text(dialog("three"))
        os.utime(dialog_file, (time.time() + 5, time.time() + 5))

        async def current_hash() -> str:
            dialogs_now = (await admin.get("/v1/dialogs")).json()["dialogs"]
            return str(dialogs_now[0]["hash"])

        deadline = time.monotonic() + 10
        while await current_hash() in (hash_one, hash_two):
            assert time.monotonic() < deadline, "dialog file change not picked up"
            await asyncio.sleep(0.1)
        call("call-c")
        await eventually(lambda: "Version three." in speech.texts("call-c"), 10, "call C greeting")
        assert (await admin.get("/v1/sessions/nope")).status_code == 404
    finally:
        for media in calls:
            await media.close()
        await admin.aclose()
        runtime.stop()
