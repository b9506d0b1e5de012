"""Settings of the runtime service (see voicetyped.service.config for the common ones)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from voicetyped.service.config import ServiceSettings

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class ConsoleSettings(BaseModel):
    """The live call console (``/console/``, ``/v1/console/...`` on the HTTP port): read-only,
    off by default. See docs/console.md."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Serve the console on the HTTP port.")
    token_file: Path | None = Field(
        None,
        description="Bearer token the console's JSON and event stream require (a Secret "
        "mount). Required when enabled and http_host is not a loopback address.",
    )
    mask_callers: bool = Field(
        False, description="Show only the last 2 characters of caller ids in the console."
    )
    recent_calls: int = Field(50, ge=0, le=10_000, description="Ended calls kept listed.")


class RuntimeSettings(ServiceSettings):
    # Distinct default ports let all four services run side by side on one machine.
    http_port: int = Field(8083, ge=0, le=65535)
    grpc_port: int = Field(50063, ge=0, le=65535)

    store_url: str = Field(
        "sqlite:///voicetyped-runtime.db",
        description="Where live sessions are kept: sqlite:///<relative path>, "
        "sqlite:////<absolute path>, redis://host:6379/0 or rediss://...",
    )
    redis_password_file: Path | None = Field(None, description="Redis password (Secret mount).")
    dialogs_dir: Path | None = Field(
        None, description="Directory of dialog YAML files (the Dialog ConfigMap mount)."
    )
    dialog_poll_s: float = Field(2.0, gt=0, description="How often dialogs_dir is re-read.")
    intent_model_dir: Path | None = Field(
        None, description="Sentence-embedding model directory; default: the bundled MiniLM."
    )
    integration_target: str = Field(
        "127.0.0.1:50064", description="host:port of the integration gateway."
    )
    replica_id: str = Field(
        default_factory=socket.gethostname,
        description="This replica's identity for session leases (the pod name).",
    )
    lease_s: float = Field(15.0, gt=1, description="Session ownership lease; renewed at 1/3.")
    session_ttl_s: float = Field(
        1800.0,
        gt=10,
        description="A live session's stored state (with its transcripts) expires this long "
        "after its last save, if the runtime never comes back to it.",
    )
    media_reattach_s: float = Field(
        30.0, gt=0, description="How long a call without a media stream waits for it to return."
    )
    admin_token_file: Path | None = Field(
        None, description="Bearer token for the admin API; unset: no authentication."
    )
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    @model_validator(mode="after")
    def _console_guarded(self) -> Self:
        c = self.console
        if c.enabled and c.token_file is None and self.http_host not in LOOPBACK_HOSTS:
            raise ValueError(
                f"the console is enabled on http_host {self.http_host!r}, which is not a "
                "loopback address: set console.token_file (VOICETYPED_CONSOLE__TOKEN_FILE, a "
                "bearer token from a Secret) or bind http_host to 127.0.0.1"
            )
        return self
