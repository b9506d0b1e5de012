"""``voicetyped up``: the whole pipeline on this machine until Ctrl-C.

    voicetyped up                          # examples/: order-status dialogs, shop backend
    voicetyped up -d my-dialog.yaml -i my-integration.yaml --no-backend --sip-port 5070
    voicetyped up -d dialogs/ --dialog-name refill --base-port 9100 --sip-port 5070 --run-dir run2

Dialogs and integrations are the YAML you would ``kubectl apply`` (plain documents or
``voicetyped.io`` Dialog/Integration resources). Call it with ``voicetyped call`` or any SIP
phone at ``sip:bot@127.0.0.1:<sip port>``: ``voicetyped call`` finds the stack it dials (its
traces, runtime and backend) by that port, or with ``--run-dir``.

The runtime's live call console is on (loopback only, no token): ``up`` prints its address,
``http://127.0.0.1:<runtime http port>/console/`` (docs/console.md).

Before anything starts, the dialogs and integrations are validated, every ``call_hook`` must
name a loaded Integration and operation, and ``--dialog-name`` a loaded dialog (with more
than one dialog loaded it is required); otherwise ``up`` names the problems and exits 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from voicetyped_dev import preflight, running
from voicetyped_dev.stack import BACKEND_OFFSET, Stack, StackConfig, StackError, examples_dir

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
        bool,
        typer.Option(
            help="Run the example backend (examples/backend) on :8090 (base port + "
            f"{BACKEND_OFFSET} with --base-port)."
        ),
    ] = True,
    sip_port: Annotated[int, typer.Option(help="SIP port (UDP and TCP).")] = 5060,
    base_port: Annotated[
        int | None,
        typer.Option(
            min=1024,
            max=65535 - BACKEND_OFFSET,
            help="Ports from here instead of the defaults (HTTP 8081-8084, gRPC 50061-50064, "
            "backend 8090): HTTP on BASE..BASE+3 (media, speech, runtime, integration), gRPC "
            f"on BASE+4..BASE+7, the example backend on BASE+{BACKEND_OFFSET}. For a second "
            "stack beside the first (give it its own --sip-port and --run-dir too).",
        ),
    ] = None,
    dialog_name: Annotated[
        str | None,
        typer.Option(
            "--dialog-name",
            help="Dialog for incoming calls (by name). Default: order-status with the "
            "examples; with --dialog, the only dialog loaded (required when there are more).",
        ),
    ] = None,
    store: Annotated[
        str, typer.Option(help="Session store URL (default: SQLite in the run directory).")
    ] = "",
    run_dir: Annotated[Path | None, typer.Option(help="Where logs, traces and state go.")] = None,
    prepare: Annotated[bool, typer.Option(help="Prepare the speech models first.")] = True,
) -> None:
    """Start media, speech, runtime and integration (and the example backend), stream their
    logs, stop them all on Ctrl-C."""
    examples = examples_dir()
    config = StackConfig(
        run_dir=run_dir or default_run_dir(),
        dialogs=dialogs or [examples / "dialogs"],
        integrations=integrations or [examples / "integrations"],
        backend_script=examples / "backend" / "example_backend.py" if backend else None,
        backend_key_file=examples / "backend" / "demo-api-key" if backend else None,
        sip_port=sip_port,
        base_port=base_port,
        store_url=store,
        dialog=dialog_name if dialog_name is not None else ("" if dialogs else "order-status"),
        prepare_models=prepare,
        console=True,
        # Files an Integration names (its API key) are relative to where the services run:
        # the checkout for the example ones (./examples/backend/demo-api-key), else here.
        cwd=Path.cwd() if integrations else examples.parent.resolve(),
    )
    for path in [*config.dialogs, *config.integrations]:
        if not path.exists():
            out.print(f"[red]✗[/red] {escape(str(path))} does not exist")
            raise typer.Exit(2)
    problems = preflight.check(config.dialogs, config.integrations, config.dialog)
    if problems:
        out.print(f"[red]✗[/red] not starting: {len(problems)} problem(s)")
        for problem in problems:
            out.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
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
    record = running.RunningStack(
        pid=os.getpid(),
        sip_port=stack.sip_port,
        run_dir=stack.run_dir.resolve(),
        runtime_admin=f"http://127.0.0.1:{stack.ports['runtime'].http}",
        backend=f"http://127.0.0.1:{stack.backend_port}" if stack.backend else "",
        backend_key=config.backend_key_file.resolve() if config.backend_key_file else None,
    )
    running.register(record, cache_dir())
    call = "voicetyped call" + (f" --target {record.target}" if stack.sip_port != 5060 else "")
    out.print(
        f"[green]✓[/green] voicetyped is up ({(datetime.now() - started).total_seconds():.1f} s): "
        f"call [bold]{record.target}[/bold] (e.g. `{call}`); runtime admin "
        f"{record.runtime_admin}; logs and traces in {escape(str(stack.run_dir))}; Ctrl-C stops."
    )
    out.print(f"browser calls: {stack.browser_calls}", highlight=False)
    out.print(f"console: {stack.console_url}", highlight=False)
    watch = asyncio.ensure_future(_watch(stack))
    try:
        await asyncio.wait(
            {asyncio.ensure_future(stop.wait()), watch}, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        running.unregister(record, cache_dir())
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
