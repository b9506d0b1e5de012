"""kubectl, helm and an HTTPS client against one cluster, for the e2e tests.

Loaded by path from conftest.py (tests/ is no package); test modules import the
types under ``TYPE_CHECKING`` and get the instances from fixtures.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

FAKE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"


class CommandError(AssertionError):
    """A kubectl/helm call exited non-zero; carries what it printed."""

    def __init__(self, argv: Sequence[str], proc: subprocess.CompletedProcess[str]) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        super().__init__(
            f"{' '.join(argv)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )


def wait_until(
    what: str, probe: Callable[[], T | None], timeout_s: float = 60.0, interval_s: float = 0.3
) -> T:
    """Call ``probe`` until it returns something other than None/False; fail after the timeout."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while True:
        last = probe()
        if last is not None and last is not False:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


@dataclass(frozen=True)
class Kube:
    """One cluster: ``kubeconfig`` is the KUBECONFIG value (a path, or several)."""

    kubeconfig: str
    kubectl_bin: str
    helm_bin: str
    local: bool  # the control plane from tests/e2e/cluster (KWOK nodes), not a given KUBECONFIG
    workdir: Path  # scratch space for the session (helm cache, client cert files)
    _env: dict[str, str] = field(default_factory=dict, repr=False)

    def env(self) -> dict[str, str]:
        if not self._env:
            env = dict(os.environ)
            env["KUBECONFIG"] = self.kubeconfig
            # helm keeps its state here, never in the user's home.
            for var, sub in (
                ("HELM_CACHE_HOME", "cache"),
                ("HELM_CONFIG_HOME", "config"),
                ("HELM_DATA_HOME", "data"),
            ):
                env[var] = str(self.workdir / "helm" / sub)
            self._env.update(env)
        return self._env

    def _run(
        self, argv: list[str], stdin: str | None, check: bool, timeout_s: float
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout_s,
            check=False,
        )
        if check and proc.returncode != 0:
            raise CommandError(argv, proc)
        return proc

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout_s: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        return self._run([self.kubectl_bin, *args], stdin, check, timeout_s)

    def helm(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout_s: float = 180.0
    ) -> subprocess.CompletedProcess[str]:
        return self._run([self.helm_bin, *args], stdin, check, timeout_s)

    def get(self, *args: str) -> dict[str, Any]:
        """``kubectl get ARGS -o json``, parsed."""
        out = self.kubectl("get", *args, "-o", "json").stdout
        result: dict[str, Any] = json.loads(out)
        return result

    def find(self, *args: str) -> dict[str, Any] | None:
        """``kubectl get ARGS -o json``, parsed; None while the object does not exist."""
        proc = self.kubectl("get", *args, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise CommandError([self.kubectl_bin, "get", *args], proc)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def wait_crd(self, name: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Until CRD ``name`` is Established and its resource is served by discovery.

        Polls instead of ``kubectl wait --for=condition=Established``: a CRD just created has
        ``status.conditions: null``, on which kubectl 1.37 exits 1 instead of waiting."""

        def established() -> dict[str, Any] | None:
            crd = self.find("crd", name)
            cond = condition(crd, "Established") if crd is not None else None
            return crd if cond is not None and cond.get("status") == "True" else None

        crd = wait_until(f"CRD {name} to be Established", established, timeout_s)
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        # Discovery can lag behind Established for a moment.
        wait_until(
            f"{plural}.{group} in discovery",
            lambda: (
                plural
                in self.kubectl("api-resources", f"--api-group={group}", "-o", "name")
                .stdout.replace(".", " ")
                .split()
            ),
            timeout_s,
        )
        return crd

    def items(self, *args: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get(*args)["items"]
        return items

    def apply(
        self,
        objects: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        namespace: str | None = None,
        *extra: str,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -`` of objects given as dicts (sent as a JSON List)."""
        items = [objects] if isinstance(objects, Mapping) else list(objects)
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("apply", *ns, *extra, "-f", "-", stdin=doc, check=check)

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.items("pods", "-n", namespace, "-l", selector)

    def wait_running(
        self, namespace: str, selector: str, count: int, timeout_s: float = 90.0
    ) -> list[dict[str, Any]]:
        """Wait for ``count`` pods matching ``selector`` to be Running and Ready."""

        def probe() -> list[dict[str, Any]] | None:
            pods = [p for p in self.pods(namespace, selector) if is_running(p)]
            return pods if len(pods) >= count else None

        try:
            return wait_until(f"{count} running pods {selector} in {namespace}", probe, timeout_s)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.describe(namespace, selector)}") from None

    def wait(self, what: str, probe: Callable[[], T | None], timeout_s: float = 60.0) -> T:
        return wait_until(what, probe, timeout_s)

    def wait_pod_running(
        self, namespace: str, name: str, timeout_s: float = 90.0
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            pod = self.find("pod", name, "-n", namespace)
            return pod if pod is not None and is_running(pod) else None

        try:
            return wait_until(f"pod {namespace}/{name} to run", probe, timeout_s)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.describe(namespace, '')}") from None

    def wait_unschedulable(self, namespace: str, name: str, timeout_s: float = 60.0) -> str:
        """Wait until kube-scheduler gives up on the pod (it stays unbound); return why."""

        def probe() -> str | None:
            pod = self.find("pod", name, "-n", namespace)
            if pod is None:
                return None
            assert not pod["spec"].get("nodeName"), f"{name} was bound to {pod['spec']['nodeName']}"
            cond = condition(pod, "PodScheduled")
            if cond is not None and cond.get("reason") == "Unschedulable":
                return str(cond.get("message", ""))
            return None

        return wait_until(f"the scheduler to reject pod {namespace}/{name}", probe, timeout_s)

    def describe(self, namespace: str, selector: str) -> str:
        """Pods and recent events, for failure messages."""
        chosen = ["-l", selector] if selector else []
        pods = self.kubectl("get", "pods", "-n", namespace, *chosen, "-o", "wide", check=False)
        events = self.kubectl(
            "get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False
        )
        return f"pods:\n{pods.stdout}{pods.stderr}\nevents:\n{events.stdout[-3000:]}"

    def http_client(self) -> httpx.Client:
        """An httpx client for the API server, authenticated like kubectl (client certs)."""
        view = json.loads(
            self.kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout
        )
        cluster = view["clusters"][0]["cluster"]
        user = view["users"][0]["user"]
        certs = self.workdir / "client-certs"
        certs.mkdir(parents=True, exist_ok=True)
        ca = certs / "ca.crt"
        ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        ctx = ssl.create_default_context(cafile=str(ca))
        headers = {}
        if "client-certificate-data" in user:
            cert, key = certs / "client.crt", certs / "client.key"
            cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.touch(mode=0o600)
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            ctx.load_cert_chain(str(cert), str(key))
        elif "token" in user:
            headers["Authorization"] = f"Bearer {user['token']}"
        else:
            raise AssertionError("the kubeconfig user has neither client certificates nor a token")
        return httpx.Client(base_url=cluster["server"], verify=ctx, headers=headers, timeout=30.0)


def condition(obj: Mapping[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """The condition of type ``kind``; None while the object, its status or the condition
    is missing (a just-created object has none of them)."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            found: dict[str, Any] = cond
            return found
    return None


def is_running(pod: Mapping[str, Any]) -> bool:
    ready = condition(pod, "Ready")
    return (
        (pod.get("status") or {}).get("phase") == "Running"
        and ready is not None
        and ready.get("status") == "True"
        and "deletionTimestamp" not in pod.get("metadata", {})
    )


def is_fake(node: Mapping[str, Any]) -> bool:
    return bool(node["metadata"].get("annotations", {}).get(FAKE_ANNOTATION) == "fake")


def gpus(node: Mapping[str, Any]) -> int:
    return int(node.get("status", {}).get("allocatable", {}).get(GPU_RESOURCE, "0"))


@dataclass(frozen=True)
class ClusterInfo:
    """What the cluster's nodes are: real kubelets (kind) or KWOK fakes."""

    nodes: list[dict[str, Any]]

    @property
    def fake_nodes(self) -> list[str]:
        return [n["metadata"]["name"] for n in self.nodes if is_fake(n)]

    @property
    def real_nodes(self) -> list[str]:
        return [n["metadata"]["name"] for n in self.nodes if not is_fake(n)]

    @property
    def gpu_nodes(self) -> list[str]:
        return [n["metadata"]["name"] for n in self.nodes if gpus(n) > 0]

    @property
    def simulated(self) -> bool:
        """No node runs containers: pods only *look* Running (KWOK)."""
        return not self.real_nodes
