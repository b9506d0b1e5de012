"""`voicetyped-speech` / `python -m voicetyped_speech`: run the speech service."""

from __future__ import annotations

from voicetyped.service.cli import service_main

from voicetyped_speech.app import build_app
from voicetyped_speech.config import SpeechSettings


def main() -> None:
    raise SystemExit(service_main("voicetyped-speech", SpeechSettings, build_app))


if __name__ == "__main__":
    main()
