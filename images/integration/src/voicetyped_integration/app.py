"""Assembles the integration service process."""

from __future__ import annotations

from voicetyped.service.app import ServiceApp

from voicetyped_integration.config import IntegrationSettings

SERVICE_NAME = "integration"


def build_app(settings: IntegrationSettings) -> ServiceApp:
    return ServiceApp(name=SERVICE_NAME, settings=settings)
