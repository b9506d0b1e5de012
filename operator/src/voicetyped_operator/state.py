"""What the operator remembers between events (kept in kopf's ``memo``).

Nothing here is the source of truth: it is rebuilt from the watch streams and the objects'
status after a restart. It lets a Deployment's status change update its VoiceDeployment's
status without re-reading everything, detects drift of children, and serializes the work
on one VoiceDeployment (its own handler, its timer and status refreshes from children).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Coroutine
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


@dataclass(frozen=True)
class Readiness:
    """A component's readiness and the Deployment generation it was computed from."""

    generation: int
    status: ComponentStatus


@dataclass
class OperatorState:
    kube: Kube
    settings: OperatorSettings
    locks: defaultdict[Key, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    readiness: defaultdict[Key, dict[str, Readiness]] = field(
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
    trunks: dict[Key, tuple[str, ...]] = field(default_factory=dict)
    """The media trunks of each VoiceDeployment's last valid spec (TrunkRegistered-*)."""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    """Every task the operator started itself (resync, debounced status refreshes)."""
    closing: bool = False

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """Run ``work`` in the background, tracked so :meth:`close` can stop it; None (and
        ``work`` discarded) once closing."""
        if self.closing:
            work.close()
            return None
        task = asyncio.create_task(work, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def close(self) -> None:
        """Stop every background task, then close the API client: after this nothing of ours
        calls the API (a refresh waking after the client closed made the operator exit 1)."""
        self.closing = True
        while self.tasks:
            pending = list(self.tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.kube.close()

    def record_readiness(
        self,
        key: Key,
        component: str,
        generation: int,
        status: ComponentStatus,
        *,
        from_watch: bool,
    ) -> bool:
        """Take in a Deployment's readiness; True when the component's status changed.

        The watch stream is the fresher source for a generation it has already reported: an
        apply's answer may predate the controller's status update (and no further event would
        correct it), so an answer counts only for a generation the watch has not shown yet."""
        current = self.readiness[key].get(component)
        if not from_watch and current is not None and generation <= current.generation:
            return False
        self.readiness[key][component] = Readiness(generation, status)
        return current is None or current.status != status

    def forget(self, key: Key) -> None:
        for store in (
            self.readiness,
            self.reconciled,
            self.status,
            self.known,
            self.trunks,
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
