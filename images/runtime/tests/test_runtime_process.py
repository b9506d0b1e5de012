"""The runtime service runs as a real process and keeps the service contract."""

from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "dialogs"


def test_runtime_process_serves_probes_and_stops_on_sigterm(
    check_service_lifecycle: Any, tmp_path: Path
) -> None:
    proc = check_service_lifecycle(
        "voicetyped_runtime",
        "runtime",
        ["voicetyped.v1.ConversationRuntime"],
        env={
            "VOICETYPED_DIALOGS_DIR": str(EXAMPLES),
            "VOICETYPED_STORE_URL": f"sqlite:///{tmp_path / 'sessions.db'}",
        },
    )
    loaded = {r["dialog"] for r in proc.logs if r["event"] == "dialog loaded"}
    assert loaded == {"order-status", "main-menu", "appointment-confirmation"}
