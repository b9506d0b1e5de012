#!/usr/bin/env python3
"""A local Kubernetes control plane built from Go modules, for the e2e tests.

    cluster.py build        build the binaries once (cached by component versions)
    cluster.py up           start etcd, kube-apiserver, kube-controller-manager,
                            kube-scheduler and KWOK with a CPU and a GPU fake node pool
    cluster.py down         stop everything and delete the etcd data
    cluster.py status       what runs (exit 1 unless the whole cluster is healthy)
    cluster.py env          shell lines: export KUBECONFIG=...; export PATH=<bin>:$PATH
    cluster.py exec -- CMD  run CMD against $KUBECONFIG if set, else against the local
                            cluster (brought up for CMD and down again unless it was up)
    cluster.py kind-e2e     kind cluster + images + the e2e suite (which installs the chart)
    cluster.py kind-down    delete that kind cluster

Everything lives outside the checkout, in ``$VOICETYPED_CACHE/cluster`` (default
``${XDG_CACHE_HOME:-~/.cache}/voicetyped/cluster``):

    bin/<versions>-<hash>/  etcd kube-apiserver kube-controller-manager kube-scheduler
                            kwok kubectl helm pki, kwok-stages.yaml, build.json
    run/                    state.json, kubeconfig, pki/, etcd/, *.kubeconfig, logs/
    kind-<version>/kind     the kind binary (kind-e2e only)

The binaries come from two small wrapper Go modules whose go.mod files pin the
releases: ``k8s/`` (kube-apiserver, kube-controller-manager, kube-scheduler,
kubectl, kwok, helm, pki: one ``go build`` invocation, so the shared packages
compile once) and ``etcd/`` (apart, so that etcd and Kubernetes each keep the
dependency versions their releases pin). Only the Python standard library is used:
run with any python3. Every port is picked free at ``up`` and bound on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # its siblings, also when loaded by path (tests/e2e/conftest)
if TYPE_CHECKING:
    from tests.e2e.cluster import engine, node
else:
    import engine
    import node

REPO = HERE.parents[2]
MODULE = HERE / "k8s"  # kube-*, kubelet, kubectl, kwok, helm, pki
ETCD_MODULE = HERE / "etcd"
COREDNS_MODULE = HERE / "coredns"

# Bump when the build recipe below changes in a way go.mod/go.sum do not show.
RECIPE = "1"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
NODE_BINARIES = ("kubelet", "kube-proxy", "coredns")  # the real node (node.py)
BINARIES = (*COMPONENTS, *NODE_BINARIES, "kubectl", "helm", "pki")
PINNED = {  # module -> (short name, the wrapper module whose go.mod pins it)
    "k8s.io/kubernetes": ("kubernetes", MODULE),
    "go.etcd.io/etcd/server/v3": ("etcd", ETCD_MODULE),
    "sigs.k8s.io/kwok": ("kwok", MODULE),
    "helm.sh/helm/v3": ("helm", MODULE),
    "github.com/coredns/coredns": ("coredns", COREDNS_MODULE),
}
KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)

SERVICE_CIDR = "10.96.0.0/12"
SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.0/16"
KWOK_POD_CIDR = "10.244.0.0/17"  # the fake pods' addresses; the real node has 10.244.128.0/24
KWOK_NODE_IP = "10.244.0.1"
CLUSTER_NAME = "voicetyped-e2e"

FAKE_ANNOTATION = "kwok.x-k8s.io/node"
POOL_LABEL = "voicetyped.io/node-pool"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}

KIND_VERSION = "v0.33.0"
KIND_CLUSTER = "voicetyped-e2e"
IMAGE_TAG = "dev"
CHART = REPO / "charts" / "voicetyped-operator"
OPERATOR_DOCKERFILE = REPO / "operator" / "Dockerfile"


class ClusterError(Exception):
    """Something the user has to act on; the message says what."""


def log(message: str) -> None:
    print(f"cluster: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- paths


cache_root = engine.cache_root  # one cache for the cluster and the node's engine


def cluster_dir() -> Path:
    return cache_root() / "cluster"


def run_dir() -> Path:
    return cluster_dir() / "run"


def kubeconfig_path() -> Path:
    return run_dir() / "kubeconfig"


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """One build/up/down at a time (two `make` runs, or pytest and a shell)."""
    cluster_dir().mkdir(parents=True, exist_ok=True)
    with (cluster_dir() / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- build


def go_binary() -> str:
    found = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if not found:
        raise ClusterError(
            "no Go toolchain: install Go >= the `go` line of tests/e2e/cluster/k8s/go.mod"
        )
    return found


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Static binaries like the upstream releases; never switch toolchains behind our back.
    env.update(CGO_ENABLED="0", GOTOOLCHAIN="local")
    return env


def pinned_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for module, (name, wrapper) in PINNED.items():
        text = (wrapper / "go.mod").read_text()
        match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
        if not match:
            raise ClusterError(f"{module} is not required in {wrapper / 'go.mod'}")
        versions[name] = match.group(1)
    return versions


def go_version(go: str) -> str:
    out = subprocess.run(
        [go, "env", "GOVERSION"], check=True, capture_output=True, text=True, env=go_env()
    )
    return out.stdout.strip()


def ldflags(versions: dict[str, str]) -> str:
    kube = versions["kubernetes"]
    major, minor = kube.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    # Without these the binaries report v0.0.0 (and kubectl/helm warn about skew).
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={kube}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    helm = "helm.sh/helm/v3"
    flags += [
        f"-X {helm}/internal/version.version={versions['helm']}",
        f"-X {helm}/internal/version.gitTreeState=clean",
        f"-X {helm}/pkg/lint/rules.k8sVersionMajor={major}",
        f"-X {helm}/pkg/lint/rules.k8sVersionMinor={minor}",
        f"-X {helm}/pkg/chartutil.k8sVersionMajor={major}",
        f"-X {helm}/pkg/chartutil.k8sVersionMinor={minor}",
    ]
    return " ".join(flags)


def build_key(go: str) -> tuple[str, dict[str, str]]:
    versions = pinned_versions()
    gover = go_version(go)
    digest = hashlib.sha256()
    sources = [
        path
        for module in (MODULE, ETCD_MODULE, COREDNS_MODULE)
        for path in [module / "go.mod", module / "go.sum", *sorted(module.rglob("*.go"))]
    ]
    for path in sources:
        digest.update(str(path.relative_to(HERE)).encode() + b"\0" + path.read_bytes())
    digest.update(f"{gover}\0{RECIPE}\0{ldflags(versions)}".encode())
    name = "_".join(f"{k}-{v}" for k, v in versions.items())
    return f"{name}_{gover}_{digest.hexdigest()[:10]}", {**versions, "go": gover}


def bin_dir_if_built() -> Path | None:
    """The cached binaries for the current go.mod, or None (no Go needed to ask)."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        return None
    try:
        key, _ = build_key(go)
    except (OSError, subprocess.CalledProcessError, ClusterError):
        return None
    path = cluster_dir() / "bin" / key
    return path if (path / "build.json").exists() else None


