"""``voicetyped dialog``: validate, draw and simulate dialogs."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from voicetyped.documents import DocumentError, read_document
from voicetyped_specs.dialog.compiled import CompiledDialog, DialogError, load_dialog_file
from voicetyped_specs.dialog.graph import to_dot, to_mermaid
from voicetyped_specs.dialog.hooks import check_call_hooks
from voicetyped_specs.integration_files import IntegrationFileError, load_catalog

app = typer.Typer(help="Validate, draw and simulate dialogs.", no_args_is_help=True)
# Wide when not a terminal, so long validation messages stay on one line in logs and CI.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _load(path: Path) -> CompiledDialog:
    try:
        return load_dialog_file(path)
    except DialogError as exc:
        err.print(f"[red]✗[/red] {path}: {len(exc.issues)} problem(s)")
        for issue in exc.issues:
            err.print(f"  {issue}", markup=False, highlight=False)
        if exc.note:
            err.print(f"  ({exc.note})", markup=False, highlight=False)
        raise typer.Exit(1) from None
    except OSError as exc:
        err.print(f"[red]✗[/red] {path}: {exc}")
        raise typer.Exit(1) from None


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Dialog YAML files.")],
    integrations: Annotated[
        list[Path] | None,
        typer.Option(
            "--integration",
            "-i",
            help="Integration YAML file or directory (repeatable): validated too, and every "
            "call_hook's service and method must name one of them and its operation.",
        ),
    ] = None,
) -> None:
    """Check dialogs; print every problem with the state and field it is in."""
    failed = 0
    catalog = None
    if integrations:
        try:
            catalog = load_catalog(integrations)
        except IntegrationFileError as exc:
            err.print(f"[red]✗[/red] {len(exc.issues)} problem(s) in Integration documents")
            for problem in exc.issues:
                err.print(f"  {problem}", markup=False, highlight=False)
            raise typer.Exit(1) from None
        names = ", ".join(f"{n} ({len(ops)} operations)" for n, ops in sorted(catalog.items()))
        out.print(f"[green]✓[/green] integrations: {escape(names or 'none')}")
    for path in files:
        try:
            dialog = _load(path)
        except typer.Exit:
            failed += 1
            continue
        dangling = check_call_hooks(dialog.spec, catalog) if catalog is not None else []
        if dangling:
            failed += 1
            err.print(f"[red]✗[/red] {path}: {len(dangling)} problem(s)")
            for issue in dangling:
                err.print(f"  {issue}", markup=False, highlight=False)
            continue
        out.print(
            f"[green]✓[/green] {path}: dialog {dialog.name!r}, {len(dialog.states)} states, "
            f"hash {dialog.content_hash}"
        )
    if failed:
        raise typer.Exit(1)


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"


@app.command()
def graph(
    file: Path,
    fmt: Annotated[GraphFormat, typer.Option("--format", "-f")] = GraphFormat.mermaid,
) -> None:
    """Print the state machine as Mermaid (paste into Markdown) or Graphviz DOT."""
    dialog = _load(file)
    typer.echo(to_mermaid(dialog) if fmt == GraphFormat.mermaid else to_dot(dialog), nl=False)


@app.command()
def simulate(
    file: Path,
    script: Annotated[Path, typer.Option(help="YAML list of caller steps.")],
) -> None:
    """Run a dialog against scripted caller events and print the path and the actions."""
    from voicetyped_runtime.dialogs import prepare
    from voicetyped_runtime.simulate import ExpectationError, ScriptStep, Simulator, describe

    dialog = _load(file)
    try:
        raw = read_document(script)
        if not isinstance(raw, list):
            raise ValueError("a script is a YAML list of steps")
        steps = [ScriptStep.model_validate(step) for step in raw]
    except (OSError, ValueError, ValidationError, yaml.YAMLError) as exc:
        message = str(exc) if isinstance(exc, DocumentError) else f"{script}: {exc}"
        err.print(f"[red]✗[/red] {escape(message)}", highlight=False)
        raise typer.Exit(1) from None
    version = prepare(dialog, str(file))
    if version.intent_note:
        err.print(f"[yellow]![/yellow] {version.intent_note}")
    sim = Simulator(dialog, matcher=version.matcher)
    failure = None
    try:
        sim.run(steps)
    except ExpectationError as exc:
        failure = str(exc)
    t0 = sim.state.started_ms
    table = Table(title=f"{dialog.name}: actions", show_lines=False)
    table.add_column("t (s)", justify="right")
    table.add_column("action")
    for item in sim.emitted:
        table.add_row(f"{(item.at_ms - t0) / 1000:.1f}", describe(item.effect))
    out.print(table)
    path = Table(title="path")
    for col in ("t (s)", "event", "from", "to", "transition"):
        path.add_column(col)
    for step in sim.state.history:
        path.add_row(
            f"{(step.at_ms - t0) / 1000:.1f}",
            step.event,
            step.from_state,
            step.to_state,
            step.transition,
        )
    out.print(path)
    out.print(f"final state: [bold]{sim.state.session.state}[/bold]; vars: {sim.state.vars}")
    if failure:
        err.print(f"[red]✗[/red] {escape(failure)}", highlight=False)
        raise typer.Exit(1)
