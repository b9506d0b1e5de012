"""The command line every service binary shares: ``voicetyped-<service> [--config FILE]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from voicetyped.service.app import ServiceApp
from voicetyped.service.config import CONFIG_FILE_ENV, ConfigError, ServiceSettings
from voicetyped.service.runner import run

S = TypeVar("S", bound=ServiceSettings)

EXIT_CONFIG = 2


def service_main(
    prog: str,
    settings_cls: type[S],
    build_app: Callable[[S], ServiceApp],
    argv: list[str] | None = None,
) -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"Run the {prog} service. Settings come from the YAML file, then "
        "VOICETYPED_* environment variables (which win).",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help=f"YAML settings file (or ${CONFIG_FILE_ENV})"
    )
    args = parser.parse_args(argv)
    try:
        settings = settings_cls.load(args.config)
        # Building the app may read files the settings name (TLS certificates, say): what
        # makes them unusable is a configuration error too, said in one line before any start.
        app = build_app(settings)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return run(app)