def build() -> Path:
    go = go_binary()
    key, versions = build_key(go)
    target = cluster_dir() / "bin" / key
    if (target / "build.json").exists():
        return target
    with locked():
        if (target / "build.json").exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=target.parent))
        started = time.monotonic()
        log(f"building {', '.join(f'{k} {v}' for k, v in versions.items())} into {target}")
        log("the first build compiles Kubernetes from source: about 12 minutes on 2 cores")
        jobs = os.environ.get("VOICETYPED_GO_JOBS", str(os.cpu_count() or 2))
        common = ["build", "-mod=readonly", "-trimpath", "-p", jobs]
        builds = [
            # One invocation for everything from k8s.io/kubernetes and its kin, so the
            # shared packages compile once.
            (
                MODULE,
                [*common, "-ldflags", ldflags(versions), "-o", f"{staging}/", "tool", "./cmd/pki"],
            ),
            (ETCD_MODULE, [*common, "-ldflags", "-s -w", "-o", str(staging / "etcd"), "."]),
            (COREDNS_MODULE, [*common, "-ldflags", "-s -w", "-o", str(staging / "coredns"), "."]),
        ]
        try:
            for module, args in builds:
                subprocess.run([go, *args], cwd=module, env=go_env(), check=True)
            missing = [b for b in BINARIES if not (staging / b).exists()]
            if missing:
                raise ClusterError(f"go build produced no {', '.join(missing)}")
            _write_kwok_stages(go, staging / "kwok-stages.yaml")
            seconds = round(time.monotonic() - started, 1)
            record = {"versions": versions, "seconds": seconds, "built": time.time()}
            (staging / "build.json").write_text(json.dumps(record, indent=2) + "\n")
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log(f"built in {seconds:.0f} s")
        _prune_builds(keep=target)
    return target


