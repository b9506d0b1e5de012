"""Assembles the media service process."""

from __future__ import annotations

from voicetyped.service.app import ServiceApp

from voicetyped_media.config import MediaSettings

SERVICE_NAME = "media"


def build_app(settings: MediaSettings) -> ServiceApp:
    return ServiceApp(name=SERVICE_NAME, settings=settings)
