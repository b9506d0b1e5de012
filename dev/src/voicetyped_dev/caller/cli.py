"""``voicetyped call``: place a scripted SIP call and print the conversation with timings."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from voicetyped_dev import running
from voicetyped_dev.caller.heard import Heard
from voicetyped_dev.caller.pauses import PauseError
from voicetyped_dev.caller.run import Voices, run_call
from voicetyped_dev.caller.script import CallLog, ScriptError, Turn, load_script
from voicetyped_dev.caller.stages import await_stages
from voicetyped_dev.stack import examples_dir

# Typer renders this with rich: "\\[" is a literal "[" and line breaks are kept. The same format
# is documented in docs/testing.md ("Scripted calls"); a test keeps the two in step.
SCRIPT_HELP = (
    "Place a scripted test call (real SIP/RTP, G.711) and print who said what.\n\n"
    "The script (--script) is a YAML list of steps, one per caller action; a step is a "
    "mapping whose first key says what it does:\n\n"
    "  - listen: {}                    hear the bot (the greeting; added when the script "
    "does not start with it)\n"
    "  - listen: {timeout_s: 20, quiet_ms: 900}\n"
    '  - say: "I want to check my order"\n'
    '  - say: "order number \\[pause 700ms] four eight \\[pause 1.2s] two one"\n'
    '  - say: "agent please"\n'
    "    barge_in_after_ms: 800        talk over the bot 0.8 s after its reply starts\n"
    "  - wav: recordings/address.wav   a recording (any rate; leading silence is cut)\n"
    "    pauses_ms: \\[\\[1200, 1900]]     where in the file the caller pauses mid-turn\n"
    '  - press: "48213#"               keys (RFC 4733); gap_ms: 250 between them\n'
    '  - expect: "has shipped"         the bot\'s last reply must contain this\n'
    "  - wait: 1.5                     seconds\n"
    "  - hangup: {}\n\n"
    "After say, wav and press the caller listens (their own listen: {timeout_s, quiet_ms}): it "
    "waits up to timeout_s (10) for the bot to start and then for quiet_ms (900) of quiet. The "
    "turn latency is from the caller's last speech sample to the first loud frame of the reply."
    "\n\n"
    "\\[pause 700ms] or \\[pause 1.2s] between the words of a say (more than 0, at most 10 s): "
    "the caller stops that long and goes on; the pieces are spoken in the same voice and joined "
    "with silence. The bot starting to speak from the beginning of a pause until the caller's "
    "last word is a false cutoff.\n\n"
    "Exit status 1 when the call fails: refused or not answered, hung up by the gateway before "
    "the bot said anything, ended before the script did, a failed expect or a false cutoff; 2 "
    "for a bad script.\n\n"
    "The stack called is found by the port of --target (a running `voicetyped up` records "
    "itself) or --run-dir: its traces (the stage table), runtime admin API and example backend "
    'are used unless given. More in docs/testing.md, "Scripted calls".'
)

app = typer.Typer(help=SCRIPT_HELP, add_completion=False)
out = Console(soft_wrap=True)  # a turn is one line in a log; terminals wrap it


def backend_requests(url: str, key_file: Path | None, since: float) -> list[dict[str, Any]]:
    """What the example backend answered since ``since`` (empty when it cannot be asked)."""
    if not url:
        return []
    request = urllib.request.Request(f"{url.rstrip('/')}/_requests")
    if key_file is not None and key_file.is_file():
        request.add_header("X-API-Key", key_file.read_text().strip())
    try:
        with urllib.request.urlopen(request, timeout=2) as reply:
            seen = json.loads(reply.read())
    except (OSError, ValueError):
        return []
    return [r for r in seen if r.get("at", 0) >= since]


def summary(log: CallLog) -> dict[str, Any]:
    latencies = [t.latency_s for t in log.turns[1:] if t.latency_s is not None]
    return {
        "turns": [
            {
                "caller": t.caller,
                "bot": t.bot.text if t.bot else None,
                "latency_ms": round(t.latency_s * 1000) if t.latency_s is not None else None,
                "barge_in_stop_ms": round(t.barge_in_stop_s * 1000)
                if t.barge_in_stop_s is not None
                else None,
                "stages_ms": {k: round(v * 1000, 1) for k, v in (t.stages or {}).items()},
                "heard": t.heard,
                "pauses_ms": [p.ms for p in t.pauses],
                "cutoffs": [
                    {
                        "pause": c.pause,
                        "pause_ms": c.pause_ms,
                        "into_ms": c.into_ms,
                        "where": c.where,
                    }
                    for c in t.cutoffs
                ],
            }
            for t in log.turns
        ],
        "latency_ms": {
            "p50": round(statistics.median(latencies) * 1000) if latencies else None,
            "max": round(max(latencies) * 1000) if latencies else None,
        },
        "failures": log.failures,
        "ended_by_bot": log.ended_by_bot,
    }


STAGES = ("end_of_speech", "final", "decision", "tts", "playout", "network")


def print_stages(log: CallLog) -> None:
    """A table of where each turn's latency went (when the call was traced)."""
    turns = [t for t in log.turns[1:] if t.stages]
    if not turns:
        return
    # Fits an 80-column log (rich's width when not on a terminal): the caller's words give way.
    table = Table(
        title="turn latency by stage (ms)",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
        show_edge=False,
        expand=True,
    )
    table.add_column("caller", no_wrap=True, overflow="ellipsis", ratio=1, min_width=12)
    for name in (*STAGES, "backend", "total"):
        header = name.replace("_", " ")
        table.add_column(header, justify="right", min_width=max(map(len, header.split())))
    for t in turns:
        assert t.stages is not None and t.latency_s is not None
        names = (*STAGES, "backend")
        cells = [f"{t.stages[n] * 1000:.0f}" if n in t.stages else "-" for n in names]
        table.add_row(escape(t.caller[:32]), *cells, f"{t.latency_s * 1000:.0f}")
    out.print(table)


