"""The local cluster's one real node: kubelet, kube-proxy and CoreDNS on this machine.

Beside the KWOK pools (fake nodes for scale and GPU placement) the local control plane
gets one node where containers really run, so that images, the chart and live calls are
tested on it (see docs/testing.md):

    kubelet     containerd's CRI (the engine, engine.py), cgroupfs, a CNI bridge
    kube-proxy  iptables mode; NodePorts only on the node address
    CoreDNS     a process on the node answering cluster.local (the kubelet's cluster DNS)

The node has an address of its own on an interface with no ports (``vt-node0``, 10.250.255.1): the
kubelet refuses a loopback node IP, and pods reach the API server there (the API server
listens on it instead of 127.0.0.1 while the node runs). Pods get addresses from the
node's pod range on the bridge ``vt-cni0``; nothing is routed off the machine and DNS
answers only cluster names, so pod traffic stays here.

Only the Python standard library is used (cluster.py runs with any python3); it needs
root, Debian's containerd, runc, docker.io, iptables, conntrack and
containernetworking-plugins (``make system-deps``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

NODE_NAME = "voicetyped-node"
NODE_IP = "10.250.255.1"
NODE_INTERFACE = "vt-node0"
BRIDGE = "vt-cni0"
CNI_NETWORK = "voicetyped"
POD_CIDR = "10.244.128.0/24"  # within the cluster's pod range; KWOK hands out the lower half
POD_GATEWAY = "10.244.128.1"
NODE_LABELS = {"voicetyped.io/node-pool": "local"}
# Tainted, so that only pods meant to really run land here (the KWOK tests' pods name images
# that were never built and stay on the fake pools).
NODE_TAINT = "voicetyped.io/node-pool=local:NoSchedule"
CNI_BIN = Path("/usr/lib/cni")
CNI_STATE = Path("/var/lib/cni/networks") / CNI_NETWORK
PROGRAMS = ("containerd", "runc", "dockerd", "iptables", "conntrack", "ip")
COMPONENTS = ("kubelet", "kube-proxy", "coredns")
COREDNS_USER = "voicetyped-e2e-coredns"


def problems() -> list[str]:
    """Why this machine cannot run the node (empty: it can)."""
    found = []
    if os.geteuid() != 0:
        found.append("the node needs root (kubelet, containerd, iptables)")
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    missing += [
        f"{CNI_BIN}/{p}"
        for p in ("bridge", "host-local", "portmap", "loopback")
        if not (CNI_BIN / p).exists()
    ]
    if missing:
        found.append(f"missing {', '.join(missing)} (make system-deps installs them)")
    return found


def wanted() -> bool:
    """VOICETYPED_REAL_NODE: 1 the node must run (make test), 0 never, unset when it can."""
    setting = os.environ.get("VOICETYPED_REAL_NODE", "")
    if setting == "0":
        return False
    found = problems()
    if setting == "1" and found:
        raise RuntimeError("VOICETYPED_REAL_NODE=1 but " + "; ".join(found))
    return not found


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def prepare_network() -> None:
    """The node address on an interface of its own, forwarding on, bridged traffic through
    iptables (kube-proxy's Service rules must see pod-to-pod traffic on the bridge)."""
    if _ip("link", "show", NODE_INTERFACE, check=False).returncode != 0:
        # A bridge with no ports holds the address like a dummy interface would (some kernels,
        # this machine's among them, have no dummy driver).
        _ip("link", "add", NODE_INTERFACE, "type", "bridge")
    if f" {NODE_IP}/" not in _ip("-4", "addr", "show", "dev", NODE_INTERFACE).stdout:
        _ip("addr", "add", f"{NODE_IP}/32", "dev", NODE_INTERFACE)
    _ip("link", "set", NODE_INTERFACE, "up")
    for key, value in (
        ("net/ipv4/ip_forward", "1"),
        ("net/bridge/bridge-nf-call-iptables", "1"),
    ):
        path = Path("/proc/sys") / key
        if path.exists() and path.read_text().strip() != value:
            path.write_text(value)


def cni_conflist() -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,  # nothing leaves the machine
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": POD_GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(run: Path, pki: Path, healthz_port: int) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine has cgroup v1, which kubelet >= 1.35 refuses unless told (KEP-5573).
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "address": NODE_IP,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [NODE_IP],
        "clusterDomain": "cluster.local",
        "resolvConf": str(run / "node" / "resolv.conf"),
        "failSwapOn": False,
        "localStorageCapacityIsolation": False,
        # A developer machine's disk: never evict pods or collect the project's images
        # (nothing could pull them back).
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        # ConfigMap edits (a Dialog's) reach the pods' volumes within ~10 s, not up to a
        # minute: the tests wait for them.
        "syncFrequency": "10s",
        "shutdownGracePeriod": "0s",
        "staticPodPath": "",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
    }


def kube_proxy_config(run: Path, ports: dict[str, int]) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(run / "kube-proxy.kubeconfig")},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{ports['kube-proxy-healthz']}",
        "metricsBindAddress": f"127.0.0.1:{ports['kube-proxy-metrics']}",
        "clusterCIDR": "10.244.0.0/16",
        # NodePorts answer on the node address only, never on the machine's own interfaces.
        "nodePortAddresses": [f"{NODE_IP}/32"],
        # Leave the machine's conntrack table size alone (its sysctl may be read-only).
        "conntrack": {"maxPerCore": 0, "min": 0},
    }