def _prune_builds(keep: Path, count: int = 3) -> None:
    """Each build is ~0.5 GB: keep the newest few (and the one a running cluster uses)."""
    state = State.load()
    builds = sorted(
        (p for p in keep.parent.iterdir() if (p / "build.json").exists()),
        key=lambda p: (p / "build.json").stat().st_mtime,
        reverse=True,
    )
    for old in builds[count:]:
        if old != keep and (state is None or old != state.bin):
            log(f"removing old build {old.name}")
            shutil.rmtree(old, ignore_errors=True)


def _write_kwok_stages(go: str, out: Path) -> None:
    """KWOK's default stages (what kwokctl loads), taken from the pinned kwok module."""
    found = subprocess.run(
        [go, "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kwok"],
        cwd=MODULE, env=go_env(), check=True, capture_output=True, text=True,
    )  # fmt: skip
    root = Path(found.stdout.strip())
    docs = [(root / rel).read_text().strip() for rel in KWOK_STAGES]
    out.write_text("\n---\n".join(docs) + "\n")


def build_kind() -> Path:
    binary = cluster_dir() / f"kind-{KIND_VERSION}" / "kind"
    if binary.exists():
        return binary
    env = go_env()
    env["GOBIN"] = str(binary.parent)
    log(f"building kind {KIND_VERSION} into {binary.parent}")
    subprocess.run(
        [go_binary(), "install", f"sigs.k8s.io/kind@{KIND_VERSION}"], env=env, check=True
    )
    return binary


# --------------------------------------------------------------------------- state


@dataclass
class State:
    bin: Path
    ports: dict[str, int]
    pids: dict[str, int]
    started: float
    real_node: bool = False
    """The cluster has the real node (node.py); the API server then listens on its address."""

    def save(self) -> None:
        data = {
            "bin": str(self.bin),
            "ports": self.ports,
            "pids": self.pids,
            "started": self.started,
            "real_node": self.real_node,
        }
        tmp = run_dir() / "state.json.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.rename(run_dir() / "state.json")

    @classmethod
    def load(cls) -> State | None:
        try:
            data = json.loads((run_dir() / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return cls(
            Path(data["bin"]),
            dict(data["ports"]),
            dict(data["pids"]),
            float(data["started"]),
            bool(data.get("real_node", False)),
        )

    @property
    def host(self) -> str:
        return node.NODE_IP if self.real_node else "127.0.0.1"

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.ports['kube-apiserver']}"

    @property
    def components(self) -> tuple[str, ...]:
        return (*COMPONENTS, *node.COMPONENTS) if self.real_node else COMPONENTS


# --------------------------------------------------------------------------- HTTP


def _ssl_context(pki: Path, client: str | None = "admin") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if client:
        ctx.load_cert_chain(str(pki / f"{client}.crt"), str(pki / f"{client}.key"))
    return ctx


def _insecure_context() -> ssl.SSLContext:
    # kube-controller-manager and kube-scheduler serve /healthz with a self-signed cert.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _request(
    url: str,
    ctx: ssl.SSLContext | None = None,
    method: str = "GET",
    body: Any = None,
    content_type: str = "application/json",
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as err:
        return int(err.code), bytes(err.read())


def _healthy(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    try:
        status, _ = _request(url, ctx, timeout=2.0)
    except (OSError, ssl.SSLError):
        return False
    return status == 200


def _wait(
    what: str,
    check: Callable[[], bool],
    timeout_s: float,
    logfile: Path | None,
    process: tuple[int, Path] | None = None,
) -> None:
    """Poll ``check``; fail at the timeout, or at once if ``process`` (pid, binary) exits."""
    failure = engine.wait_for(what, check, timeout_s, logfile, process)
    if failure is not None:
        raise ClusterError(failure)


MEDIA_RTP_PORTS = range(20000, 21000)
"""The media gateway's default RTP ports (``VOICETYPED_RTP_PORT_MIN``/``MAX``)."""


def _free_ports(names: Sequence[str]) -> dict[str, int]:
    """Ports free on 127.0.0.1 below the kernel's ephemeral range: an outgoing connection can
    take an ephemeral port between this pick and the component's bind. Not the media gateway's
    RTP ports either. (The test kit picks with port-for; this script uses the standard library
    only.)"""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    pool = [p for p in range(10000, low) if p not in MEDIA_RTP_PORTS]
    candidates = random.sample(pool, k=min(2000, len(pool)))
    ports: dict[str, int] = {}
    for port in candidates:
        if len(ports) == len(names):
            break
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports[names[len(ports)]] = port
    if len(ports) < len(names):
        raise ClusterError(f"no {len(names)} free ports on 127.0.0.1 between 10000 and {low}")
    return ports


# --------------------------------------------------------------------------- nodes


@dataclass(frozen=True)
class Pool:
    name: str
    instance_type: str
    resources: dict[str, str]
    labels: dict[str, str]
    taints: list[dict[str, str]]
    size: int = 2


POOLS = (
    Pool("cpu", "m6i.2xlarge", {"cpu": "8", "memory": "32Gi"}, {}, []),
    Pool(
        "gpu",
        "g6.12xlarge",  # 4 x NVIDIA L4, labelled as GPU feature discovery would
        {"cpu": "48", "memory": "192Gi", GPU_RESOURCE: "4"},
        {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": "NVIDIA-L4",
            "nvidia.com/gpu.count": "4",
            "nvidia.com/gpu.memory": "23034",
        },
        [GPU_TAINT],
    ),
)


def node_pools(kubelet_version: str = "") -> list[dict[str, Any]]:
    """The fake nodes: each pool labelled, tainted and sized like a cloud node group."""
    nodes: list[dict[str, Any]] = []
    for pool in POOLS:
        for index in range(pool.size):
            name = f"kwok-{pool.name}-{index}"
            capacity = {**pool.resources, "pods": "110", "ephemeral-storage": "100Gi"}
            labels = {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": pool.instance_type,
                "topology.kubernetes.io/region": "local",
                "topology.kubernetes.io/zone": f"local-{'abc'[index % 3]}",
                POOL_LABEL: pool.name,
                **pool.labels,
            }
            status = {
                "capacity": capacity,
                "allocatable": capacity,
                "addresses": [
                    {"type": "InternalIP", "address": f"10.250.0.{len(nodes) + 10}"},
                    {"type": "Hostname", "address": name},
                ],
                "nodeInfo": {
                    "kubeletVersion": kubelet_version or "kwok",
                    "osImage": "KWOK fake node",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            }
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {FAKE_ANNOTATION: "fake"},
                        "labels": labels,
                    },
                    "spec": {"taints": pool.taints},
                    "status": status,
                }
            )
    return nodes


