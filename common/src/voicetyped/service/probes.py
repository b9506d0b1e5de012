"""Readiness state: started, not draining, and every registered check passing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

# A readiness check returns None when fine, or a short reason why not.
ReadinessCheck = Callable[[], Awaitable[str | None]]

CHECK_TIMEOUT_S = 2.0


@dataclass
class Readiness:
    checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    started: bool = False
    draining: bool = False

    async def evaluate(self) -> tuple[bool, dict[str, str]]:
        """Return (ready, {name: "ok" or the reason it failed})."""
        report: dict[str, str] = {
            "started": "ok" if self.started else "starting",
            "draining": "shutting down" if self.draining else "ok",
        }
        names = list(self.checks)
        results = await asyncio.gather(
            *(asyncio.wait_for(self.checks[n](), CHECK_TIMEOUT_S) for n in names),
            return_exceptions=True,
        )
        for name, result in zip(names, results, strict=True):
            if isinstance(result, TimeoutError):
                report[name] = f"check timed out after {CHECK_TIMEOUT_S}s"
            elif isinstance(result, BaseException):
                report[name] = f"check failed: {type(result).__name__}"
            else:
                report[name] = result or "ok"
        return all(v == "ok" for v in report.values()), report
