"""A call survives SIGKILL of the runtime: same state, timers on their original deadlines,
an in-flight backend call resent with the same idempotency key, and the call completes.

Everything is real: the runtime runs as its own process (killed with SIGKILL and
started again), its store is a real Redis server, and its peers are gRPC servers
and a client speaking the voicetyped.v1 contracts.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from voicetyped_testkit.processes import eventually

# Long enough that the hold is still pending after a SIGKILL and a restart on a loaded machine
# (under stress-ng --cpu 2 the kill, restart and reattach took 14 s).
HOLD_MS = 30000

DIALOG = f"""
name: restart-test
initial: greet
settings: {{no_input_timeout_ms: 0}}
states:
  greet:
    on_enter: [{{play_tts: {{text: "Hello, press 1 to continue."}}}}]
    transitions:
      - event: dtmf
        condition: 'digit == "1"'
        target: waiting
  waiting:
    on_enter:
      - start_timer: {{name: hold, ms: {HOLD_MS}}}
      - play_tts: {{text: "Please hold."}}
    transitions:
      - event: timeout
        timer: hold
        target: lookup
  lookup:
    on_enter:
      - call_hook: {{service: shop, method: get_order, payload: {{order: 42}}, timeout_ms: 60000}}
    transitions:
      - event: backend_result
        target: done
  done:
    on_enter:
      - play_tts: {{text: "Your order has {{{{ result.status }}}}."}}
    terminal: true
"""


async def test_call_survives_sigkill(
    redis_url: str, rt_peers: ModuleType, peers_up: tuple[Any, Any], tmp_path: Path
) -> None:
    speech, integration = peers_up
    replica = rt_peers.runtime_replica("runtime-0", redis_url, DIALOG, integration, tmp_path)
    runtime, grpc_port, http_port = replica.process, replica.grpc_port, replica.http_port
    sid = "call-restart-1"
    media = rt_peers.MediaPeer(f"127.0.0.1:{grpc_port}", sid, speech.endpoint)
    admin = httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=5)

    async def live() -> dict[str, Any] | None:
        """The session once the runtime holds it (a reattach loads it from Redis meanwhile)."""
        reply = await admin.get(f"/v1/sessions/{sid}")
        return reply.json() if reply.status_code == 200 else None

    async def session() -> dict[str, Any]:
        data = await live()
        assert data is not None, "no live session"
        return data

    async def ready() -> None:
        await runtime.wait_ready(http_port)

    try:
        # 1. A call reaches the waiting state with its hold timer armed.
        runtime.start()
        await ready()
        media.open()
        await eventually(
            lambda: "Hello, press 1 to continue." in speech.texts(sid), 15, "greeting", runtime
        )
        media.dtmf("1")
        await eventually(lambda: "Please hold." in speech.texts(sid), 10, "hold prompt", runtime)
        before = await session()
        assert before["session"]["state"] == "waiting"
        hold_deadline_ms = before["timers"]["hold"]["deadline_ms"]

        # 2. SIGKILL mid-dialog; a new process resumes from Redis and the media stream reattaches.
        runtime.kill()
        await eventually(lambda: media.ended.is_set(), 10, "media stream to notice the kill")
        runtime.start()
        await ready()
        media.open(reattach=True)
        after = await eventually(live, 10, "the session back after the reattach", runtime)
        assert after["session"]["state"] == "waiting"
        assert after["timers"]["hold"]["deadline_ms"] == hold_deadline_ms
        assert after["session"]["events"] == before["session"]["events"]

        # 3. The timer fires on its original deadline and the backend call goes out.
        integration.delay_s = 120.0  # keep it in flight
        first = await eventually(
            lambda: integration.received, HOLD_MS / 1000 + 10, "the backend call", runtime
        )
        assert abs(first[0].at - hold_deadline_ms / 1000) < 1.5, "timer did not keep its deadline"
        key = first[0].key
        assert key.startswith(f"{sid}:")
        assert (first[0].service, first[0].method, first[0].payload) == (
            "shop",
            "get_order",
            {"order": 42},
        )

        # 4. SIGKILL with the backend call in flight: the new process resends the same key.
        runtime.kill()
        integration.delay_s = 0.0
        runtime.start()
        await ready()
        media.open(reattach=True)
        await eventually(
            lambda: len(integration.received) >= 2, 15, "the resent backend call", runtime
        )
        assert [r.key for r in integration.received] == [key, key]

        # 5. The call completes: result spoken, hangup sent to the media gateway, state removed.
        await eventually(
            lambda: "Your order has shipped." in speech.texts(sid), 10, "result prompt", runtime
        )
        await eventually(
            lambda: any(c.HasField("hangup") for c in media.commands), 10, "hangup", runtime
        )
        await eventually(lambda: media.ended.is_set(), 10, "stream end")
        gone = await admin.get(f"/v1/sessions/{sid}")
        assert gone.status_code == 404
        assert speech.texts(sid).count("Hello, press 1 to continue.") == 1, (
            "dialog restarted from scratch"
        )
    finally:
        await media.close()
        await admin.aclose()
        runtime.stop()
