"""The integration service runs as a real process and keeps the service contract."""

from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "integrations"


def test_integration_process_serves_probes_and_stops_on_sigterm(
    check_service_lifecycle: Any, tmp_path: Path
) -> None:
    proc = check_service_lifecycle(
        "voicetyped_integration",
        "integration",
        ["voicetyped.v1.IntegrationGateway"],
        env={
            "VOICETYPED_INTEGRATIONS_DIR": str(EXAMPLES),
            "VOICETYPED_STORE_URL": f"sqlite:///{tmp_path / 'idempotency.db'}",
        },
    )
    loaded = {r["integration"] for r in proc.logs if r["event"] == "integration loaded"}
    assert loaded == {"shop", "clinic"}
