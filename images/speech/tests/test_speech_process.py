"""The speech service runs as a real process and keeps the service contract."""

from typing import Any

from voicetyped_speech.models.prepare import PrepareResult


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
