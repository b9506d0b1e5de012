"""Settings of the speech service (see voicetyped.service.config for the common ones)."""

from __future__ import annotations

from pydantic import Field
from voicetyped.service.config import ServiceSettings


class SpeechSettings(ServiceSettings):
    # Distinct default ports let all four services run side by side on one machine.
    http_port: int = Field(8082, ge=0, le=65535)
    grpc_port: int = Field(50062, ge=0, le=65535)
