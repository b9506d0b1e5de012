"""What ``voicetyped up`` checks before it starts anything: the dialogs and integrations it was
given are valid, every ``call_hook`` names a loaded Integration and operation, and the dialog
for incoming calls is one of the loaded dialogs. Each problem is one line naming its file and
field path; any problem and the stack does not start (a call would fail later, less clearly)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from voicetyped_specs.dialog.compiled import CompiledDialog, DialogError, load_dialog_file
from voicetyped_specs.dialog.hooks import check_call_hooks
from voicetyped_specs.integration_files import (
    IntegrationFileError,
    document_files,
    load_catalog,
)


def check(dialogs: Sequence[Path], integrations: Sequence[Path], dialog: str) -> list[str]:
    """The problems that would keep the stack from serving calls (empty: start it).
    ``dialog`` is the dialog named for incoming calls ("": the only one loaded)."""
    problems: list[str] = []
    try:
        catalog = load_catalog(integrations)
    except IntegrationFileError as exc:
        problems += [str(i) for i in exc.issues]
        catalog = None
    loaded: dict[str, CompiledDialog] = {}
    for path in document_files(dialogs):
        try:
            compiled = load_dialog_file(path)
        except DialogError as exc:
            # A problem with the file itself (size, encoding) already names it.
            problems += [
                str(i) if str(i).startswith(f"{path}:") else f"{path}: {i}" for i in exc.issues
            ]
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: unreadable: {exc}")
            continue
        loaded[compiled.name] = compiled
        if catalog is not None:
            problems += [f"{path}: {i}" for i in check_call_hooks(compiled.spec, catalog)]
    names = ", ".join(sorted(loaded)) or "none"
    if dialog and dialog not in loaded:
        problems.append(f"--dialog-name {dialog}: no such dialog (loaded: {names})")
    elif not dialog and len(loaded) > 1:
        problems.append(
            f"{len(loaded)} dialogs loaded ({names}): name the one for incoming calls "
            "with --dialog-name"
        )
    return problems
