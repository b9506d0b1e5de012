"""Shared test data of the operator's unit tests (the order-status example) and a fake API
for reconciling a VoiceDeployment once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from voicetyped_operator import events, naming
from voicetyped_operator.reconcile import voicedeployment as vds
from voicetyped_operator.settings import OperatorSettings
from voicetyped_operator.state import OperatorState

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


class FakeKube:
    """What reconcile asks of the API: Dialogs, their ConfigMaps, Secrets; records writes."""

    def __init__(self, secrets: dict[str, dict[str, bytes]]) -> None:
        self.secrets = secrets
        self.applied: list[Any] = []
        self.statuses: list[dict[str, Any]] = []

    async def get_custom(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return {"metadata": {"name": name, "generation": 1}, "spec": {}}

    async def get_config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        mounts = "[]"
        return {naming.CONTENT_HASH: "h1", naming.SECRET_MOUNTS: mounts}

    async def secret_keys(self, namespace: str, name: str) -> set[str] | None:
        found = self.secrets.get(name)
        return None if found is None else set(found)

    async def secret_values(self, namespace: str, name: str, keys: Any) -> dict[str, bytes] | None:
        found = self.secrets.get(name)
        return None if found is None else {k: found[k] for k in keys if k in found}

    async def apply_all(self, objects: Any) -> list[Any]:
        self.applied.extend(objects)
        return []

    async def patch_status(self, kind: str, namespace: str, name: str, status: Any) -> None:
        self.statuses.append(dict(status))

    def condition(self, kind: str) -> dict[str, Any]:
        """The condition of that type in the last status written."""
        found: dict[str, Any] = next(
            c for c in self.statuses[-1]["conditions"] if c["type"] == kind
        )
        return found


Posted = list[tuple[str, str, str]]
ReconcileVd = Callable[[FakeKube, dict[str, Any]], tuple[BaseException | None, Posted]]


@pytest.fixture
def fake_kube() -> type[FakeKube]:
    return FakeKube


@pytest.fixture
def reconcile_vd(monkeypatch: pytest.MonkeyPatch) -> ReconcileVd:
    """Reconcile VoiceDeployment shop/order-status once against a FakeKube: the error kopf
    would get (None on success) and the events posted (type, reason, message)."""
    posted: Posted = []
    monkeypatch.setattr(
        events, "post", lambda ref, kind, reason, msg: posted.append((kind, reason, msg))
    )

    def reconcile(kube: FakeKube, spec: dict[str, Any]) -> tuple[BaseException | None, Posted]:
        state = OperatorState(kube=kube, settings=OperatorSettings())  # type: ignore[arg-type]

        async def run() -> BaseException | None:
            try:
                await vds.reconcile(
                    state, name="order-status", namespace="shop", uid="u1", generation=3,
                    spec=spec, status=None, retry=0,
                )  # fmt: skip
            except (kopf.TemporaryError, kopf.PermanentError) as exc:
                return exc
            return None

        return asyncio.run(run()), posted

    return reconcile


@pytest.fixture
def stalled_by(
    reconcile_vd: ReconcileVd,
) -> Callable[[dict[str, dict[str, bytes]], dict[str, Any]], tuple[dict[str, Any], Posted]]:
    """Reconcile with these Secrets, expecting a Stalled VoiceDeployment: nothing applied and
    retried (creating or fixing the Secret recovers by itself); its Stalled condition and the
    events posted."""

    def run(
        secrets: dict[str, dict[str, bytes]], spec: dict[str, Any]
    ) -> tuple[dict[str, Any], Posted]:
        kube = FakeKube(secrets)
        error, posted = reconcile_vd(kube, spec)
        assert isinstance(error, kopf.TemporaryError), error
        assert kube.applied == []
        return kube.condition("Stalled"), posted

    return run
