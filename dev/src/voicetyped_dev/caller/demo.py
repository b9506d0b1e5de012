"""``make demo``: the four services and the example backend on this machine, the scripted
order-status call against them, the conversation and its latency printed, everything stopped.

    python -m voicetyped_dev.caller.demo [--script examples/calls/order-status.yaml]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from voicetyped_dev.caller.cli import (
    _print_turn,
    backend_requests,
    print_heard,
    print_stages,
    summary,
)
from voicetyped_dev.caller.heard import Heard
from voicetyped_dev.caller.run import Voices, run_call
from voicetyped_dev.caller.script import load_script
from voicetyped_dev.caller.stages import attach_stages
from voicetyped_dev.stack import Stack, StackConfig, StackError
from voicetyped_dev.up import default_run_dir

out = Console(soft_wrap=True)  # a turn is one line in a log; terminals wrap it


async def demo(script: Path) -> int:
    examples = Path("examples")
    config = StackConfig(
        run_dir=default_run_dir().parent / "demo",
        dialogs=[examples / "dialogs"],
        integrations=[examples / "integrations"],
        backend_script=examples / "backend" / "example_backend.py",
        backend_key_file=examples / "backend" / "demo-api-key",
        fixed_ports=False,
        dialog="order-status",
        console=True,
    )
    out.print(
        "[bold]voicetyped demo[/bold]: preparing the speech models, then starting media, "
        "speech, runtime, integration and the example backend…"
    )
    started = time.perf_counter()
    stack = Stack(config)
    starting = asyncio.ensure_future(stack.start())
    # The caller's own voices (Piper, whisper.cpp) load while the services start, once the
    # stack has prepared the models they share.
    prepared = asyncio.ensure_future(stack.models_ready.wait())
    await asyncio.wait({starting, prepared}, return_when=asyncio.FIRST_COMPLETED)
    prepared.cancel()
    voices_task = (
        asyncio.ensure_future(asyncio.to_thread(Voices)) if stack.models_ready.is_set() else None
    )
    try:
        await starting
    except StackError as exc:
        out.print(f"[red]✗[/red] {escape(str(exc))}")
        await stack.stop()
        if voices_task is not None:
            with contextlib.suppress(Exception):
                await voices_task
        return 1
    assert voices_task is not None  # the stack starts services only with prepared models
    voices = await voices_task
    out.print(
        f"[green]✓[/green] up in {time.perf_counter() - started:.1f} s; calling "
        f"sip:bot@127.0.0.1:{stack.sip_port} with {escape(str(script))}; watch it live in the "
        f"console: {stack.console_url}\n"
    )
    call_started = time.time()
    try:
        log = await run_call(
            f"sip:bot@127.0.0.1:{stack.sip_port}",
            load_script(script),
            voices,
            lambda kind, data: _print_turn(data) if kind == "turn" else None,
            heard=Heard(f"http://127.0.0.1:{stack.ports['runtime'].http}"),
        )
        calls = backend_requests(
            f"http://127.0.0.1:{stack.backend_port}", config.backend_key_file, call_started
        )
    finally:
        codes = await stack.stop()
    attach_stages(log, stack.trace_dir)  # every service flushed its spans when it stopped
    result = summary(log)
    out.print()
    for r in calls:
        out.print(f"[bold yellow]backend[/bold yellow]  {r['method']} {r['path']} -> {r['status']}")
    print_heard(log)
    print_stages(log)
    lat = result["latency_ms"]
    out.print(
        f"\nturn latency (caller stops speaking -> first bot audio): "
        f"p50 {lat['p50']} ms, max {lat['max']} ms over {len(log.turns) - 1} turns"
    )
    out.print(f"[dim]logs: {escape(str(stack.log_dir))}[/dim]")
    failed = [k for k, v in codes.items() if v not in (0, None)]
    for failure in log.failures:
        out.print(f"[red]✗[/red] {escape(failure)}")
    if failed:
        out.print(f"[red]✗[/red] services exited badly: {failed}")
    return 1 if log.failures or failed else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--script", type=Path, default=Path("examples/calls/order-status.yaml"))
    args = parser.parse_args()
    sys.exit(asyncio.run(demo(args.script)))


if __name__ == "__main__":
    main()