def print_heard(log: CallLog) -> None:
    """What the caller said beside what the recogniser heard (the runtime's final
    transcripts), one row per caller turn; nothing when the runtime was not asked."""
    turns = [t for t in log.turns if t.caller != "(listening)" and t.heard is not None]
    if not turns:
        return
    table = Table(
        title="what the recogniser heard", box=box.SIMPLE_HEAD, expand=True, show_edge=False
    )
    table.add_column("caller said", ratio=1)
    table.add_column("runtime heard", ratio=1)
    for t in turns:
        table.add_row(escape(t.caller), escape(_heard_text(t)))
    out.print(table)


def _heard_text(turn: Turn) -> str:
    if turn.heard is None:
        return "?"
    return " / ".join(turn.heard) if turn.heard else "(no final transcript)"


def _print_turn(turn: Turn) -> None:
    if turn.caller != "(listening)":
        out.print(f"[bold cyan]caller[/]  {escape(turn.caller)}")
        if turn.heard is not None:
            out.print(f"[magenta] heard[/]  {escape(_heard_text(turn))}")
    for cutoff in turn.cutoffs:  # the bot spoke while the caller was pausing
        out.print(f"[red]     ✗  {escape(cutoff.describe())}[/]")
    if turn.bot is None:
        out.print("[dim]   bot  (silence)[/]")
        return
    timing = (
        f"  [dim]+{turn.latency_s * 1000:.0f} ms[/]"
        if turn.latency_s is not None and turn.caller != "(listening)"
        else ""
    )
    stop = (
        f"  [dim](stopped {turn.barge_in_stop_s * 1000:.0f} ms after the caller spoke)[/]"
        if turn.barge_in_stop_s is not None
        else ""
    )
    out.print(f"[bold green]   bot[/]  {escape(turn.bot.text)}{timing}{stop}")


DEFAULT_TARGET = "sip:bot@127.0.0.1:5060"
DEFAULT_BACKEND = "http://127.0.0.1:8090"
DEFAULT_RUNTIME_ADMIN = "http://127.0.0.1:8083"


def sip_port_of(target: str) -> int | None:
    """The port a ``sip:user@host:port`` target dials (5060 when it names none)."""
    host_port = target.split("@", 1)[-1].split(";", 1)[0]
    _, colon, port = host_port.partition(":")
    if not colon:
        return 5060
    return int(port) if port.isdigit() else None


def stack_called(target: str | None, run_dir: Path | None) -> running.RunningStack | None:
    """The running ``voicetyped up`` stack this call is for: the one in ``run_dir``, else
    the one listening on the target's SIP port (None: not one of ours, or not running)."""
    from voicetyped_dev.up import cache_dir

    if run_dir is not None:
        return running.in_run_dir(run_dir)
    port = sip_port_of(target or DEFAULT_TARGET)
    return running.by_sip_port(port, cache_dir()) if port is not None else None


