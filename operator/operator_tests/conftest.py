"""Shared test data of the operator's unit tests (the order-status example)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "order-status"


def _example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLE / f"{name}.yaml").read_text())
    return loaded


@pytest.fixture
def example() -> Callable[[str], dict[str, Any]]:
    """examples/order-status/<name>.yaml, parsed."""
    return _example


@pytest.fixture
def vd_spec() -> dict[str, Any]:
    spec: dict[str, Any] = _example("voicedeployment")["spec"]
    return spec
