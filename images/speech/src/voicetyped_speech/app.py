"""Assembles the speech service process."""

from __future__ import annotations

from voicetyped.service.app import ServiceApp

from voicetyped_speech.config import SpeechSettings

SERVICE_NAME = "speech"


def build_app(settings: SpeechSettings) -> ServiceApp:
    return ServiceApp(name=SERVICE_NAME, settings=settings)