def _create_nodes(state: State, ctx: ssl.SSLContext) -> None:
    kubelet_version = json.loads((state.bin / "build.json").read_text())["versions"]["kubernetes"]
    for fake in node_pools(kubelet_version):
        name = fake["metadata"]["name"]
        status, body = _request(f"{state.server}/api/v1/nodes", ctx, "POST", fake)
        if status not in (201, 409):
            raise ClusterError(f"creating node {name}: HTTP {status}: {body.decode()[:500]}")
        # A create keeps the status the body carries, but say it once more in case the
        # node existed: KWOK then takes capacity/allocatable from here.
        patch = {"status": fake["status"]}
        url = f"{state.server}/api/v1/nodes/{name}/status"
        status, body = _request(url, ctx, "PATCH", patch, "application/merge-patch+json")
        if status != 200:
            raise ClusterError(f"patching node {name} status: HTTP {status}: {body.decode()[:500]}")


def _nodes_ready(state: State, ctx: ssl.SSLContext) -> bool:
    try:
        status, body = _request(f"{state.server}/api/v1/nodes?labelSelector=type%3Dkwok", ctx)
    except OSError:
        return False
    if status != 200:
        return False
    items = json.loads(body)["items"]
    ready = [
        n
        for n in items
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in n.get("status", {}).get("conditions", [])
        )
        and not any(t["key"].startswith("node.kubernetes.io/") for t in n["spec"].get("taints", []))
    ]
    return len(ready) == len(node_pools())


# --------------------------------------------------------------------------- up / down


def _kubeconfig(path: Path, server: str, pki: Path, client: str) -> None:
    def q(value: object) -> str:
        return json.dumps(str(value))  # a JSON string is a YAML double-quoted scalar

    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: {CLUSTER_NAME}
  cluster:
    server: {q(server)}
    certificate-authority: {q(pki / "ca.crt")}
users:
- name: {client}
  user:
    client-certificate: {q(pki / f"{client}.crt")}
    client-key: {q(pki / f"{client}.key")}
contexts:
- name: {CLUSTER_NAME}
  context:
    cluster: {CLUSTER_NAME}
    user: {client}
