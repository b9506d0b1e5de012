"""Settings of the integration service (see voicetyped.service.config for the common ones)."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field
from voicetyped.service.config import ServiceSettings


class IntegrationSettings(ServiceSettings):
    # Distinct default ports let all four services run side by side on one machine.
    http_port: int = Field(8084, ge=0, le=65535)
    grpc_port: int = Field(50064, ge=0, le=65535)

    integrations_dir: Path | None = Field(
        None, description="Directory of Integration YAML files (the operator's ConfigMap mount)."
    )
    integrations_poll_s: float = Field(2.0, gt=0, description="How often the directory is re-read.")
    store_url: str = Field(
        "sqlite:///voicetyped-idempotency.db",
        description="Idempotency store: sqlite:///<relative>, sqlite:////<absolute>, redis://...",
    )
    redis_password_file: Path | None = None
    retention_s: float = Field(
        24 * 3600.0, gt=0, description="How long a finished action's result answers repeats."
    )
    owner_id: str = Field(
        default_factory=socket.gethostname, description="This replica's identity (pod name)."
    )
    admin_token_file: Path | None = Field(
        None, description="Bearer token for the admin API; unset: no authentication."
    )
