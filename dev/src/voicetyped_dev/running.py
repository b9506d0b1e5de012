"""Where a running ``voicetyped up`` stack is, so that ``voicetyped call`` finds the stack it
calls: its SIP address, the runtime's admin API, the example backend and the span files.

``up`` writes ``<run dir>/stack.json`` and a copy under ``<cache>/run/stacks/<sip port>.json``
(removed when it stops). ``call --run-dir DIR`` reads the first; a plain ``call --target
sip:bot@127.0.0.1:PORT`` finds the second by the port it dials. A record whose process is
gone (a killed ``up``) is ignored.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pydantic import BaseModel, ValidationError

RECORD = "stack.json"


class RunningStack(BaseModel):
    pid: int
    sip_port: int
    run_dir: Path
    runtime_admin: str
    backend: str = ""
    """The example backend's URL ("" when the stack runs none)."""
    backend_key: Path | None = None

    @property
    def target(self) -> str:
        return f"sip:bot@127.0.0.1:{self.sip_port}"

    @property
    def traces(self) -> Path:
        return self.run_dir / "traces"


def stacks_dir(cache: Path) -> Path:
    return cache / "run" / "stacks"


def register(stack: RunningStack, cache: Path) -> None:
    text = stack.model_dump_json(indent=2)
    (stack.run_dir / RECORD).write_text(text, "utf-8")
    directory = stacks_dir(cache)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stack.sip_port}.json").write_text(text, "utf-8")


def unregister(stack: RunningStack, cache: Path) -> None:
    for path in (stack.run_dir / RECORD, stacks_dir(cache) / f"{stack.sip_port}.json"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def read(path: Path) -> RunningStack | None:
    """The record at ``path`` if its ``up`` is still running."""
    try:
        stack = RunningStack.model_validate_json(path.read_text("utf-8"))
    except (OSError, ValueError, ValidationError):
        return None
    return stack if _alive(stack.pid) else None


def in_run_dir(run_dir: Path) -> RunningStack | None:
    return read(run_dir / RECORD)


def by_sip_port(port: int, cache: Path) -> RunningStack | None:
    return read(stacks_dir(cache) / f"{port}.json")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
