"""Argo CD health checks (the chart's argocd/ Lua scripts) on real objects.

1. Every ``health_test.yaml`` case of each kind, Argo CD's own test format: its testdata
   object is created on the API server (so it is a valid object of our CRD), brought to its
   generation and given its status through the status subresource, and the script runs
   (lupa's Lua 5.1, as gopher-lua in Argo CD) on the object as the server returns it.
2. The same scripts on what the real operator writes: Healthy once the example is Ready,
   Degraded for an invalid Dialog edit and a missing Secret, Progressing before that.
"""

from __future__ import annotations

import copy
import json
import sys
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from voicetyped_operator.argocd import health, script

if TYPE_CHECKING:
    from tests.e2e.kube import Kube
    from tests.e2e.operator_support import Operator

pytestmark = pytest.mark.e2e


s = sys.modules["voicetyped_e2e_operator_support"]  # conftest.py loads it, with its fixtures

ROOT = s.REPO / "charts" / "voicetyped-operator" / "argocd" / "voicetyped.io"
SCRIPT = script(ROOT.parent)  # one health script for the three kinds
KINDS = ("VoiceDeployment", "Dialog", "Integration")
RESOURCE = {"VoiceDeployment": s.VD, "Dialog": s.DIALOG, "Integration": s.INTEGRATION}
# A spec field each kind can change to move its generation on.
BUMP = {
    "VoiceDeployment": lambda spec, n: spec["media"].__setitem__("maxCalls", 100 + n),
    "Dialog": lambda spec, n: spec.__setitem__("description", f"edit {n}"),
    "Integration": lambda spec, n: spec.__setitem__("timeoutMs", 3000 + n),
}


def _cases() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for kind in KINDS:
        tests = yaml.safe_load((ROOT / kind / "health_test.yaml").read_text())["tests"]
        out.extend((kind, t) for t in tests)
    return out


def test_every_kind_has_healthy_progressing_and_degraded_cases() -> None:
    for kind in KINDS:
        statuses = {t["healthStatus"]["status"] for k, t in _cases() if k == kind}
        assert statuses == {"Healthy", "Progressing", "Degraded"}, (kind, statuses)


@pytest.mark.parametrize(
    ("kind", "case"), _cases(), ids=lambda v: v if isinstance(v, str) else v["inputPath"]
)
def test_health_test_cases_on_server_objects(
    kube: Kube, namespace: str, voicetyped_crds: list[str], kind: str, case: dict[str, Any]
) -> None:
    data = yaml.safe_load((ROOT / kind / case["inputPath"]).read_text())
    name = data["metadata"]["name"]
    generation = data["metadata"].get("generation", 1)
    body = {
        "apiVersion": data["apiVersion"],
        "kind": kind,
        "metadata": {"name": name},
        "spec": copy.deepcopy(data["spec"]),
    }
    kube.apply(body, namespace)
    for n in range(1, generation):
        BUMP[kind](body["spec"], n)
        kube.apply(body, namespace)
    if "status" in data:
        kube.kubectl(
            "patch", RESOURCE[kind], name, "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": data["status"]}),
        )  # fmt: skip
    stored = s.get(kube, RESOURCE[kind], name, namespace)
    assert stored is not None and stored["metadata"]["generation"] == generation
    assert stored.get("status") == data.get("status"), "the status schema changed the testdata"
    assert health(SCRIPT, stored) == case["healthStatus"]


def _health(kube: Kube, kind: str, name: str, namespace: str) -> dict[str, str]:
    obj = s.get(kube, RESOURCE[kind], name, namespace)
    assert obj is not None
    return health(SCRIPT, obj)


def test_health_of_what_the_operator_reports(
    kube: Kube, namespace: str, operator: Operator
) -> None:
    example = {
        name: yaml.safe_load((s.EXAMPLE_DIR / f"{name}.yaml").read_text())
        for name in ("dialog", "integration", "voicedeployment", "secret")
    }
    # No Secret yet: the Integration and the VoiceDeployment are Degraded, naming it.
    for name in ("dialog", "integration", "voicedeployment"):
        kube.apply(example[name], namespace)
    s.wait_condition(kube, s.VD, "order-status", namespace, "Stalled", reason="SecretNotFound")
    got = _health(kube, "VoiceDeployment", "order-status", namespace)
    assert got["status"] == "Degraded" and "shop-api-key" in got["message"], got
    got = _health(kube, "Integration", "shop", namespace)
    assert got["status"] == "Degraded" and "SecretNotFound" in got["message"], got
    kube.apply(example["secret"], namespace)
    s.wait_condition(kube, s.VD, "order-status", namespace, "Ready", timeout_s=120)
    for kind, name in (("VoiceDeployment", "order-status"), ("Dialog", "order-status"),
                       ("Integration", "shop")):  # fmt: skip
        assert _health(kube, kind, name, namespace)["status"] == "Healthy", kind
    # An invalid Dialog edit: Degraded, while the served version keeps the pipeline Healthy.
    broken = copy.deepcopy(example["dialog"])
    broken["spec"]["states"]["greet"]["transitions"][0]["condition"] = "vars.missing"
    kube.apply(broken, namespace)
    s.wait_condition(kube, s.DIALOG, "order-status", namespace, "Stalled", reason="InvalidDialog")
    got = _health(kube, "Dialog", "order-status", namespace)
    assert got["status"] == "Degraded" and "vars.missing" in got["message"], got
    assert _health(kube, "VoiceDeployment", "order-status", namespace)["status"] == "Healthy"
