"""The operator's own settings: ``VOICETYPED_OPERATOR_*`` environment variables (chart-set)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from voicetyped_operator import __version__


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VOICETYPED_OPERATOR_", extra="forbid", frozen=True
    )

    namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces to watch (JSON list); empty: the whole cluster.",
    )
    image_registry: str = Field(
        "voicetyped", description="Default image repository prefix: <registry>/<service>:<tag>."
    )
    image_tag: str = Field(__version__, description="Default image tag (the chart's appVersion).")
    field_manager: str = Field("voicetyped-operator", description="Server-side apply manager.")
    resync_seconds: float = Field(
        300.0,
        gt=0,
        description="Re-apply every VoiceDeployment this often (drift of unwatched fields).",
    )
    dependency_retry_seconds: float = Field(
        10.0, gt=0, description="Retry delay while a Dialog, Integration or Secret is missing."
    )
    api_retry_seconds: float = Field(
        2.0, gt=0, description="First retry delay after a transient API error (doubles, capped)."
    )
    api_retry_max_seconds: float = Field(60.0, gt=0, description="Cap of that delay.")
    status_debounce_seconds: float = Field(
        0.2, ge=0, description="Coalesce Deployment status changes before writing a status."
    )
    trunk_status_seconds: float = Field(
        30.0, gt=0, description="Read the media pods' trunk registrations this often."
    )
    concurrency: int = Field(8, ge=1, le=64, description="Child objects applied at once.")
    liveness_port: int = Field(8080, ge=0, le=65535, description="/healthz port (0: off).")
    log_format: Literal["json", "plain"] = Field("json", description="Log format.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info")
