"""A runtime replica drained with a call up hands it over: the media stream is told to reattach
(an error status, not a normal end, which the media gateway would read as the call's end), and
another replica resumes the stored call where it was.

Real processes: two runtime replicas sharing a real Redis, the first stopped with SIGTERM (a pod
deletion or a rollout) while the call waits for the caller.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
from voicetyped_testkit.processes import eventually

DIALOG = """
name: handover-test
initial: greet
settings: {no_input_timeout_ms: 0}
states:
  greet:
    on_enter: [{play_tts: {text: "Hello, press 1 to continue."}}]
    transitions:
      - event: dtmf
        condition: 'digit == "1"'
        target: done
  done:
    on_enter: [{play_tts: {text: "You pressed one."}}, {hangup: {}}]
    terminal: true
"""


async def test_a_drained_replica_hands_its_call_to_another(
    redis_url: str, rt_peers: ModuleType, peers_up: tuple[Any, Any], tmp_path: Path
) -> None:
    speech, integration = peers_up
    first = rt_peers.runtime_replica("runtime-a", redis_url, DIALOG, integration, tmp_path)
    second = rt_peers.runtime_replica("runtime-b", redis_url, DIALOG, integration, tmp_path)
    # The drain lets live calls finish for about the grace (3 s), then hands them over.
    sid = "call-handover-1"
    media = rt_peers.MediaPeer(first.target, sid, speech.endpoint)
    try:
        for replica in (first, second):
            replica.process.start()
            await replica.process.wait_ready(replica.http_port)
        media.open()
        await eventually(
            lambda: "Hello, press 1 to continue." in speech.texts(sid),
            15,
            "greeting",
            first.process,
        )
        assert first.process.proc is not None
        first.process.proc.terminate()  # SIGTERM: drain, then hand the waiting call over
        await eventually(lambda: media.ended.is_set(), 15, "the stream to end", first.process)
        assert media.error is not None, "the stream ended OK: the media gateway would drop the call"
        assert media.error.code() == grpc.StatusCode.UNAVAILABLE, media.error
        assert not any(c.HasField("hangup") for c in media.commands)
        proc = first.process.proc
        await eventually(lambda: proc.poll() is not None, 15, "the replica to exit", first.process)
        assert proc.returncode == 0, first.process.tail()

        # The media gateway reattaches (through the Service: here, the other replica).
        media.target = second.target
        media.open(reattach=True)
        media.dtmf("1")
        await eventually(
            lambda: "You pressed one." in speech.texts(sid), 15, "resumed", second.process
        )
        await eventually(
            lambda: any(c.HasField("hangup") for c in media.commands), 10, "hangup", second.process
        )
        assert speech.texts(sid).count("Hello, press 1 to continue.") == 1, "restarted"
        # Each replica told the speech gateway what the caller is expected to say: the first on
        # entering greet, the second on resuming there, then on entering done.
        assert speech.expected_states(sid) == ["greet", "greet", "done"]
    finally:
        await media.close()
        first.process.stop()
        second.process.stop()
