"""autoscaling/v2 HorizontalPodAutoscalers are accepted, validated and reconciled."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.e2e.kube import Kube

pytestmark = pytest.mark.e2e

PAUSE_IMAGE = os.environ.get("VOICETYPED_E2E_PAUSE_IMAGE", "registry.k8s.io/pause:3.10")


def _deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    container = {
        "name": "app",
        "image": PAUSE_IMAGE,
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def _hpa(name: str, min_replicas: int, max_replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                },
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "active_calls"},
                        "target": {"type": "AverageValue", "averageValue": "20"},
                    },
                },
            ],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                }
            },
        },
    }


def test_hpa_v2_is_accepted_and_reconciled(kube: Kube, namespace: str) -> None:
    kube.apply([_deployment("speech"), _hpa("speech", 2, 10)], namespace)
    stored = kube.get("hpa.v2.autoscaling", "speech", "-n", namespace)
    assert stored["apiVersion"] == "autoscaling/v2"
    assert stored["spec"]["minReplicas"] == 2 and stored["spec"]["maxReplicas"] == 10
    assert [m["type"] for m in stored["spec"]["metrics"]] == ["Resource", "Pods"]
    assert stored["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300

    # The controller-manager's HPA controller takes it up: it scales the Deployment to
    # minReplicas and reports its conditions (no metrics API here, so ScalingActive says so).
    def reconciled() -> dict[str, Any] | None:
        hpa = kube.get("hpa.v2.autoscaling", "speech", "-n", namespace)
        kinds = {c["type"] for c in hpa.get("status", {}).get("conditions", [])}
        return hpa if "AbleToScale" in kinds and "ScalingActive" in kinds else None

    kube.wait("the HPA controller to report conditions", reconciled, timeout_s=90)
    kube.wait(
        "the HPA to scale the Deployment up to minReplicas",
        lambda: kube.get("deployment", "speech", "-n", namespace)["spec"]["replicas"] == 2,
        timeout_s=90,
    )


def test_invalid_hpa_is_rejected(kube: Kube, namespace: str) -> None:
    result = kube.apply(_hpa("broken", 5, 2), namespace, check=False)
    assert result.returncode != 0
    assert "maxReplicas" in result.stderr and "must be greater than or equal to" in result.stderr, (
        result.stderr
    )
