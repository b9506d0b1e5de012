"""CustomResourceDefinitions are served with CEL validation and a status subresource.

What the operator's CRDs rely on: ``x-kubernetes-validations`` rules (including a
transition rule on ``oldSelf``) enforced by the API server with their messages, and
``/status`` written separately from the spec (``metadata.generation`` moves with spec
changes only).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from tests.e2e.kube import Kube

pytestmark = pytest.mark.e2e

RANGE_MESSAGE = "minReplicas must not exceed maxReplicas"
IMMUTABLE_MESSAGE = "mode is immutable"
GPU_MESSAGE = "streaming mode needs at least one GPU"


@dataclass(frozen=True)
class Crd:
    group: str
    version: str = "v1alpha1"
    kind: str = "Widget"
    plural: str = "widgets"

    @property
    def name(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def resource(self) -> str:
        """For kubectl: plural.version.group, unambiguous."""
        return f"{self.plural}.{self.version}.{self.group}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def obj(self, name: str, **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": {"name": name},
            "spec": spec,
        }


def _definition(crd: Crd) -> dict[str, Any]:
    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "observedGeneration": {"type": "integer"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
        },
    }
    spec = {
        "type": "object",
        "required": ["minReplicas", "maxReplicas", "mode"],
        "properties": {
            "minReplicas": {"type": "integer", "minimum": 0},
            "maxReplicas": {"type": "integer", "minimum": 1},
            "mode": {"type": "string", "enum": ["batch", "streaming"]},
            "gpus": {"type": "integer", "minimum": 0, "default": 0},
        },
        "x-kubernetes-validations": [
            {"rule": "self.minReplicas <= self.maxReplicas", "message": RANGE_MESSAGE},
            {"rule": "self.mode == oldSelf.mode", "message": IMMUTABLE_MESSAGE},
            {
                "rule": "self.mode != 'streaming' || self.gpus > 0",
                "message": GPU_MESSAGE,
                "fieldPath": ".gpus",
            },
        ],
    }
    status = {
        "type": "object",
        "properties": {
            "observedGeneration": {"type": "integer"},
            "phase": {"type": "string"},
            "conditions": {
                "type": "array",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": crd.name},
        "spec": {
            "group": crd.group,
            "scope": "Namespaced",
            "names": {
                "kind": crd.kind,
                "plural": crd.plural,
                "singular": crd.kind.lower(),
                "listKind": f"{crd.kind}List",
            },
            "versions": [
                {
                    "name": crd.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"}
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": spec, "status": status},
                        }
                    },
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def crd(kube: Kube) -> Iterator[Crd]:
    """A CRD of its own (unique group) for this module; deleted afterwards."""
    made = Crd(group=f"t{uuid.uuid4().hex[:8]}.e2e.voicetyped.io")
    kube.apply(_definition(made))
    kube.wait_crd(made.name)
    yield made
    kube.kubectl("delete", "crd", made.name, "--wait=true", "--timeout=60s")


def test_crd_is_served_with_status_subresource(kube: Kube, crd: Crd) -> None:
    stored = kube.get("crd", crd.name)
    names = {c["type"]: c["status"] for c in stored["status"]["conditions"]}
    assert names.get("Established") == "True" and names.get("NamesAccepted") == "True", names
    assert stored["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_valid_object_is_accepted(kube: Kube, crd: Crd, namespace: str) -> None:
    kube.apply(crd.obj("ok", minReplicas=1, maxReplicas=3, mode="batch"), namespace)
    stored = kube.get(crd.resource, "ok", "-n", namespace)
    assert stored["spec"] == {"minReplicas": 1, "maxReplicas": 3, "mode": "batch", "gpus": 0}
    assert stored["metadata"]["generation"] == 1


def test_invalid_object_is_rejected_with_the_rule_message(
    kube: Kube, crd: Crd, namespace: str, api: httpx.Client
) -> None:
    bad = crd.obj("bad", minReplicas=5, maxReplicas=2, mode="batch")
    result = kube.apply(bad, namespace, check=False)
    assert result.returncode != 0
    assert RANGE_MESSAGE in result.stderr, result.stderr
    # The same through the REST API: 422 Invalid, the rule's message in the causes.
    url = f"/apis/{crd.api_version}/namespaces/{namespace}/{crd.plural}"
    response = api.post(url, json=bad)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["reason"] == "Invalid"
    assert any(RANGE_MESSAGE in c["message"] for c in body["details"]["causes"]), body
    # A rule with a fieldPath points at the field.
    response = api.post(url, json=crd.obj("no-gpu", minReplicas=1, maxReplicas=1, mode="streaming"))
    assert response.status_code == 422, response.text
    causes = response.json()["details"]["causes"]
    assert any(GPU_MESSAGE in c["message"] and c["field"] == "spec.gpus" for c in causes), causes
    # Plain OpenAPI schema checks still apply too.
    result = kube.apply(
        crd.obj("enum", minReplicas=1, maxReplicas=1, mode="x"), namespace, check=False
    )
    assert result.returncode != 0 and "Unsupported value" in result.stderr, result.stderr
    assert kube.items(crd.resource, "-n", namespace) == []


def test_transition_rule_keeps_mode_immutable(kube: Kube, crd: Crd, namespace: str) -> None:
    kube.apply(crd.obj("w", minReplicas=1, maxReplicas=2, mode="batch"), namespace)
    patch = json.dumps({"spec": {"mode": "streaming", "gpus": 1}})
    result = kube.kubectl(
        "patch", crd.resource, "w", "-n", namespace, "--type=merge", "-p", patch, check=False
    )
    assert result.returncode != 0 and IMMUTABLE_MESSAGE in result.stderr, result.stderr
    assert kube.get(crd.resource, "w", "-n", namespace)["spec"]["mode"] == "batch"


def test_status_subresource_is_patched_separately(kube: Kube, crd: Crd, namespace: str) -> None:
    kube.apply(crd.obj("s", minReplicas=1, maxReplicas=2, mode="batch"), namespace)

    def patch(body: dict[str, Any], *extra: str) -> dict[str, Any]:
        out = kube.kubectl(
            "patch", crd.resource, "s", "-n", namespace, "--type=merge",
            "-p", json.dumps(body), *extra, "-o", "json",
        ).stdout  # fmt: skip
        result: dict[str, Any] = json.loads(out)
        return result

    status = {
        "observedGeneration": 1,
        "phase": "Ready",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Reconciled",
                "message": "all replicas ready",
                "observedGeneration": 1,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    after = patch({"status": status}, "--subresource=status")
    assert after["status"] == status
    assert after["metadata"]["generation"] == 1, "a status write must not bump the generation"

    # Through the main resource, status is ignored ...
    after = patch({"status": {"phase": "Hijacked"}})
    assert after["status"]["phase"] == "Ready"
    # ... and through /status, spec is ignored.
    after = patch({"spec": {"maxReplicas": 9}}, "--subresource=status")
    assert after["spec"]["maxReplicas"] == 2

    after = patch({"spec": {"maxReplicas": 4}})
    assert after["metadata"]["generation"] == 2
    assert after["status"] == status, "a spec write must leave the status alone"
    # The status schema is enforced on the subresource too.
    bad = kube.kubectl(
        "patch", crd.resource, "s", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"conditions": [{"type": "Ready", "status": "Maybe"}]}}),
        check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "Unsupported value" in bad.stderr, bad.stderr
    table = kube.kubectl("get", crd.resource, "s", "-n", namespace).stdout
    assert "Ready" in table.splitlines()[1]
