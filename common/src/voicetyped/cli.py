"""The ``voicetyped`` command. Installed packages add sub-commands.

Each package registers a typer app under the ``voicetyped.cli`` entry-point
group (``dialog = "voicetyped_runtime.cli:app"``), so an image only has the
commands of what it ships, and a development install has them all.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import typer

from voicetyped import __version__


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="voicetyped",
        help="voicetyped: self-hosted voice-call automation.",
        no_args_is_help=True,
        add_completion=False,
    )

    @app.command()
    def version() -> None:
        """Print the voicetyped version."""
        typer.echo(__version__)

    for ep in sorted(entry_points(group="voicetyped.cli"), key=lambda e: e.name):
        try:
            sub = ep.load()
        except Exception as exc:  # one broken package must not take every command down
            print(f"voicetyped: command {ep.name!r} unavailable: {exc}", file=sys.stderr)
            continue
        if not isinstance(sub, typer.Typer):
            raise TypeError(f"entry point {ep.value} is not a typer.Typer")
        app.add_typer(sub, name=ep.name)
    return app


def main() -> None:
    build_app()()


if __name__ == "__main__":
    main()
