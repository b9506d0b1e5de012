"""The media service runs as a real process and keeps the service contract."""

from typing import Any


def test_media_process_serves_probes_and_stops_on_sigterm(check_service_lifecycle: Any) -> None:
    check_service_lifecycle("voicetyped_media", "media", [], env={"VOICETYPED_SIP_PORT": "0"})