current-context: {CLUSTER_NAME}
"""
    )
    path.chmod(0o600)


def _commands(bin_dir: Path, ports: dict[str, int], real_node: bool) -> dict[str, list[str]]:
    run = run_dir()
    pki = run / "pki"
    etcd = f"http://127.0.0.1:{ports['etcd']}"
    peer = f"http://127.0.0.1:{ports['etcd-peer']}"

    def component(name: str, kubeconfig: Path) -> list[str]:
        return [
            str(bin_dir / name),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports[name]}",
            "--leader-elect=false",
        ]

    return {
        "etcd": [
            str(bin_dir / "etcd"),
            "--name=default",
            f"--data-dir={run / 'etcd'}",
            f"--listen-client-urls={etcd}",
            f"--advertise-client-urls={etcd}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync=true",  # a throwaway test cluster: speed over durability
            "--log-level=warn",
        ],
        "kube-apiserver": [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd}",
            *_apiserver_address(real_node),
            f"--secure-port={ports['kube-apiserver']}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # The kubelet's own requests go through the Node authorizer, as on kubeadm.
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            # The aggregation layer (APIServices such as metrics-server) as kubeadm sets it up.
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            "--allow-privileged=true",
            "--profiling=false",
        ],
        "kube-controller-manager": [
            *component("kube-controller-manager", run / "kube-controller-manager.kubeconfig"),
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--profiling=false",
        ],
        "kube-scheduler": [
            *component("kube-scheduler", run / "kube-scheduler.kubeconfig"),
            "--profiling=false",
        ],
        "kwok": [
            str(bin_dir / "kwok"),
            f"--kubeconfig={run / 'kwok.kubeconfig'}",
            f"--config={bin_dir / 'kwok-stages.yaml'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_ANNOTATION}=fake",
            f"--cidr={KWOK_POD_CIDR}",
            f"--node-ip={KWOK_NODE_IP}",
            f"--server-address=127.0.0.1:{ports['kwok']}",
            "--node-lease-duration-seconds=40",
        ],
    }


def _apiserver_address(real_node: bool) -> list[str]:
    if real_node:
        # Pods reach it through the `kubernetes` Service, whose endpoint is this address.
        return [f"--bind-address={node.NODE_IP}", f"--advertise-address={node.NODE_IP}"]
    return [
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        # The Endpoints of the `kubernetes` Service may not be a loopback address; no pod
        # could use them anyway (KWOK runs none), so keep that reconciler off.
        "--endpoint-reconciler-type=none",
    ]


def _start(name: str, argv: list[str]) -> int:
    return engine.start_logged(argv, run_dir() / "logs" / f"{name}.log", run_dir())


def healthy(state: State) -> dict[str, bool]:
    pki = run_dir() / "pki"
    result = {name: engine.alive(pid, state.bin / name) for name, pid in state.pids.items()}
    if result.get("kube-apiserver"):
        try:
            ctx = _ssl_context(pki)
        except (OSError, ssl.SSLError):
            result["kube-apiserver"] = False
        else:
            result["kube-apiserver"] = _healthy(f"{state.server}/readyz", ctx)
    return result


def is_up() -> State | None:
    state = State.load()
    if state is None:
        return None
    health = healthy(state)
    if set(health) == set(state.components) and all(health.values()):
        return state
    return None


def _real_node_wanted() -> bool:
    try:
        return node.wanted()
    except RuntimeError as err:
        raise ClusterError(str(err)) from None


def up() -> State:
    bin_dir = build()
    with locked():
        current = is_up()
        if current is not None and not current.real_node and _real_node_wanted():
            log("it runs without the real node: stopping it to start one with it")
            _down_locked()
            current = None
        if current is not None:
            log(f"already up: {current.server} (KUBECONFIG={kubeconfig_path()})")
            if current.bin != bin_dir:
                log("it runs an older build: `down` and `up` again to switch to the current one")
            return current
        if State.load() is not None:
            log("a previous cluster is partly running: stopping it first")
            _down_locked()
        return _up_locked(bin_dir)


def _up_locked(bin_dir: Path) -> State:
    started = time.monotonic()
    run = run_dir()
    for stale in ("etcd", "pki", "state.json"):
        path = run / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    run.mkdir(parents=True, exist_ok=True)
    logs = run / "logs"
    logs.mkdir(exist_ok=True)
    for name in (*COMPONENTS, *node.COMPONENTS):  # keep the previous run's logs, one generation
        current = logs / f"{name}.log"
        if current.exists():
            current.replace(logs / f"{name}.log.1")
    real_node = _real_node_wanted()
    containerd_socket = None
    if real_node:
        try:
            containerd_socket = engine.up(own=True).containerd
        except engine.EngineError as err:
            raise ClusterError(f"the real node's engine: {err}") from None
        node.prepare_network()
    pki = run / "pki"
    subprocess.run(
        [str(bin_dir / "pki"), f"-dir={pki}", f"-service-ip={SERVICE_IP}",
         f"-node-ip={node.NODE_IP}", f"-node-name={node.NODE_NAME}"],
        check=True,
    )  # fmt: skip
    node_ports = ("kubelet-healthz", "kube-proxy-healthz", "kube-proxy-metrics",
                  "coredns-health", "coredns-ready")  # fmt: skip
    ports = _free_ports(("etcd", "etcd-peer", *COMPONENTS[1:], *(node_ports if real_node else ())))
    state = State(bin=bin_dir, ports=ports, pids={}, started=time.time(), real_node=real_node)
    server = state.server
    clients = ["kube-controller-manager", "kube-scheduler", "kwok"]
    if real_node:
        clients += ["kubelet", "kube-proxy", "coredns"]
    _kubeconfig(run / "kubeconfig", server, pki, "admin")
    for client in clients:
        _kubeconfig(run / f"{client}.kubeconfig", server, pki, client)
    commands = _commands(bin_dir, ports, real_node)
    if containerd_socket is not None:
        node.write_configs(run, pki, ports, engine.cni_conf_dir())
        commands.update(node.commands(bin_dir, run, containerd_socket))
    ctx = _ssl_context(pki)
    insecure = _insecure_context()

    def wait_for(name: str, what: str, check: Callable[[], bool], timeout_s: float) -> None:
        process = (state.pids[name], bin_dir / name)
        _wait(what, check, timeout_s, logs / f"{name}.log", process)

    try:
        state.pids["etcd"] = _start("etcd", commands["etcd"])
        state.save()
        etcd_health = f"http://127.0.0.1:{ports['etcd']}/health"
        wait_for("etcd", "etcd /health", functools.partial(_healthy, etcd_health), 30)
        state.pids["kube-apiserver"] = _start("kube-apiserver", commands["kube-apiserver"])
        state.save()
        readyz = functools.partial(_healthy, f"{server}/readyz", ctx)
        wait_for("kube-apiserver", "kube-apiserver /readyz", readyz, 120)
        for name in COMPONENTS[2:]:
            state.pids[name] = _start(name, commands[name])
        state.save()
        _create_nodes(state, ctx)
        for name in ("kube-controller-manager", "kube-scheduler"):
            url = f"https://127.0.0.1:{ports[name]}/healthz"
            wait_for(name, f"{name} /healthz", functools.partial(_healthy, url, insecure), 60)
        kwok_health = f"http://127.0.0.1:{ports['kwok']}/healthz"
        wait_for("kwok", "kwok /healthz", functools.partial(_healthy, kwok_health), 60)
        wait_for("kwok", "the fake nodes to be Ready", lambda: _nodes_ready(state, ctx), 60)
        sa = f"{server}/api/v1/namespaces/default/serviceaccounts/default"
        wait_for(
            "kube-controller-manager",
            "the default ServiceAccount",
            functools.partial(_healthy, sa, ctx),
            60,
        )
        if real_node:
            _start_node(state, commands, ctx, wait_for)
    except BaseException:
        log(f"start-up failed; logs are in {logs}")
        _down_locked()
        raise
    seconds = time.monotonic() - started
    log(f"up in {seconds:.1f} s: {server}")
    log(f"export KUBECONFIG={run / 'kubeconfig'} PATH={bin_dir}:$PATH")
    return state


def _start_node(
    state: State,
    commands: dict[str, list[str]],
    ctx: ssl.SSLContext,
    wait_for: Callable[[str, str, Callable[[], bool], float], None],
) -> None:
    for manifest in node.COREDNS_RBAC:
        kind = manifest["kind"].lower() + "s"
        url = f"{state.server}/apis/rbac.authorization.k8s.io/v1/{kind}"
        status, body = _request(url, ctx, "POST", manifest)
        if status not in (201, 409):
            raise ClusterError(f"creating {manifest['kind']}: HTTP {status}: {body.decode()[:300]}")
    for name in node.COMPONENTS:
        state.pids[name] = _start(name, commands[name])
    state.save()

    def get(path: str) -> tuple[int, bytes]:
        try:
            return _request(state.server + path, ctx)
        except (OSError, ssl.SSLError):
            return 0, b""

    ready = f"http://127.0.0.1:{state.ports['coredns-ready']}/ready"
    wait_for("coredns", "CoreDNS /ready", functools.partial(_healthy, ready), 60)
    proxy = f"http://127.0.0.1:{state.ports['kube-proxy-healthz']}/healthz"
    wait_for("kube-proxy", "kube-proxy /healthz", functools.partial(_healthy, proxy), 60)
    wait_for("kubelet", f"node {node.NODE_NAME} to be Ready", lambda: node.node_ready(get), 120)


def down() -> None:
    with locked():
        _down_locked()


def _down_locked() -> None:
    state = State.load()
    if state is not None:
        for name in reversed(state.components):
            pid = state.pids.get(name)
            if pid is not None:
                engine.stop_process(pid, state.bin / name, name)
        if state.real_node:
            node.clean_up(state.bin, engine.containerd_socket(), run_dir() / "node" / "kubelet")
            # The node's runtime goes with it (its images stay cached; `up` restarts it).
            engine.down()
    run = run_dir()
    for data in ("etcd", "pki"):
        shutil.rmtree(run / data, ignore_errors=True)
    for kubeconfig in run.glob("*kubeconfig"):
        kubeconfig.unlink()
    (run / "state.json").unlink(missing_ok=True)
    log("down" if state is not None else "down (nothing was running)")


# --------------------------------------------------------------------------- commands


def tool_env(kubeconfig: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = build()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["VOICETYPED_CLUSTER_BIN"] = str(bin_dir)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def exec_command(argv: list[str]) -> int:
    if not argv:
        raise ClusterError("exec needs a command after --")
    external = os.environ.get("KUBECONFIG")
    if external:
        log(f"running against KUBECONFIG={external}")
        return subprocess.run(argv, env=tool_env(None)).returncode
    was_up = is_up() is not None
    # A CI time-out or `kill` must not leave the cluster running: turn SIGTERM into an
    # exception so the `finally` below stops it.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    up()
    log(f"cluster ready after {time.monotonic() - started:.1f} s")
    try:
        return subprocess.run(argv, env=tool_env(kubeconfig_path())).returncode
    finally:
        if not was_up and os.environ.get("VOICETYPED_KEEP_CLUSTER") != "1":
            down()


def status() -> int:
    state = State.load()
    if state is None:
        print("down")
        return 1
    health = healthy(state)
    for name in state.components:
        ok = health.get(name, False)
        pid = state.pids.get(name)
        print(f"{name:24} {'up' if ok else 'DOWN':5} pid={pid} {_address(state, name)}")
    if state.real_node:
        print(f"real node {node.NODE_NAME} at {node.NODE_IP}, pods in {node.POD_CIDR}")
    print(f"KUBECONFIG={kubeconfig_path()}")
    return 0 if all(health.get(n, False) for n in state.components) else 1


HEALTH_PORT = {"kubelet": "kubelet-healthz", "kube-proxy": "kube-proxy-healthz",
               "coredns": "coredns-health"}  # fmt: skip


def _address(state: State, name: str) -> str:
    """Where the component answers: the API server on the cluster's address (the node's
    while the real node runs), the rest on 127.0.0.1 (the node's parts: their health port;
    the kubelet also serves the API server on the node address)."""
    if name == "kube-apiserver":
        return f"{state.host}:{state.ports[name]}"
    return f"127.0.0.1:{state.ports[HEALTH_PORT.get(name, name)]}"


def env_lines() -> str:
    state = State.load()
    bin_dir = state.bin if state is not None else bin_dir_if_built()
    if bin_dir is None:
        raise ClusterError("not built yet: run `make cluster-up` first")
    if state is None:
        log("the cluster is down: `make cluster-up` starts it")
    return f"export KUBECONFIG={kubeconfig_path()}\nexport PATH={bin_dir}:$PATH\n"


# --------------------------------------------------------------------------- kind


def _run(argv: Sequence[str | Path], env: dict[str, str] | None = None) -> None:
    log("$ " + " ".join(str(a) for a in argv))
    subprocess.run([str(a) for a in argv], cwd=REPO, env=env, check=True)


def _kind_preflight() -> None:
    problems = []
    if shutil.which("docker") is None:
        problems.append("no `docker` command: kind-e2e needs a Docker engine")
    elif subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        problems.append("`docker info` fails: kind-e2e needs a running Docker engine")
    if not OPERATOR_DOCKERFILE.exists():
        problems.append(f"{OPERATOR_DOCKERFILE.relative_to(REPO)} does not exist yet")
    if not (CHART / "Chart.yaml").exists():
        problems.append(f"the chart {CHART.relative_to(REPO)} does not exist yet")
    if not _example_manifests():
        problems.append("examples/ holds no Kubernetes manifests (files with apiVersion and kind)")
    if problems:
        raise ClusterError("kind-e2e cannot run:\n  - " + "\n  - ".join(problems))


def _example_manifests() -> list[Path]:
    found = []
    for path in sorted((REPO / "examples").rglob("*.y*ml")):
        text = path.read_text(errors="replace")
        if re.search(r"^apiVersion:", text, re.MULTILINE) and re.search(r"^kind:", text, re.M):
            found.append(path)
    return found


def kind_kubeconfig() -> Path:
    return cluster_dir() / "kind" / "kubeconfig"


def kind_e2e(pytest_args: list[str]) -> int:
    _kind_preflight()
    kind = build_kind()
    env = tool_env(kind_kubeconfig())
    kind_kubeconfig().parent.mkdir(parents=True, exist_ok=True)
    clusters = subprocess.run(
        [str(kind), "get", "clusters"], capture_output=True, text=True, check=True
    ).stdout.split()
    if KIND_CLUSTER not in clusters:
        _run([kind, "create", "cluster", "--name", KIND_CLUSTER, "--wait", "120s",
              "--kubeconfig", kind_kubeconfig()])  # fmt: skip
    else:
        _run([kind, "export", "kubeconfig", "--name", KIND_CLUSTER,
              "--kubeconfig", kind_kubeconfig()])  # fmt: skip
    # The same images `make images` builds (services, operator, example backend, Redis),
    # with the user's Docker engine.
    images = [built.image for built in images_module().make_images(tag=IMAGE_TAG)[1]]
    _run([kind, "load", "docker-image", "--name", KIND_CLUSTER, *images])
    # The suite installs the chart and the example itself (test_real_node.py, scoped to its
    # namespace). Its calls send RTP to the media pod's address: route the pod range to
    # the kind node, as the local cluster's node is routed (Linux, needs root).
    _route_pods_to_kind_node()
    pytest = REPO / ".venv" / "bin" / "pytest"
    cmd = [str(pytest if pytest.exists() else "pytest"), "-m", "e2e", "tests/e2e", *pytest_args]
    log(f"running the e2e suite against kind cluster {KIND_CLUSTER}")
    return subprocess.run(cmd, cwd=REPO, env=env).returncode


def _route_pods_to_kind_node() -> None:
    node = f"{KIND_CLUSTER}-control-plane"
    address = subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
         node], capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    result = subprocess.run(["ip", "route", "replace", POD_CIDR, "via", address],
                            capture_output=True, text=True)  # fmt: skip
    if result.returncode != 0:
        log(f"could not route {POD_CIDR} via the kind node {address} ({result.stderr.strip()}):"
            " the call tests will not reach the media pods")  # fmt: skip


def images_module() -> Any:
    """images.py (a sibling, imported when needed: it starts no engine at import)."""
    import images

    return images


def kind_down() -> None:
    kind = cluster_dir() / f"kind-{KIND_VERSION}" / "kind"
    if not kind.exists():
        log("kind was never built here: nothing to delete")
        return
    _run([kind, "delete", "cluster", "--name", KIND_CLUSTER])


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "up", "down", "status", "env", "kubeconfig", "kind-down", "build-kind"):
        sub.add_parser(name)
    exec_parser = sub.add_parser("exec")
    exec_parser.add_argument("cmd", nargs=argparse.REMAINDER)
    kind_parser = sub.add_parser("kind-e2e")
    kind_parser.add_argument("pytest_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build())
        elif args.command == "build-kind":
            print(build_kind())
        elif args.command == "up":
            up()
        elif args.command == "down":
            down()
        elif args.command == "status":
            return status()
        elif args.command == "env":
            sys.stdout.write(env_lines())
        elif args.command == "kubeconfig":
            print(kubeconfig_path())
        elif args.command == "exec":
            cmd = list(args.cmd)
            return exec_command(cmd[1:] if cmd[:1] == ["--"] else cmd)
        elif args.command == "kind-e2e":
            extra = list(args.pytest_args)
            return kind_e2e(extra[1:] if extra[:1] == ["--"] else extra)
        elif args.command == "kind-down":
            kind_down()
    except ClusterError as err:
        log(str(err))
        return 2
    except subprocess.CalledProcessError as err:
        log(f"command failed ({err.returncode}): {' '.join(str(a) for a in err.cmd)}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
