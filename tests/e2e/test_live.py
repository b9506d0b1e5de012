"""Live traffic: a service image really runs and answers (kind; skipped on KWOK).

KWOK only marks pods Running, no process starts, so these tests need real kubelets
(``make kind-e2e`` builds and loads the images). They never pretend: on the local
control plane they skip, saying why.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from tests.e2e.kube import ClusterInfo, Kube

pytestmark = pytest.mark.e2e

TAG = os.environ.get("VOICETYPED_E2E_IMAGE_TAG", "dev")
MEDIA_IMAGE = f"voicetyped/media:{TAG}"
HTTP_PORT = 8081


def _media(name: str) -> dict[str, Any]:
    labels = {"app": name}
    probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 2}
    container = {
        "name": "media",
        "image": MEDIA_IMAGE,
        "imagePullPolicy": "IfNotPresent",  # kind-e2e loads it; never pulled
        "ports": [{"name": "http", "containerPort": HTTP_PORT}],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "httpGet": {"path": "/healthz", "port": "http"}},
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [container],
                    # The local cluster's real node is tainted (kind's nodes are not).
                    "tolerations": [
                        {"key": "voicetyped.io/node-pool", "value": "local", "effect": "NoSchedule"}
                    ],
                    # Stay off any KWOK fakes in a mixed cluster.
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {"key": "type", "operator": "NotIn", "values": ["kwok"]}
                                        ]
                                    }
                                ]
                            }
                        }
                    },
                },
            },
        },
    }


def test_media_service_runs_and_answers(
    kube: Kube, live_cluster: ClusterInfo, namespace: str, api: httpx.Client
) -> None:
    kube.apply(_media("media"), namespace)
    try:
        pod = kube.wait_running(namespace, "app=media", 1, timeout_s=180)[0]
    except AssertionError as err:
        raise AssertionError(
            f"{err}\n(is {MEDIA_IMAGE} loaded into the cluster? `make kind-e2e` builds and "
            "loads it)"
        ) from None
    assert pod["spec"]["nodeName"] in live_cluster.real_nodes
    name = pod["metadata"]["name"]
    # Ready came from the kubelet's real readinessProbe; now ask the process itself,
    # through the API server's pod proxy.
    response = api.get(f"/api/v1/namespaces/{namespace}/pods/{name}:{HTTP_PORT}/proxy/healthz")
    assert response.status_code == 200, response.text
    metrics = api.get(f"/api/v1/namespaces/{namespace}/pods/{name}:{HTTP_PORT}/proxy/metrics")
    assert metrics.status_code == 200 and "# TYPE" in metrics.text
    # Its logs are the service's JSON lines, read back through the kubelet.
    lines = kube.kubectl("logs", "-n", namespace, name).stdout.splitlines()
    assert lines, "the service logged nothing"
    assert all(isinstance(json.loads(line), dict) for line in lines), lines[:5]
    # And a command runs inside the container, as the image's non-root user.
    uid = kube.kubectl("exec", "-n", namespace, name, "--", "id", "-u").stdout.strip()
    assert uid == "10001"
