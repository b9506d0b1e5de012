"""Percentiles for the benchmarks and the accuracy tools (one definition, so figures compare)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable


def pct(values: Iterable[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank: a value that occurred, never
    an interpolation between two (``inf`` counts: an unanswered turn is the slowest)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    """Count, p50, p95, mean and max of ``seconds`` in milliseconds (0.1 ms)."""
    ms = [v * 1000 for v in seconds]
    return {
        "n": len(ms),
        "p50": round(pct(ms, 0.5), 1),
        "p95": round(pct(ms, 0.95), 1),
        "mean": round(statistics.fmean(ms), 1),
        "max": round(max(ms), 1),
    }
