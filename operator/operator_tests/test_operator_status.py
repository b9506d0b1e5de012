"""kstatus conditions, Deployment readiness, the diff-base storage, Argo CD health (no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import kopf
import pytest
import yaml
from kopf._cogs.structs import bodies, patches
from voicetyped_operator import conditions
from voicetyped_operator.argocd import health, script
from voicetyped_operator.diffbase import HashDiffBaseStorage
from voicetyped_operator.reconcile.voicedeployment import component_status

ROOT = Path(__file__).resolve().parents[2] / "charts" / "voicetyped-operator" / "argocd"


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = conditions.merge([], 1, conditions.progressing("ComponentsNotReady", "waiting"))
    times = {c.type: c.last_transition_time for c in first}
    assert all(times.values())
    again = conditions.merge(first, 2, conditions.progressing("ComponentsNotReady", "still"))
    assert {c.type: c.last_transition_time for c in again} == times
    assert {c.observed_generation for c in again} == {2}
    assert conditions.same(first, again) is False  # message and generation changed
    ready = conditions.merge(
        [c.model_copy(update={"last_transition_time": "2020-01-01T00:00:00Z"}) for c in again],
        2,
        conditions.ready("all 5 components available"),
    )
    by_type = {c.type: c for c in ready}
    assert by_type["Ready"].status == "True"
    assert by_type["Ready"].last_transition_time != "2020-01-01T00:00:00Z"
    assert by_type["Stalled"].last_transition_time == "2020-01-01T00:00:00Z"  # stayed False


@pytest.mark.parametrize(
    ("generation", "status", "replicas", "available"),
    [
        (2, {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
             "availableReplicas": 2, "readyReplicas": 2}, 2, True),
        (3, {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
             "availableReplicas": 2, "readyReplicas": 2}, 2, False),  # not observed yet
        (2, {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2,
             "availableReplicas": 3, "readyReplicas": 3}, 2, False),  # old pod still there
        (2, {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
             "availableReplicas": 1, "readyReplicas": 1}, 2, False),
        (1, {"observedGeneration": 1}, 0, True),  # scaled to zero
    ],
)  # fmt: skip
def test_deployment_readiness(
    generation: int, status: dict[str, Any], replicas: int, available: bool
) -> None:
    assert component_status(generation, status, replicas).available is available


def test_hash_diff_base_detects_changes_without_copying_the_spec() -> None:
    storage = HashDiffBaseStorage(prefix="operator.voicetyped.io")
    raw: dict[str, Any] = {
        "apiVersion": "voicetyped.io/v1alpha1",
        "kind": "Dialog",
        "metadata": {"name": "d", "namespace": "n", "annotations": {}},
        "spec": {"initial": "a", "states": {"a": {"terminal": True}}},
    }
    body = bodies.Body(cast(bodies.RawBody, raw))
    assert storage.fetch(body=body) is None  # never handled
    patch = patches.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    stored = dict(patch["metadata"]["annotations"])
    value = stored["operator.voicetyped.io/last-handled-hash"]
    assert len(value) == 64  # a hash, not the spec
    handled = cast(bodies.RawBody, {**raw, "metadata": {**raw["metadata"], "annotations": stored}})
    assert storage.fetch(body=bodies.Body(handled)) == storage.build(body=bodies.Body(handled))
    edited = cast(bodies.RawBody, {**handled, "spec": {**raw["spec"], "initial": "b"}})
    assert storage.fetch(body=bodies.Body(edited)) == {}  # a diff: update handlers run
    assert isinstance(storage, kopf.DiffBaseStorage)


def _cases() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for kind in ("VoiceDeployment", "Dialog", "Integration"):
        tests = yaml.safe_load((ROOT / "voicetyped.io" / kind / "health_test.yaml").read_text())
        out.extend((kind, t) for t in tests["tests"])
    return out


@pytest.mark.parametrize(
    ("kind", "case"), _cases(), ids=lambda v: v if isinstance(v, str) else v["inputPath"]
)
def test_argocd_health_checks(kind: str, case: dict[str, Any]) -> None:
    directory = ROOT / "voicetyped.io" / kind
    obj = yaml.safe_load((directory / case["inputPath"]).read_text())
    assert health(script(ROOT), obj) == case["healthStatus"]
