"""The speech service runs as a real process and keeps the service contract."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from piper import SynthesisConfig
from voicetyped.v1 import speech_pb2
from voicetyped_speech.models.prepare import PrepareResult
from voicetyped_testkit.speech import phone_speech, silence
from voicetyped_testkit.speech_client import MediaSide, RuntimeSide

if TYPE_CHECKING:
    from piper import PiperVoice

FINAL = speech_pb2.TranscriptEvent.KIND_FINAL


def test_speech_process_serves_probes_and_stops_on_sigterm(
    check_service_lifecycle: Any, prepared: PrepareResult
) -> None:
    check_service_lifecycle(
        "voicetyped_speech",
        "speech",
        ["voicetyped.v1.SpeechGateway"],
        env={"VOICETYPED_ASR__MODELS_DIR": str(prepared.models_dir)},
    )


def test_speech_process_refuses_a_missing_model(start_service: Any, tmp_path: Any) -> None:
    proc = start_service(
        "voicetyped_speech", env={"VOICETYPED_ASR__MODELS_DIR": str(tmp_path / "empty")}
    )
    failed = proc.wait_for_log("service failed")
    assert "voicetyped models prepare" in failed["exception"]
    assert proc.proc.wait(10) == 1


async def test_every_line_the_process_writes_is_json(
    start_service: Any, prepared: PrepareResult, voice: PiperVoice
) -> None:
    """Native libraries print to fd 1 and 2 on their own (whisper.cpp's model loading, a
    cancelled decode's "failed to encode"); the process's whole output (stdout and stderr,
    debug level) must still be one JSON object per line. The call drives every decode path:
    partials, speculative finals cancelled by speech after a pause, and decodes stopped at
    their deadline (1 ms, so all of them are)."""
    proc = start_service(
        "voicetyped_speech",
        env={
            "VOICETYPED_ASR__MODELS_DIR": str(prepared.models_dir),
            "VOICETYPED_LOG_LEVEL": "debug",
            "VOICETYPED_ASR__DEADLINE_MS": "1",
            "VOICETYPED_ASR__DEADLINE_MS_PER_AUDIO_S": "0",
            "VOICETYPED_ASR__DEADLINE_FACTOR": "0",
        },
    )
    started = proc.wait_for_log("service started", timeout_s=120)
    quiet = SynthesisConfig(noise_scale=0, noise_w_scale=0)
    pcm = np.concatenate(
        [
            silence(300),
            phone_speech(voice, "I want to check", quiet),
            silence(150),  # a pause: a speculative final starts, the speech goes on
            phone_speech(voice, "the status of my order.", quiet),
            silence(900),
        ]
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{started['grpc_port']}") as channel:
        media = MediaSide(channel, "call-json")
        await media.open()
        runtime = RuntimeSide(channel, "call-json", partials=True)
        runtime.open()
        await media.stream(pcm.tobytes())
        await media.close()
        await runtime.wait_closed()
    code, _ = proc.terminate_and_wait(timeout_s=30)  # parses every line, fails on plain text
    assert code == 0, "".join(proc.raw)
    native = [r["message"] for r in proc.logs if r["event"] == "whisper.cpp"]
    assert any("whisper_init" in m for m in native), "model loading went through the logger"
    assert any(m.endswith(("failed to encode", "failed to decode")) for m in native)
    empty = [
        (r["reason"], r["session_id"]) for r in proc.logs if r["event"] == "final transcript empty"
    ]
    assert empty and set(empty) == {("deadline", "call-json")}, "each final said why it is empty"