@app.callback(invoke_without_command=True)
def call(
    script: Annotated[
        Path, typer.Option(help="YAML list of steps (the step format is above).")
    ] = Path("examples/calls/order-status.yaml"),
    target: Annotated[
        str | None,
        typer.Option(
            help=f"SIP URI of the gateway. Default: the --run-dir stack's, else {DEFAULT_TARGET}."
        ),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            help="The run directory of the `voicetyped up` stack to call (its --run-dir): "
            "its SIP address, traces, runtime admin API and backend."
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="Example backend URL (its /_requests lists the calls). Default: the "
            f"stack's, else {DEFAULT_BACKEND}."
        ),
    ] = None,
    backend_key: Annotated[Path | None, typer.Option(help="API key file for --backend.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    traces: Annotated[
        Path | None,
        typer.Option(
            help="The services' span files (for the stage table). Default: the stack's "
            "<run dir>/traces."
        ),
    ] = None,
    runtime_admin: Annotated[
        str | None,
        typer.Option(
            help="The runtime's admin API, asked what the recogniser heard of each turn "
            f"('' skips it). Default: the stack's, else {DEFAULT_RUNTIME_ADMIN}."
        ),
    ] = None,
    runtime_token: Annotated[
        Path | None, typer.Option(help="Bearer token file of the runtime's admin API.")
    ] = None,
) -> None:
    """Dial the gateway, run the script, print who said what, what the recogniser heard and
    the turn latencies."""
    from voicetyped_dev.up import default_run_dir

    try:
        steps = load_script(script)
    except ScriptError as exc:
        out.print(f"[red]✗[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    stack = stack_called(target, run_dir)
    if run_dir is not None and stack is None:
        out.print(f"[red]✗[/red] no running `voicetyped up` in {escape(str(run_dir))}")
        raise typer.Exit(2)
    if stack is not None:
        target = target or stack.target
        backend = stack.backend if backend is None else backend
        backend_key = backend_key or stack.backend_key
        runtime_admin = stack.runtime_admin if runtime_admin is None else runtime_admin
        traces = traces or stack.traces
    target = target or DEFAULT_TARGET
    backend = DEFAULT_BACKEND if backend is None else backend
    backend_key = backend_key or examples_dir() / "backend" / "demo-api-key"
    runtime_admin = DEFAULT_RUNTIME_ADMIN if runtime_admin is None else runtime_admin
    traces = traces or default_run_dir() / "traces"
    if not as_json:
        out.print("[dim]loading voices…[/dim]")
    voices = Voices()
    started = time.time()

    def on_event(kind: str, data: Any) -> None:
        if as_json:
            return
        if kind == "answered":
            out.print(f"[dim]connected to {escape(str(data))}[/dim]")
        elif kind == "turn":
            _print_turn(data)

    heard = Heard(runtime_admin, runtime_token) if runtime_admin else None
    try:
        log = asyncio.run(run_call(target, steps, voices, on_event, heard=heard))
    except PauseError as exc:  # a wav step's pauses_ms outside the file's speech
        out.print(f"[red]✗[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    if heard is not None and heard.reachable is not True and not as_json:
        why = heard.problem or "the runtime's admin API never had this call's session"
        out.print(f"[dim]what the recogniser heard is unknown: {escape(why)}[/dim]")
    if traces is not None and traces.is_dir():
        asyncio.run(await_stages(log, traces))
    result = summary(log)
    result["backend_calls"] = backend_requests(backend, backend_key, started)
    if as_json:
        print(json.dumps(result))
    else:
        table = Table(title="backend calls")
        for column in ("method", "path", "status", "idempotency key"):
            table.add_column(column)
        for r in result["backend_calls"]:
            table.add_row(r["method"], r["path"], str(r["status"]), r.get("idempotency_key", ""))
        if result["backend_calls"]:
            out.print(table)
        print_heard(log)
        print_stages(log)
        lat = result["latency_ms"]
        out.print(
            f"turn latency (caller stops -> bot audio): p50 {lat['p50']} ms, max {lat['max']} ms"
        )
        for failure in log.failures:
            out.print(f"[red]✗[/red] {escape(failure)}")
    if log.failures:
        raise typer.Exit(1)
