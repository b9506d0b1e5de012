"""The API server is a real, released kube-apiserver, and its controllers are at work."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from tests.e2e.kube import Kube

pytestmark = pytest.mark.e2e


def test_server_reports_a_release_version(kube: Kube, api: httpx.Client) -> None:
    version = api.get("/version").json()
    assert re.fullmatch(r"v1\.\d+\.\d+.*", version["gitVersion"]), version
    assert version["major"] == "1" and version["minor"].rstrip("+").isdigit(), version
    if kube.local:
        # The local binaries are stamped with the pinned release (not v0.0.0).
        gomod = (kube_module_dir() / "go.mod").read_text()
        pinned = re.search(r"k8s\.io/kubernetes (v\S+)", gomod)
        assert pinned is not None
        assert version["gitVersion"] == pinned.group(1)
        client = json.loads(kube.kubectl("version", "-o", "json").stdout)["clientVersion"]
        assert client["gitVersion"] == pinned.group(1)


def kube_module_dir() -> Path:
    return Path(__file__).resolve().parent / "cluster" / "k8s"


def test_readyz_passes_every_check(api: httpx.Client) -> None:
    response = api.get("/readyz", params={"verbose": "true"})
    assert response.status_code == 200, response.text
    assert "readyz check passed" in response.text
    assert "[+]etcd ok" in response.text


def test_api_serves_the_groups_operators_need(kube: Kube) -> None:
    groups = set(kube.kubectl("api-versions").stdout.split())
    for needed in (
        "apps/v1",
        "autoscaling/v2",
        "apiextensions.k8s.io/v1",
        "coordination.k8s.io/v1",
        "policy/v1",
        "rbac.authorization.k8s.io/v1",
        "discovery.k8s.io/v1",
    ):
        assert needed in groups


def test_controller_manager_reconciles(kube: Kube, namespace: str) -> None:
    """A namespace gets its root CA ConfigMap: the controller-manager is running."""
    kube.get("configmap", "kube-root-ca.crt", "-n", namespace)


def test_rbac_is_enforced(kube: Kube, namespace: str) -> None:
    """The API server authorizes (RBAC): a plain service account may not list secrets."""
    sa = f"system:serviceaccount:{namespace}:default"
    denied = kube.kubectl(
        "auth", "can-i", "list", "secrets", "-n", namespace, "--as", sa, check=False
    )
    assert denied.stdout.strip() == "no", denied.stdout + denied.stderr
    allowed = kube.kubectl("auth", "can-i", "list", "secrets", "-n", namespace)
    assert allowed.stdout.strip() == "yes"


def test_local_components_are_healthy(kube: Kube) -> None:
    """etcd, kube-apiserver, controller-manager, scheduler, KWOK (and the real node's parts)
    all up, on loopback."""
    if not kube.local:
        pytest.skip("checks the local control plane's own processes (make cluster-up)")
    script = Path(__file__).resolve().parent / "cluster" / "cluster.py"
    result = subprocess.run(
        [sys.executable, str(script), "status"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line.split() for line in result.stdout.splitlines() if "pid=" in line]
    control_plane = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]
    real_node = "real node" in result.stdout
    node_parts = ["kubelet", "kube-proxy", "coredns"] if real_node else []
    assert [line[0] for line in lines] == control_plane + node_parts
    assert all(line[1] == "up" for line in lines), lines
    # Loopback only, but for the API server while the real node runs: then it listens on the
    # node's own address (on an interface of its own; pods reach it there).
    api_host = "10.250.255.1" if real_node else "127.0.0.1"
    for name, _, _, address in lines:
        host = api_host if name == "kube-apiserver" else "127.0.0.1"
        assert address.startswith(f"{host}:"), (name, address)
