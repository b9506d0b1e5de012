"""Kubernetes Events for significant transitions (posted by kopf in the background)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, cast

import kopf

from voicetyped_operator import naming


def reference(kind: str, name: str, namespace: str, uid: str) -> dict[str, Any]:
    """An object reference kopf can post Events for."""
    return {
        "apiVersion": naming.API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
    }


def post(
    ref: Mapping[str, Any], kind: Literal["Normal", "Warning"], reason: str, message: str
) -> None:
    # kopf only reads apiVersion, kind and metadata (name, namespace, uid) from the body.
    kopf.event(cast(kopf.Body, ref), type=kind, reason=reason, message=message[:1000])
