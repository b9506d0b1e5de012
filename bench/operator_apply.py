"""Benchmark: the operator on the real control plane with 500 VoiceDeployments.

The operator runs as its own process (``python -m voicetyped_operator``, cluster-wide)
against the local control plane of tests/e2e/cluster (started for the run and stopped
afterwards unless it is already up). One Dialog, one Integration and its Secret are shared;
then VoiceDeployments are applied one after the other, and for each the time from the API
server's answer to the create until every one of its children exists (24 objects:
ServiceAccounts, settings ConfigMaps, Services, Deployments, PodDisruptionBudgets,
NetworkPolicies of the four services) is measured by polling the API
server (25 ms). The state store is an external Redis (a Secret reference), so no pod is
needed per VoiceDeployment. The population grows to 500, so late samples run with 499 others in the
operator's memory and watch streams. After all of them are Ready the operator's resident
memory is read from /proc.

The services run 0 replicas: this measures the operator, not kube-scheduler and KWOK
placing 2,500 pods on a 2-core machine (the e2e suite covers pods, GPU placement and
readiness from real Deployment status).

Targets: apply -> all children p50 <= 1 s; operator RSS <= 150 MB at 500 VoiceDeployments.

    python bench/operator_apply.py --out bench/results/operator.json [--count 500]
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import platform
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import yaml
from voicetyped_testkit.processes import free_port

REPO = Path(__file__).resolve().parents[1]
# Ready must follow the Deployments' status (not wait for the periodic resync, 300 s): at
# most 30 s after the controller-manager has observed every Deployment.
TARGETS = {
    "apply_to_children_p50_s": 1.0,
    "operator_rss_mb": 150.0,
    "ready_after_deployments_s": 30.0,
}
API = "/apis/voicetyped.io/v1alpha1"
VD_LABEL = "voicetyped.io/voicedeployment"
KINDS = {
    "serviceaccounts": "/api/v1",
    "configmaps": "/api/v1",
    "services": "/api/v1",
    "deployments": "/apis/apps/v1",
    "poddisruptionbudgets": "/apis/policy/v1",
    "networkpolicies": "/apis/networking.k8s.io/v1",
}
EXPECTED = 24  # 4 each of SA, settings ConfigMap, Service, Deployment, PDB, NetworkPolicy


def load_cluster() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "voicetyped_bench_cluster", REPO / "tests" / "e2e" / "cluster" / "cluster.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _pem(entry: dict[str, Any], field: str) -> bytes:
    """A kubeconfig credential given inline (``<field>-data``) or as a file path."""
    if f"{field}-data" in entry:
        return base64.b64decode(entry[f"{field}-data"])
    return Path(entry[field]).read_bytes()


def client(kubeconfig: Path, workdir: Path) -> httpx.Client:
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    ca = workdir / "ca.crt"
    ca.write_bytes(_pem(cluster, "certificate-authority"))
    ctx = ssl.create_default_context(cafile=str(ca))
    cert, key = workdir / "client.crt", workdir / "client.key"
    cert.write_bytes(_pem(user, "client-certificate"))
    key.touch(mode=0o600)
    key.write_bytes(_pem(user, "client-key"))
    ctx.load_cert_chain(str(cert), str(key))
    return httpx.Client(base_url=cluster["server"], verify=ctx, timeout=30.0)


def check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        raise SystemExit(f"{response.request.method} {response.request.url}: {response.text}")
    body: dict[str, Any] = response.json()
    return body


def apply_file(api: httpx.Client, path: Path) -> None:
    """Server-side apply of every object in a YAML file."""
    for doc in yaml.safe_load_all(path.read_text()):
        plural = {"CustomResourceDefinition": "customresourcedefinitions"}[doc["kind"]]
        url = f"/apis/apiextensions.k8s.io/v1/{plural}/{doc['metadata']['name']}"
        check(
            api.patch(
                url,
                content=json.dumps(doc),
                params={"fieldManager": "bench", "force": "true"},
                headers={"Content-Type": "application/apply-patch+yaml"},
            )
        )


def wait(what: str, probe: Any, timeout_s: float, interval_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(interval_s)
    raise SystemExit(f"timed out after {timeout_s:.0f} s waiting for {what}")


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def children_of(api: httpx.Client, namespace: str, vd: str) -> int:
    total = 0
    for plural, prefix in KINDS.items():
        body = check(
            api.get(
                f"{prefix}/namespaces/{namespace}/{plural}",
                params={"labelSelector": f"{VD_LABEL}={vd}"},
            )
        )
        total += len(body["items"])
    return total


def voice_deployment(name: str) -> dict[str, Any]:
    zero = {"replicas": 0}
    return {
        "apiVersion": "voicetyped.io/v1alpha1",
        "kind": "VoiceDeployment",
        "metadata": {"name": name},
        "spec": {
            "dialogs": ["order-status"],
            "integrations": ["shop"],
            "media": {**zero, "allowedSourceCIDRs": ["10.0.0.0/8"]},
            "speech": zero,
            # An external Redis: the operator-managed one is a pod per VoiceDeployment, and
            # 500 of them exceed the fake nodes' pod capacity (110 each).
            "runtime": {
                **zero,
                "store": {
                    "type": "redis",
                    "redis": {"urlSecretRef": {"name": "bench-redis", "key": "url"}},
                },
            },
            "integration": zero,
        },
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def run(count: int, out: Path, ready_timeout_s: float = 300.0) -> dict[str, Any]:
    cluster = load_cluster()
    started = False
    if cluster.is_up() is None:
        if cluster.bin_dir_if_built() is None:
            raise SystemExit("the local control plane is not built: run `make cluster-build`")
        cluster.up()
        started = True
    work = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    kubeconfig = cluster.kubeconfig_path()
    try:
        api = client(kubeconfig, work)
    except BaseException:
        if started:  # never leave a control plane running behind a failed start
            cluster.down()
        raise
    namespace = f"bench-operator-{uuid.uuid4().hex[:5]}"
    proc: subprocess.Popen[bytes] | None = None
    try:
        for path in sorted((REPO / "crds").glob("voicetyped.io_*.yaml")):
            apply_file(api, path)
        for plural in ("voicedeployments", "dialogs", "integrations"):
            wait(
                f"CRD {plural}",
                lambda p=plural: api.get(f"{API}/{p}").status_code == 200,
                60,
            )
        check(api.post("/api/v1/namespaces", json={"metadata": {"name": namespace}}))
        wait(
            "the default ServiceAccount",
            lambda: (
                api.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/default").status_code
                == 200
            ),
            60,
        )
        port = free_port()
        log = (out.parent / "operator-bench.log").open("wb")
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "VOICETYPED_OPERATOR_LIVENESS_PORT": str(port),
            "VOICETYPED_OPERATOR_LOG_FORMAT": "plain",
            "VOICETYPED_OPERATOR_LOG_LEVEL": "warning",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "voicetyped_operator"], env=env, stdout=log, stderr=log
        )
        wait("the operator's /healthz", lambda: _healthy(port), 60)
        base_rss, _ = rss_mb(proc.pid)
        example = REPO / "examples" / "order-status"
        documents: list[tuple[str, str | None]] = [
            ("secret", None),
            ("dialog", "dialogs"),
            ("integration", "integrations"),
        ]
        redis_url = {"url": base64.b64encode(b"redis://redis.example:6379/0").decode()}
        check(
            api.post(
                f"/api/v1/namespaces/{namespace}/secrets",
                json={"metadata": {"name": "bench-redis"}, "data": redis_url},
            )
        )
        for file, kind_plural in documents:
            doc = yaml.safe_load((example / f"{file}.yaml").read_text())
            url = (
                f"/api/v1/namespaces/{namespace}/secrets"
                if kind_plural is None
                else f"{API}/namespaces/{namespace}/{kind_plural}"
            )
            check(api.post(url, json=doc))
        for plural, name in (("dialogs", "order-status"), ("integrations", "shop")):
            wait(
                f"{plural}/{name} Ready", lambda p=plural, n=name: _ready(api, namespace, p, n), 60
            )

        latencies: list[float] = []
        begun = time.monotonic()
        for index in range(count):
            name = f"vd-{index:04d}"
            check(
                api.post(
                    f"{API}/namespaces/{namespace}/voicedeployments", json=voice_deployment(name)
                )
            )
            created = time.monotonic()
            deadline = created + 60
            while children_of(api, namespace, name) < EXPECTED:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name}: children not created within 60 s")
                time.sleep(0.025)
            latencies.append(time.monotonic() - created)
            if (index + 1) % 100 == 0:
                print(
                    f"{index + 1} VoiceDeployments: last 100 p50 "
                    f"{statistics.median(latencies[-100:]) * 1000:.0f} ms",
                    flush=True,
                )
        applied_s = time.monotonic() - begun

        not_ready: dict[str, str] = {}
        observed_at: list[float] = []

        def all_ready() -> bool:
            if not observed_at:
                # When kube-controller-manager (same 2 cores) has caught up with every
                # Deployment: the operator cannot report Ready before that.
                deployments = check(api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments"))[
                    "items"
                ]
                if len(deployments) >= count * 4 and all(
                    (d.get("status") or {}).get("observedGeneration", 0)
                    >= d["metadata"]["generation"]
                    for d in deployments
                ):
                    observed_at.append(time.monotonic() - begun)
            items = check(api.get(f"{API}/namespaces/{namespace}/voicedeployments"))["items"]
            not_ready.clear()
            for item in items:
                ready = [
                    c
                    for c in (item.get("status") or {}).get("conditions") or []
                    if c["type"] == "Ready"
                ]
                if not ready or ready[0]["status"] != "True":
                    not_ready[item["metadata"]["name"]] = (
                        f"{ready[0]['reason']}: {ready[0]['message']}" if ready else "no status"
                    )
            return not not_ready

        try:
            wait(f"{count} VoiceDeployments Ready", all_ready, ready_timeout_s, interval_s=1.0)
        except SystemExit:
            sample = dict(list(not_ready.items())[:5])
            print(f"{len(not_ready)} of {count} not Ready, e.g. {sample}", flush=True)
            raise
        ready_s = time.monotonic() - begun
        observed_s = observed_at[0] if observed_at else ready_s
        time.sleep(5)  # settle: status refreshes done
        rss, peak = rss_mb(proc.pid)
        alive = proc.poll() is None
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        api.delete(f"/api/v1/namespaces/{namespace}")
        for plural in ("voicedeployments", "dialogs", "integrations"):
            api.delete(
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.voicetyped.io"
            )
        api.close()
        if started:
            cluster.down()
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    result = {
        "benchmark": "operator",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "voice_deployments": count,
        "children_per_voice_deployment": EXPECTED,
        "apply_to_children_s": {
            "p50": round(p50, 4),
            "p95": round(p95, 4),
            "max": round(max(latencies), 4),
            "mean": round(statistics.fmean(latencies), 4),
            "first_100_p50": round(statistics.median(latencies[:100]), 4),
            "last_100_p50": round(statistics.median(latencies[-100:]), 4),
        },
        "applied_all_s": round(applied_s, 1),
        "all_ready_s": round(ready_s, 1),
        "ready_after_last_apply_s": round(ready_s - applied_s, 1),
        "deployments_observed_s": round(observed_s, 1),
        "ready_after_deployments_observed_s": round(ready_s - observed_s, 1),
        "operator_rss_mb": {
            "idle": round(base_rss, 1),
            f"at_{count}": round(rss, 1),
            "peak": round(peak, 1),
        },
        "operator_alive": alive,
        "targets": TARGETS,
        "passed": bool(
            alive
            and p50 <= TARGETS["apply_to_children_p50_s"]
            and rss <= TARGETS["operator_rss_mb"]
            and ready_s - observed_s <= TARGETS["ready_after_deployments_s"]
        ),
    }
    return result


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _ready(api: httpx.Client, namespace: str, plural: str, name: str) -> bool:
    body = api.get(f"{API}/namespaces/{namespace}/{plural}/{name}").json()
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = run(args.count, args.out, args.ready_timeout)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not result["passed"]:
        raise SystemExit("operator benchmark missed its targets")


if __name__ == "__main__":
    main()
