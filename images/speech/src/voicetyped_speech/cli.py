"""``voicetyped models``: prepare and inspect the speech models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from voicetyped_speech.models.ctranslate2_reader import CT2FormatError
from voicetyped_speech.models.ggml_converter import ConversionError, read_ggml_header
from voicetyped_speech.models.prepare import (
    MANIFEST_NAME,
    PrepareError,
    Stage,
    check_manifest,
    default_models_dir,
    locate_bundled,
    prepare_models,
)

app = typer.Typer(
    help="Prepare and inspect the speech models (whisper.cpp ASR, Piper TTS).",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)

ModelsDirOption = Annotated[
    Path | None,
    typer.Option(
        "--models-dir",
        help="Where prepared models live. Default: $VOICETYPED_MODELS_DIR, else "
        "$VOICETYPED_CACHE/models, else ${XDG_CACHE_HOME:-~/.cache}/voicetyped/models.",
        file_okay=False,
        show_default=False,
    ),
]


@app.command()
def prepare(
    models_dir: ModelsDirOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Convert and verify again even if prepared.")
    ] = False,
) -> None:
    """Convert the bundled Whisper model to ggml, verify it with Piper, record a manifest.

    Does nothing when the directory already holds a verified model for the installed packages.
    """
    target = models_dir if models_dir is not None else default_models_dir()
    progress = Progress(
        SpinnerColumn(finished_text="[green]✓[/green]"),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=out,
    )
    running: dict[TaskID, float] = {}  # task -> its total

    def on_stage(stage: Stage, message: str) -> None:
        for task, total in running.items():  # the previous stage is finished
            progress.update(task, total=total, completed=total)
        running.clear()
        if stage in ("convert", "verify"):
            if not out.is_terminal:  # a log (CI, `voicetyped up`): one line per stage, now
                out.print(f"{escape(message)}…")
                return
            if not progress.live.is_started:  # a no-op run prints just its one line
                progress.start()
            running[progress.add_task(escape(message), total=None, detail="")] = 1

    def on_convert(done: int, total: int) -> None:
        if not running:
            return
        (task,) = running
        running[task] = total
        detail = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB"
        progress.update(task, completed=done, total=total, detail=detail)

    try:
        result = prepare_models(
            target, force=force, on_stage=on_stage, on_convert_progress=on_convert
        )
    except (PrepareError, ConversionError, CT2FormatError, OSError) as exc:
        _stop(progress)
        err.print(f"[red]✗[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    _stop(progress)

    manifest = result.manifest
    if result.skipped:
        out.print(
            f"[green]✓[/green] already prepared: {escape(str(result.ggml_path))} "
            f"(sha256 {manifest.asr.sha256[:12]}…); use --force to redo"
        )
        return
    out.print(
        f"[green]✓[/green] {escape(str(result.ggml_path))}: "
        f"{manifest.asr.size_bytes / 1e6:.1f} MB, sha256 {manifest.asr.sha256[:12]}…"
    )
    check = manifest.verification
    out.print(
        f"[green]✓[/green] verified: Piper said {escape(repr(check.sentence))}, whisper.cpp "
        f"heard {escape(repr(check.transcript))} ({check.transcribe_seconds:.2f} s)"
    )


def _stop(progress: Progress) -> None:
    if progress.live.is_started:
        progress.stop()


@app.command("list")
def list_models(models_dir: ModelsDirOption = None) -> None:
    """Show the prepared models and whether they are current."""
    target = models_dir if models_dir is not None else default_models_dir()
    status = check_manifest(target, locate_bundled())
    manifest = status.manifest
    if manifest is None:
        out.print(
            f"no prepared models in {escape(str(target))} ({status.reason}); run "
            "[bold]voicetyped models prepare[/bold]"
        )
        raise typer.Exit(1)

    table = Table(title=f"Models in {escape(str(target))}")
    for column in ("name", "kind", "format", "file", "size", "status"):
        table.add_column(column, overflow="fold")
    asr = manifest.asr
    state = "[green]ok[/green]" if status.valid else "[red]stale[/red]"
    table.add_row(asr.name, "asr", asr.format, asr.file, f"{asr.size_bytes / 1e6:.1f} MB", state)
    tts = manifest.tts
    voice = Path(tts.model_path)
    voice_state = "[green]ok[/green]" if voice.is_file() else "[red]missing[/red]"
    size = f"{voice.stat().st_size / 1e6:.1f} MB" if voice.is_file() else "-"
    table.add_row(tts.name, "tts", tts.format, escape(voice.name), size, voice_state)

    # Other ggml files a user put here (the ASR layer accepts any by path).
    for path in sorted(target.glob("*.bin")):
        if path.name == asr.file:
            continue
        try:
            hp = read_ggml_header(path)
        except (ConversionError, OSError):
            continue
        size = f"{path.stat().st_size / 1e6:.1f} MB"
        layers = f"ggml {hp.n_audio_layer}+{hp.n_text_layer}L"
        table.add_row(path.stem, "asr", layers, path.name, size, "unmanaged")
    out.print(table)
    out.print(f"voice: {escape(str(voice))}", soft_wrap=True)
    out.print(
        f"{MANIFEST_NAME}: prepared {manifest.created_at:%Y-%m-%d %H:%M} UTC, verification "
        f"heard {escape(repr(manifest.verification.transcript))}"
    )
    if not status.valid:
        out.print(
            f"[red]✗[/red] {escape(status.reason)}: run [bold]voicetyped models prepare[/bold]"
        )
        raise typer.Exit(1)