def corefile(run: Path, ports: dict[str, int]) -> str:
    # Cluster names only: no `forward`, so no pod lookup leaves the machine.
    return f"""cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{ports["coredns-health"]}
    ready 127.0.0.1:{ports["coredns-ready"]}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {run / "coredns.kubeconfig"} voicetyped-e2e
        pods insecure
    }}
    cache 5
    loadbalance
}}
"""


COREDNS_RBAC: tuple[dict[str, Any], ...] = (
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "voicetyped-e2e:coredns"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["endpoints", "services", "pods", "namespaces"],
                "verbs": ["list", "watch"],
            },
            {
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["list", "watch"],
            },
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "voicetyped-e2e:coredns"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "voicetyped-e2e:coredns",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": COREDNS_USER}
        ],
    },
)


def write_configs(run: Path, pki: Path, ports: dict[str, int], cni_dir: Path) -> None:
    node = run / "node"
    node.mkdir(parents=True, exist_ok=True)
    cni_dir.mkdir(parents=True, exist_ok=True)
    for stale in cni_dir.glob("*.conflist"):
        stale.unlink()
    (cni_dir / f"10-{CNI_NETWORK}.conflist").write_text(json.dumps(cni_conflist(), indent=2))
    # The cluster's DNS is the kubelet's clusterDNS; the pods' fallback resolver is the
    # node itself too, so no name is looked up off the machine.
    (node / "resolv.conf").write_text(f"nameserver {NODE_IP}\n")
    (node / "kubelet.yaml").write_text(
        json.dumps(kubelet_config(run, pki, ports["kubelet-healthz"]), indent=2)
    )
    (node / "kube-proxy.yaml").write_text(json.dumps(kube_proxy_config(run, ports), indent=2))
    (node / "Corefile").write_text(corefile(run, ports))


def commands(bin_dir: Path, run: Path, containerd_socket: Path) -> dict[str, list[str]]:
    node = run / "node"
    labels = ",".join(f"{k}={v}" for k, v in NODE_LABELS.items())
    return {
        "kubelet": [
            str(bin_dir / "kubelet"),
            f"--config={node / 'kubelet.yaml'}",
            f"--kubeconfig={run / 'kubelet.kubeconfig'}",
            f"--container-runtime-endpoint=unix://{containerd_socket}",
            f"--root-dir={node / 'kubelet'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            f"--node-labels={labels}",
            f"--register-with-taints={NODE_TAINT}",
            "--v=1",
        ],
        "kube-proxy": [str(bin_dir / "kube-proxy"), f"--config={node / 'kube-proxy.yaml'}"],
        "coredns": [str(bin_dir / "coredns"), "-conf", str(node / "Corefile")],
    }


def node_ready(get: Callable[[str], tuple[int, bytes]]) -> bool:
    status, body = get(f"/api/v1/nodes/{NODE_NAME}")
    if status != 200:
        return False
    conditions = json.loads(body).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def clean_up(bin_dir: Path | None, containerd_socket: Path, kubelet_root: Path) -> None:
    """After the kubelet stopped: no container, address, rule or mount of it stays.

    The cluster's etcd is thrown away at `down`, so the next kubelet would never learn of
    these pods: remove their containers (sandboxes too) in containerd's k8s.io namespace,
    the CNI address leases, kube-proxy's rules and the bridge.
    """
    if containerd_socket.exists():
        base = ["ctr", "--address", str(containerd_socket), "--namespace", "k8s.io"]
        tasks = subprocess.run([*base, "tasks", "list", "-q"], capture_output=True, text=True)
        for task in tasks.stdout.split():
            subprocess.run([*base, "tasks", "kill", "-s", "SIGKILL", task], capture_output=True)
            subprocess.run([*base, "tasks", "delete", "-f", task], capture_output=True)
        listed = subprocess.run([*base, "containers", "list", "-q"], capture_output=True, text=True)
        for container in listed.stdout.split():
            subprocess.run([*base, "containers", "delete", container], capture_output=True)
    for netns in Path("/run/netns").glob("cni-*"):
        subprocess.run(["umount", str(netns)], capture_output=True)
        with contextlib.suppress(OSError):
            netns.unlink()
    shutil.rmtree(CNI_STATE, ignore_errors=True)
    # The pods' volumes (Secrets, projected tokens are tmpfs mounts), deepest first.
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{kubelet_root}/")), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    shutil.rmtree(kubelet_root, ignore_errors=True)
    if bin_dir is not None and (bin_dir / "kube-proxy").exists():
        subprocess.run([str(bin_dir / "kube-proxy"), "--cleanup"], capture_output=True)
    _remove_kubelet_chains()
    _ip("link", "delete", BRIDGE, check=False)


def _remove_kubelet_chains() -> None:
    """The kubelet's own iptables chains (KUBE-FIREWALL, the canaries), which kube-proxy's
    cleanup leaves: the jumps to them first, then the chains."""
    for table in ("filter", "nat", "mangle"):
        rules = subprocess.run(
            ["iptables", "-t", table, "-S"], capture_output=True, text=True
        ).stdout.splitlines()
        for rule in rules:
            words = shlex.split(rule)
            if words[:1] == ["-A"] and not words[1].startswith("KUBE-") and "KUBE-" in rule:
                subprocess.run(["iptables", "-t", table, "-D", *words[1:]], capture_output=True)
        chains = [r.split()[1] for r in rules if r.startswith("-N KUBE-")]
        for chain in chains:
            subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True)
        for chain in chains:
            subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True)
