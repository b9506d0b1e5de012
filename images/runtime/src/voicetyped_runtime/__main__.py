"""`voicetyped-runtime` / `python -m voicetyped_runtime`: run the runtime service."""

from __future__ import annotations

from voicetyped.service.cli import service_main

from voicetyped_runtime.app import build_app
from voicetyped_runtime.config import RuntimeSettings


def main() -> None:
    raise SystemExit(service_main("voicetyped-runtime", RuntimeSettings, build_app))


if __name__ == "__main__":
    main()
