"""``voicetyped up`` as a user runs it: a real process in the foreground of its terminal, up
once it prints "voicetyped is up", stopped with Ctrl-C (SIGINT)."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

VOICETYPED = [sys.executable, "-m", "voicetyped.cli"]
"""The ``voicetyped`` command of this environment."""


class VoicetypedUp:
    """``with VoicetypedUp([...options], cwd, env) as up:`` the stack is up inside the block;
    ``up.exit_code`` and ``up.output`` once it has stopped."""

    def __init__(
        self, options: Sequence[str], cwd: Path, env: dict[str, str], timeout_s: float = 180
    ) -> None:
        self.argv = [*VOICETYPED, "up", *options]
        self.cwd = cwd
        self.env = env
        self.timeout_s = timeout_s
        self.exit_code: int | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._seen: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def output(self) -> str:
        """Everything it printed so far."""
        while not self._lines.empty():
            self._seen.append(self._lines.get_nowait())
        return "".join(self._seen)

    def __enter__(self) -> VoicetypedUp:
        self._proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self._proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.timeout_s
        try:
            while not any("voicetyped is up" in line for line in self._seen):
                if self._proc.poll() is not None:
                    raise AssertionError(f"voicetyped up exited early:\n{self.output[-5000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"voicetyped up not up:\n{self.output[-5000:]}")
                try:
                    self._seen.append(self._lines.get(timeout=0.5))
                except queue.Empty:
                    continue
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self, timeout_s: float = 60) -> int:
        """Ctrl-C, and its exit code once it has stopped."""
        assert self._proc is not None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
        self.exit_code = self._proc.wait(timeout_s)
        if self._reader is not None:
            self._reader.join(10)  # the rest of its output
        return self.exit_code

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._lines.put(line)
