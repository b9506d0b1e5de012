"""Percentiles for the benchmarks and the accuracy tools (one definition, so figures compare)."""

from __future__ import annotations

import math
from collections.abc import Iterable


def pct(values: Iterable[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank: a value that occurred, never
    an interpolation between two (``inf`` counts: an unanswered turn is the slowest)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
