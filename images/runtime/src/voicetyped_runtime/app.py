"""Assembles the runtime service process."""

from __future__ import annotations

from voicetyped.service.app import ServiceApp

from voicetyped_runtime.config import RuntimeSettings

SERVICE_NAME = "runtime"


def build_app(settings: RuntimeSettings) -> ServiceApp:
    return ServiceApp(name=SERVICE_NAME, settings=settings)
