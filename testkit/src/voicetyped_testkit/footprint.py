"""Time and peak memory of calls, each measured alone in a fresh Python process.

For the hostile-document tests: a call that expands a "billion laughs" document can take
gigabytes, which only a separate process measures without disturbing the test run. The
process runs ``setup`` (imports, a warm-up), then each call: the kernel's peak-RSS mark
(``VmHWM``) is reset before it (``/proc/self/clear_refs``), so each call's growth is its
own, measured from its start.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

_RUNNER = """
import json, sys, time, traceback
from pathlib import Path

def _status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)

def _measure(label, call):
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status("VmRSS")
    start = time.monotonic()
    try:
        outcome = repr(call())
    except BaseException as exc:  # the call's own failure is the outcome to report
        outcome = f"{type(exc).__name__}: {exc}"
    elapsed = time.monotonic() - start
    grew = _status("VmHWM") - before
    print(json.dumps({"label": label, "seconds": elapsed, "grew": grew, "outcome": outcome}))
    sys.stdout.flush()
"""


@dataclass(frozen=True)
class Footprint:
    seconds: float
    grew_bytes: int
    outcome: str  # the call's repr, or "ExceptionType: message"

    @property
    def grew_mb(self) -> float:
        return self.grew_bytes / 1e6


def measure(setup: str, calls: dict[str, str], cwd: Path | None = None) -> dict[str, Footprint]:
    """Run ``setup``, then each ``label: expression`` call, in one fresh interpreter."""
    lines = [_RUNNER, textwrap.dedent(setup)]
    lines += [f"_measure({label!r}, lambda: {expr})" for label, expr in calls.items()]
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(lines)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    results = {}
    for line in done.stdout.splitlines():
        if line.startswith('{"label"'):
            item = json.loads(line)
            results[item["label"]] = Footprint(item["seconds"], item["grew"], item["outcome"])
    if done.returncode != 0 or set(results) != set(calls):
        raise AssertionError(f"measuring failed ({done.returncode}): {done.stderr[-3000:]}")
    return results
