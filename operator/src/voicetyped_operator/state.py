"""What the operator remembers between events (kept in kopf's ``memo``).

Nothing here is the source of truth: it is rebuilt from the watch streams and the objects'
status after a restart. It lets a Deployment's status change update its VoiceDeployment's
status without re-reading everything, detects drift of children, and serializes the work
on one VoiceDeployment (its own handler, its timer and status refreshes from children).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import kopf

from voicetyped_operator.kube import Kube
from voicetyped_operator.models.status import ComponentStatus, VoiceDeploymentStatus
from voicetyped_operator.render import Dependencies
from voicetyped_operator.settings import OperatorSettings

Key = tuple[str, str]  # (namespace, name)
ChildKey = tuple[str, str, str]  # (kind, namespace, name)


@dataclass
class Reconciled:
    """The last successful reconcile of a VoiceDeployment (what status refreshes build on)."""

    uid: str
    generation: int
    deps: Dependencies
    components: tuple[str, ...]


@dataclass(frozen=True)
class Known:
    """The latest state of a VoiceDeployment as the watch stream delivered it."""

    uid: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]


@dataclass
class OperatorState:
    kube: Kube
    settings: OperatorSettings
    locks: defaultdict[Key, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    readiness: defaultdict[Key, dict[str, ComponentStatus]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    # The Deployment generation each readiness entry was computed from: an apply's answer
    # may carry an older status than a watch event already taken in (see reconcile).
    readiness_generation: defaultdict[Key, dict[str, int]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    reconciled: dict[Key, Reconciled] = field(default_factory=dict)
    status: dict[Key, VoiceDeploymentStatus] = field(default_factory=dict)
    # What our last apply left on each child: (generation, resourceVersion).
    applied: dict[ChildKey, tuple[int | None, str]] = field(default_factory=dict)
    inventory: set[ChildKey] = field(default_factory=set)
    used_by: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    deleting: set[Key] = field(default_factory=set)
    refreshes: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    known: dict[Key, Known] = field(default_factory=dict)
    background: list[asyncio.Task[None]] = field(default_factory=list)

    def forget(self, key: Key) -> None:
        for store in (
            self.readiness,
            self.readiness_generation,
            self.reconciled,
            self.status,
            self.known,
        ):
            store.pop(key, None)
        self.locks.pop(key, None)
        task = self.refreshes.pop(key, None)
        if task is not None:
            task.cancel()


def of(memo: Any) -> OperatorState:
    """The state kept in kopf's memo by the startup handler."""
    found = getattr(memo, "state", None)
    if not isinstance(found, OperatorState):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return found
