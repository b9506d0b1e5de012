"""`voicetyped-integration` / `python -m voicetyped_integration`: run the integration service."""

from __future__ import annotations

from voicetyped.service.cli import service_main

from voicetyped_integration.app import build_app
from voicetyped_integration.config import IntegrationSettings


def main() -> None:
    raise SystemExit(service_main("voicetyped-integration", IntegrationSettings, build_app))


if __name__ == "__main__":
    main()
