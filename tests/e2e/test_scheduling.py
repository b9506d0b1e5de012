"""Pods are scheduled by kube-scheduler and run (KWOK marks them Running on fake nodes).

GPU placement: pods that request ``nvidia.com/gpu`` and tolerate the GPU taint land on
GPU nodes only; pods without the toleration never land there.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.e2e.kube import Kube

pytestmark = pytest.mark.e2e

# On KWOK any image name works; on kind the pause image is on every node already.
PAUSE_IMAGE = os.environ.get("VOICETYPED_E2E_PAUSE_IMAGE", "registry.k8s.io/pause:3.10")
GPU = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
GPU_SELECTOR = {"nvidia.com/gpu.present": "true"}


def pod_spec(
    gpus: int = 0,
    tolerate_gpu: bool = False,
    node_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": "100m", "memory": "64Mi"}}
    if gpus:
        resources["limits"] = {GPU: str(gpus)}
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "app",
                "image": PAUSE_IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "resources": resources,
            }
        ],
        "terminationGracePeriodSeconds": 0,
    }
    if tolerate_gpu:
        spec["tolerations"] = [GPU_TOLERATION]
    if node_selector:
        spec["nodeSelector"] = node_selector
    return spec


def deployment(name: str, replicas: int, spec: dict[str, Any]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def pod(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_deployment_pods_are_scheduled_and_running(kube: Kube, namespace: str) -> None:
    kube.apply(deployment("web", 3, pod_spec()), namespace)
    pods = kube.wait_running(namespace, "app=web", 3)
    assert all(p["spec"]["nodeName"] for p in pods)
    assert all(p["status"].get("podIP") for p in pods)
    kube.kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=60s")
    status = kube.get("deployment", "web", "-n", namespace)["status"]
    assert status.get("readyReplicas") == 3 and status.get("availableReplicas") == 3, status


def test_gpu_pods_land_on_gpu_nodes_only(kube: Kube, namespace: str, gpu_nodes: list[str]) -> None:
    kube.apply(
        deployment("asr", 2, pod_spec(gpus=1, tolerate_gpu=True, node_selector=GPU_SELECTOR)),
        namespace,
    )
    # Tolerating the taint alone: the GPU request by itself rules out every CPU node.
    kube.apply(pod("asr-no-selector", pod_spec(gpus=1, tolerate_gpu=True)), namespace)
    pods = kube.wait_running(namespace, "app=asr", 2)
    assert {p["spec"]["nodeName"] for p in pods} <= set(gpu_nodes)
    lone = kube.wait_pod_running(namespace, "asr-no-selector")
    assert lone["spec"]["nodeName"] in gpu_nodes


def test_gpu_requests_are_accounted(kube: Kube, namespace: str, gpu_nodes: list[str]) -> None:
    """A pod wanting more GPUs than any node has stays Pending: Insufficient nvidia.com/gpu."""
    most = max(int(n["status"]["allocatable"].get(GPU, "0")) for n in kube.items("nodes"))
    kube.apply(
        pod("too-big", pod_spec(gpus=most + 1, tolerate_gpu=True, node_selector=GPU_SELECTOR)),
        namespace,
    )
    message = kube.wait_unschedulable(namespace, "too-big")
    assert f"Insufficient {GPU}" in message, message


def test_pods_without_the_toleration_never_land_on_gpu_nodes(
    kube: Kube, namespace: str, gpu_nodes: list[str]
) -> None:
    # The GPU nodes are far bigger, so without the taint the scheduler would prefer them.
    kube.apply(deployment("cpu-only", 8, pod_spec()), namespace)
    pods = kube.wait_running(namespace, "app=cpu-only", 8)
    placed = {p["spec"]["nodeName"] for p in pods}
    assert not placed & set(gpu_nodes), placed
    # Even when asked for a GPU node by selector, the taint keeps it off.
    kube.apply(pod("wants-gpu-node", pod_spec(node_selector=GPU_SELECTOR)), namespace)
    message = kube.wait_unschedulable(namespace, "wants-gpu-node")
    # Every tainted node refuses it for the taint: the GPU pool (and the local cluster's real
    # node, which is kept for pods meant to run).
    tainted = [n for n in kube.items("nodes") if any(
        t["effect"] == "NoSchedule" for t in n["spec"].get("taints", []))]  # fmt: skip
    assert set(gpu_nodes) <= {n["metadata"]["name"] for n in tainted}
    assert f"{len(tainted)} node(s) had untolerated taint" in message, message
    # And a GPU request without the toleration has nowhere to go.
    kube.apply(pod("gpu-no-toleration", pod_spec(gpus=1)), namespace)
    message = kube.wait_unschedulable(namespace, "gpu-no-toleration")
    assert "untolerated taint" in message or f"Insufficient {GPU}" in message, message
