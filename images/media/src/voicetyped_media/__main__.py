"""`voicetyped-media` / `python -m voicetyped_media`: run the media service."""

from __future__ import annotations

from voicetyped.service.cli import service_main

from voicetyped_media.app import build_app
from voicetyped_media.config import MediaSettings


def main() -> None:
    raise SystemExit(service_main("voicetyped-media", MediaSettings, build_app))


if __name__ == "__main__":
    main()
