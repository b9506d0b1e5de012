"""``voicetyped up``: the whole pipeline on this machine until Ctrl-C.

    voicetyped up                          # examples/: order-status dialogs, shop backend
    voicetyped up -d my-dialog.yaml -i my-integration.yaml --no-backend --sip-port 5070

Dialogs and integrations are the YAML you would ``kubectl apply`` (plain documents or
``voicetyped.io`` Dialog/Integration resources). Call it with ``voicetyped call`` or any SIP
phone at ``sip:bot@127.0.0.1:<sip port>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from voicetyped_dev.stack import Stack, StackConfig, StackError

app = typer.Typer(help="Run the four services locally (Ctrl-C stops them).", add_completion=False)
out = Console()
COLOURS = {
    "media": "cyan",
    "speech": "magenta",
    "runtime": "green",
    "integration": "yellow",
    "backend": "blue",
    "models": "white",
}


def cache_dir() -> Path:
    """``$VOICETYPED_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/voicetyped`` (the Makefile's)."""
    import os

    explicit = os.environ.get("VOICETYPED_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "voicetyped"


def default_run_dir() -> Path:
    return cache_dir() / "run" / "up"


def render(service: str, line: str) -> str:
    """A log line for the terminal: JSON records shortened to time, level, event and fields."""
    colour = COLOURS.get(service, "white")
    prefix = f"[{colour}]{service:>11}[/{colour}] "
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return prefix + escape(line)
    if not isinstance(record, dict):
        return prefix + escape(line)
    stamp = str(record.pop("timestamp", ""))[11:23]
    level = str(record.pop("level", ""))
    event = str(record.pop("event", ""))
    for key in ("service", "logger"):
        record.pop(key, None)
    fields = " ".join(f"{k}={v}" for k, v in record.items() if k != "exception")
    text = f"{stamp} {level:<7} {event} {fields}".rstrip()
    if "exception" in record:
        text += "\n" + str(record["exception"])
    return prefix + escape(text)


@app.callback(invoke_without_command=True)
def up(
    dialogs: Annotated[
        list[Path] | None, typer.Option("--dialog", "-d", help="Dialog YAML file or directory.")
    ] = None,
    integrations: Annotated[
        list[Path] | None,
        typer.Option("--integration", "-i", help="Integration YAML file or directory."),
    ] = None,
    backend: Annotated[
        bool, typer.Option(help="Run the example backend (examples/backend) on :8090.")
    ] = True,
    sip_port: Annotated[int, typer.Option(help="SIP port (UDP and TCP).")] = 5060,
    dialog_name: Annotated[
        str, typer.Option("--dialog-name", help="Dialog for incoming calls (by name).")
    ] = "order-status",
    store: Annotated[
        str, typer.Option(help="Session store URL (default: SQLite in the run directory).")
    ] = "",
    run_dir: Annotated[Path | None, typer.Option(help="Where logs, traces and state go.")] = None,
    prepare: Annotated[bool, typer.Option(help="Prepare the speech models first.")] = True,
) -> None:
    """Start media, speech, runtime and integration (and the example backend), stream their
    logs, stop them all on Ctrl-C."""
    examples = Path("examples")
    config = StackConfig(
        run_dir=run_dir or default_run_dir(),
        dialogs=dialogs or [examples / "dialogs"],
        integrations=integrations or [examples / "integrations"],
        backend_script=examples / "backend" / "example_backend.py" if backend else None,
        backend_key_file=examples / "backend" / "demo-api-key" if backend else None,
        sip_port=sip_port,
        store_url=store,
        dialog=dialog_name if not dialogs else "",
        prepare_models=prepare,
    )
    for path in [*config.dialogs, *config.integrations]:
        if not path.exists():
            out.print(f"[red]✗[/red] {escape(str(path))} does not exist")
            raise typer.Exit(2)
    raise typer.Exit(asyncio.run(_run(config)))


async def _run(config: StackConfig) -> int:
    stack = Stack(config, on_line=lambda s, line: out.print(render(s, line), highlight=False))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = datetime.now()
    try:
        await stack.start()
    except StackError as exc:
        out.print(f"[red]✗[/red] {escape(str(exc))}")
        await stack.stop()
        return 1
    out.print(
        f"[green]✓[/green] voicetyped is up ({(datetime.now() - started).total_seconds():.1f} s): "
        f"call [bold]sip:bot@127.0.0.1:{stack.sip_port}[/bold] (e.g. `voicetyped call`); "
        f"logs and traces in {escape(str(stack.run_dir))}; Ctrl-C stops."
    )
    watch = asyncio.ensure_future(_watch(stack))
    await asyncio.wait(
        {asyncio.ensure_future(stop.wait()), watch}, return_when=asyncio.FIRST_COMPLETED
    )
    watch.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watch
    out.print("stopping…")
    codes = await stack.stop()
    failed = {k: v for k, v in codes.items() if v not in (0, -15)}
    if failed:
        out.print(f"[red]✗[/red] exit codes: {failed}")
    return 1 if failed else 0


async def _watch(stack: Stack) -> None:
    """Return when a service dies on its own (the others are then stopped)."""
    while True:
        await asyncio.sleep(0.5)
        for name, service in stack.services.items():
            if not service.running:
                out.print(f"[red]✗[/red] {name} exited; stopping the others")
                return
