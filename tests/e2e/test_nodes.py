"""The nodes are Ready: on the local control plane KWOK fakes in a CPU and a GPU pool, and one
real node where containers run."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.e2e.kube import ClusterInfo, Kube

pytestmark = pytest.mark.e2e

POOL_LABEL = "voicetyped.io/node-pool"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def _ready(node: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", [])
    )


def test_kubectl_get_nodes_shows_ready_nodes(kube: Kube, cluster_info: ClusterInfo) -> None:
    table = kube.kubectl("get", "nodes", "--no-headers").stdout.splitlines()
    assert table, "no nodes"
    statuses = {line.split()[0]: line.split()[1] for line in table}
    assert set(statuses) == {n["metadata"]["name"] for n in cluster_info.nodes}
    assert all(s == "Ready" for s in statuses.values()), statuses
    assert all(_ready(n) for n in cluster_info.nodes)


def test_local_cluster_has_fake_cpu_and_gpu_pools(kube: Kube, cluster_info: ClusterInfo) -> None:
    if not kube.local:
        pytest.skip("the fake node pools belong to the local control plane (make cluster-up)")
    pools: dict[str, list[str]] = {}
    for node in cluster_info.nodes:
        pools.setdefault(node["metadata"]["labels"].get(POOL_LABEL, ""), []).append(
            node["metadata"]["name"]
        )
    real = cluster_info.real_nodes
    assert sorted(pools) == (["cpu", "gpu", "local"] if real else ["cpu", "gpu"]), pools
    assert len(pools["cpu"]) == 2 and len(pools["gpu"]) == 2
    assert sorted(cluster_info.fake_nodes) == sorted(pools["cpu"] + pools["gpu"])
    assert cluster_info.simulated == (not real)
    # KWOK keeps them alive: leases renewed by its heartbeat stage.
    leases = kube.items("leases", "-n", "kube-node-lease")
    assert {lease["metadata"]["name"] for lease in leases} >= set(cluster_info.fake_nodes)


def test_gpu_nodes_advertise_gpus_and_are_tainted(
    cluster_info: ClusterInfo, gpu_nodes: list[str]
) -> None:
    by_name = {n["metadata"]["name"]: n for n in cluster_info.nodes}
    for name in gpu_nodes:
        node = by_name[name]
        assert int(node["status"]["capacity"]["nvidia.com/gpu"]) >= 1
        assert int(node["status"]["allocatable"]["nvidia.com/gpu"]) >= 1
        labels = node["metadata"]["labels"]
        assert labels.get("nvidia.com/gpu.present") == "true", labels
        assert "node.kubernetes.io/instance-type" in labels
        taints = node["spec"].get("taints", [])
        assert any(
            t["key"] == GPU_TAINT["key"] and t["effect"] == GPU_TAINT["effect"] for t in taints
        ), taints
    for name, node in by_name.items():
        if name not in gpu_nodes:
            assert "nvidia.com/gpu" not in node["status"].get("allocatable", {})


def test_the_real_node_runs_containers_and_is_kept_for_them(
    kube: Kube, live_cluster: ClusterInfo
) -> None:
    """A real node: a kubelet at the server's version on containerd, Ready. The local
    cluster's (cluster/node.py) is also labelled and tainted so that only pods meant to run
    land on it, and has its own address."""
    name = live_cluster.real_nodes[0]
    node = kube.get("node", name)
    info = node["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://"), info
    server = json.loads(kube.kubectl("get", "--raw", "/version").stdout)
    assert info["kubeletVersion"] == server["gitVersion"], info
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", ready
    if kube.local:  # kind's nodes are plain ones
        assert live_cluster.real_nodes == [name]
        assert node["metadata"]["labels"][POOL_LABEL] == "local"
        taint = {"key": POOL_LABEL, "value": "local", "effect": "NoSchedule"}
        assert taint in node["spec"]["taints"]
        addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
        assert addresses["InternalIP"] == "10.250.255.1", addresses
