"""The speech replica holding a call's audio goes away mid-prompt: once the media gateway says
where the call's audio stream went (``CallEvent.speech_moved``), the runtime's Converse stream
moves there, the prompt that never finished is played there from its start, and the dialog
goes on (both streams name the dialog's recognition language). The runtime is the real process
(its store a real Redis server); its peers speak the voicetyped.v1 contracts."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from voicetyped_testkit.processes import eventually

GREETING = "Hello, what can I do for you?"
GOODBYE = "Thank you, goodbye."
DIALOG = f"""
name: moved-test
initial: greet
settings: {{no_input_timeout_ms: 0, language: es}}
states:
  greet:
    on_enter: [{{play_tts: {{text: "{GREETING}"}}}}]
    transitions:
      - event: speech
        target: done
  done:
    on_enter: [{{play_tts: {{text: "{GOODBYE}"}}}}]
    terminal: true
"""


async def test_converse_moves_to_the_new_speech_replica_and_the_dialog_goes_on(
    redis_url: str, rt_peers: ModuleType, peers_up: tuple[Any, Any], tmp_path: Path
) -> None:
    lost, integration = peers_up
    lost.play_s = 3600.0  # the greeting is still playing when its replica goes
    other = rt_peers.SpeechPeer()
    await other.server.start()
    replica = rt_peers.runtime_replica("runtime-0", redis_url, DIALOG, integration, tmp_path)
    runtime, grpc_port, http_port = replica.process, replica.grpc_port, replica.http_port
    sid = "call-moved-1"
    media = rt_peers.MediaPeer(f"127.0.0.1:{grpc_port}", sid, lost.endpoint)
    admin = httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=5)

    async def endpoint() -> str:
        reply = await admin.get(f"/v1/sessions/{sid}")
        return str(reply.json()["speech_endpoint"]) if reply.status_code == 200 else ""

    try:
        runtime.start()
        await runtime.wait_ready(http_port)
        media.open()
        await eventually(lambda: lost.texts(sid) == [GREETING], 15, "the greeting", runtime)
        assert await endpoint() == lost.endpoint

        # The replica is gone: the runtime's stream to it breaks and is redialled...
        await lost.server.stop(0)
        await eventually(
            lambda: "speech stream broken" in runtime.log.read_text(), 10, "the break", runtime
        )
        # ...until the media gateway says where the call's audio stream is now.
        media.speech_moved(other.endpoint)
        await eventually(lambda: other.opened == [sid], 10, "Converse on the new replica", runtime)
        await eventually(lambda: other.texts(sid) == [GREETING], 10, "the replayed greeting")
        assert await endpoint() == other.endpoint

        # The greeting finishes there, the caller answers, the dialog ends as usual.
        await eventually(lambda: sid in other.streams, 5, "the update stream")
        other.say(sid, "where is my order", "u1")
        await eventually(lambda: GOODBYE in other.texts(sid), 10, "the goodbye", runtime)
        await eventually(
            lambda: any(c.HasField("hangup") for c in media.commands), 10, "hangup", runtime
        )
        assert other.texts(sid) == [GREETING, GOODBYE]
        assert other.opened == [sid], "Converse reopened on the new replica"
        # Each Converse stream names the dialog's recognition language.
        assert lost.languages[sid] == other.languages[sid] == "es"
        assert lost.texts(sid) == [GREETING]
        # The recognition context moved with the stream: the new replica got greet's (with the
        # question the caller heard) before the caller answered, then done's.
        assert lost.expected_states(sid) == ["greet"]
        assert other.expected_states(sid) == ["greet", "done"]
        assert other.contexts[0][1].prompt == GREETING
    finally:
        await media.close()
        await admin.aclose()
        await other.server.stop(0)
        runtime.stop()
