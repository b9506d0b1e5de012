"""The order-status example on the local cluster's real node, called over SIP/RTP.

A platform team's first hour: the chart installs the operator (a pod running as its
ServiceAccount), ``examples/order-status/`` is applied (the shop backend is a pod too), every
pod becomes Ready, and a real call from the test caller reaches the media gateway through its
Service: first as a NodePort, then with the media pod on the node's network. The dialog runs
to its end, the backend sees the order lookup exactly once, the bot's words are what the call
script expects.

The example asks for a GPU and cloud-sized requests; on the one real node the same manifests
run with the changes :func:`for_one_node` makes (CPU recognition, small requests, every pod
on the real node, a locally built Redis image, the NodePort Service). Needs the images of
``make images`` in the node's containerd (``make e2e-local`` builds them).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import os
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from voicetyped_dev.caller.phone import Phone
from voicetyped_dev.caller.run import Voices, run_call
from voicetyped_dev.caller.script import CallLog, Expect, load_script

if TYPE_CHECKING:
    from tests.e2e.kube import ClusterInfo, Kube

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

k = sys.modules["voicetyped_e2e_kube"]  # conftest.py loads the helpers by path
REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "voicetyped-operator"
EXAMPLE = REPO / "examples" / "order-status"
SCRIPT = REPO / "examples" / "calls" / "order-status.yaml"
TAG = os.environ.get("VOICETYPED_E2E_IMAGE_TAG", "dev")
REDIS_IMAGE = os.environ.get("VOICETYPED_E2E_REDIS_IMAGE", "voicetyped.local/redis:7")
LOCAL = {"voicetyped.io/node-pool": "local"}  # the real node's label and taint (cluster/node.py)
TOLERATE = [{"key": "voicetyped.io/node-pool", "value": "local", "effect": "NoSchedule"}]
VD = "order-status"
SERVICES = ("media", "speech", "runtime", "integration")
READY_TIMEOUT = "600s"


def for_one_node(doc: dict[str, Any]) -> dict[str, Any]:
    """The example's objects as they run on one small real node."""
    doc = copy.deepcopy(doc)
    kind = doc["kind"]
    if kind == "VoiceDeployment":
        spec = doc["spec"]
        for service in SERVICES:
            part = spec[service]
            part["nodeSelector"] = LOCAL
            part["tolerations"] = TOLERATE
            part["imagePullPolicy"] = "Never"
            part["resources"] = {"requests": {"cpu": "50m", "memory": "128Mi"}}
        spec["media"].update(serviceType="NodePort", replicas=1)
        speech = spec["speech"]
        speech.pop("autoscaling", None)
        speech.update(backend="whispercpp", gpu={"enabled": False}, replicas=1)
        speech["resources"] = {"requests": {"cpu": "250m", "memory": "512Mi"}}
        spec["runtime"]["store"] = {"type": "managedRedis", "managedRedis": {"image": REDIS_IMAGE}}
        spec["integration"]["replicas"] = 1
    elif kind == "Deployment":  # the example backend
        pod = doc["spec"]["template"]["spec"]
        pod["nodeSelector"] = LOCAL
        pod["tolerations"] = TOLERATE
        for container in pod["containers"]:
            container["imagePullPolicy"] = "Never"  # make images built its tag
    return doc


def example_objects() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(EXAMPLE.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return [for_one_node(d) for d in docs]


@dataclass
class Deployed:
    namespace: str
    node_ip: str
    api_key: str


def _node_ip(kube: Kube, name: str) -> str:
    node = kube.get("node", name)
    return str(next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"))


@pytest.fixture(scope="module")
def deployed(kube: Kube, live_cluster: ClusterInfo) -> Iterator[Deployed]:
    namespace = f"e2e-real-node-{uuid.uuid4().hex[:5]}"
    kube.kubectl("create", "namespace", namespace)
    release = "vt"
    try:
        kube.helm(
            "install", release, str(CHART), "--namespace", namespace,
            "--set", f"image.repository=voicetyped/operator,image.tag={TAG}",
            "--set", "image.pullPolicy=Never",
            "--set", f"serviceImages.registry=voicetyped,serviceImages.tag={TAG}",
            "--set", f"watchNamespaces={{{namespace}}}",
            "--set-json", f"nodeSelector={json.dumps(LOCAL)}",
            "--set-json", f"tolerations={json.dumps(TOLERATE)}",
            "--wait", "--timeout", "5m",
            timeout_s=360,
        )  # fmt: skip
        kube.apply(example_objects(), namespace)
        kube.kubectl(
            "wait", "-n", namespace, f"voicedeployment/{VD}", "--for=condition=Ready",
            f"--timeout={READY_TIMEOUT}", timeout_s=660,
        )  # fmt: skip
        secret = kube.get("secret", "shop-api-key", "-n", namespace)
        key = secret.get("stringData", {}).get("api-key") or _b64(secret["data"]["api-key"])
        yield Deployed(namespace, _node_ip(kube, live_cluster.real_nodes[0]), key)
    except BaseException:
        print(kube.kubectl("get", "pods,events", "-n", namespace, "-o", "wide",
                           check=False).stdout)  # fmt: skip
        raise
    finally:
        kube.helm("uninstall", release, "--namespace", namespace, "--wait", check=False)
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _b64(value: str) -> str:
    return base64.b64decode(value).decode()


def _pods(kube: Kube, namespace: str, component: str) -> list[dict[str, Any]]:
    return kube.pods(namespace, f"app.kubernetes.io/component={component}")


def backend_requests(kube: Kube, deployed: Deployed, since: float) -> list[tuple[str, str]]:
    """What the shop backend pod answered since ``since`` (asked on its pod address)."""
    pod = kube.pods(deployed.namespace, "app.kubernetes.io/name=shop-backend")[0]
    url = f"http://{pod['status']['podIP']}:8090/_requests"
    request = urllib.request.Request(url, headers={"X-API-Key": deployed.api_key})
    with urllib.request.urlopen(request, timeout=5) as reply:
        seen = json.loads(reply.read())
    return [(r["method"], r["path"]) for r in seen if r["path"].startswith("/api/")
            and r.get("at", 0) >= since]  # fmt: skip


@pytest.fixture(scope="module")
def voices() -> Voices:
    return Voices()


async def place_call(
    target: str, node_ip: str, voices: Voices, transcribe: bool = True, rtp_ports: int = 44000
) -> CallLog:
    """The demo call script from the node's address (``transcribe=False``: without the
    ``expect`` steps, which need the caller's own Whisper; for many calls at once)."""
    steps = load_script(SCRIPT)
    if not transcribe:
        steps = [step for step in steps if not isinstance(step, Expect)]
    phone = Phone(host=node_ip, rtp_ports=(rtp_ports, rtp_ports + 99))
    await phone.start()
    try:
        return await run_call(target, steps, voices, phone=phone, transcribe=transcribe)
    finally:
        await phone.close()


def media_target(kube: Kube, deployed: Deployed) -> str:
    service = kube.get("service", f"{VD}-media", "-n", deployed.namespace)
    assert service["spec"]["type"] == "NodePort"
    port = next(p["nodePort"] for p in service["spec"]["ports"] if p["protocol"] == "UDP")
    return f"sip:{VD}@{deployed.node_ip}:{port}"


def metric(pod: dict[str, Any], name: str) -> float:
    """A counter or gauge a media pod reports (0 when it has no sample yet)."""
    url = f"http://{pod['status']['podIP']}:8081/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name)] in " {"
    )


def patch_vd(kube: Kube, namespace: str, media: dict[str, Any]) -> None:
    body = json.dumps({"spec": {"media": media}})
    kube.kubectl("patch", "-n", namespace, f"voicedeployment/{VD}", "--type=merge", "-p", body)


def assert_demo_call(log: CallLog, requests: list[tuple[str, str]]) -> None:
    assert not log.failures, log.failures
    assert log.ended_by_bot, "the bot did not hang up after its goodbye"
    assert requests == [("GET", "/api/orders/48213")], requests


def test_every_pod_runs_on_the_real_node(kube: Kube, deployed: Deployed) -> None:
    pods = kube.items("pods", "-n", deployed.namespace)
    assert pods
    for pod in pods:
        name = pod["metadata"]["name"]
        assert pod["spec"]["nodeName"] == "voicetyped-node", name
        assert pod["status"]["phase"] == "Running", (name, pod["status"])
        user = pod["spec"].get("securityContext", {}).get("runAsNonRoot")
        assert user is True or all(
            c.get("securityContext", {}).get("runAsNonRoot") for c in pod["spec"]["containers"]
        ), name
    operator = kube.pods(deployed.namespace, "app.kubernetes.io/name=voicetyped-operator")
    assert len(operator) == 1
    assert operator[0]["spec"]["serviceAccountName"] != "default"


def test_a_call_through_the_node_port(kube: Kube, deployed: Deployed, voices: Voices) -> None:
    since = time.time()
    log = asyncio.run(place_call(media_target(kube, deployed), deployed.node_ip, voices))
    assert_demo_call(log, backend_requests(kube, deployed, since))


def media_pods(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    return [
        p for p in _pods(kube, namespace, "media") if not p["metadata"].get("deletionTimestamp")
    ]


def test_a_media_rollout_drops_no_live_call(kube: Kube, deployed: Deployed, voices: Voices) -> None:
    """Five calls in progress while the media Deployment rolls: every one runs to the bot's
    goodbye on the old pod (its preStop and drain wait for them), and the next call is
    answered by the new pod."""
    ns = deployed.namespace
    (old,) = media_pods(kube, ns)
    target = media_target(kube, deployed)
    since = time.time()

    async def calls_during_rollout() -> list[CallLog]:
        calls = [
            asyncio.create_task(
                place_call(target, deployed.node_ip, voices, False, 44000 + 100 * n)
            )
            for n in range(5)
        ]

        def five_calls() -> bool | None:
            # This process also runs the five callers: one slow scrape is not an answer.
            with contextlib.suppress(OSError):
                return metric(old, "voicetyped_media_active_calls") >= 5 or None
            return None

        # The rollout starts once every call is up on the old pod.
        await asyncio.to_thread(kube.wait, "5 calls on the media pod", five_calls, 120)
        await asyncio.to_thread(patch_vd, kube, ns, {"logLevel": "debug"})

        def old_terminating() -> bool | None:
            pod = kube.find("pod", old["metadata"]["name"], "-n", ns)
            return (pod is not None and "deletionTimestamp" in pod["metadata"]) or None

        # Terminating while its calls go on: its drain holds them (the calls check the rest).
        await asyncio.to_thread(kube.wait, "the old media pod to terminate", old_terminating, 120)
        assert not any(task.done() for task in calls), "a call ended as the rollout began"
        return await asyncio.gather(*calls)

    logs = asyncio.run(calls_during_rollout())
    for n, log in enumerate(logs):
        assert not log.failures, (n, log.failures)
        assert log.ended_by_bot, f"call {n} did not reach the bot's goodbye"
    requests = backend_requests(kube, deployed, since)
    assert requests == [("GET", "/api/orders/48213")] * 5, requests
    # The old pod goes once its calls have ended; the new one takes the next call.
    kube.wait(
        "the old media pod to go",
        lambda: kube.find("pod", old["metadata"]["name"], "-n", ns) is None or None,
        120,
    )
    (new,) = kube.wait_running(ns, "app.kubernetes.io/component=media", 1)
    assert new["metadata"]["name"] != old["metadata"]["name"]
    assert metric(new, "voicetyped_media_calls_answered_total") == 0
    since = time.time()
    log = asyncio.run(place_call(target, deployed.node_ip, voices))
    assert_demo_call(log, backend_requests(kube, deployed, since))
    assert metric(new, "voicetyped_media_calls_answered_total") == 1


def test_a_call_with_media_on_the_node_network(
    kube: Kube, deployed: Deployed, voices: Voices
) -> None:
    """hostNetwork: SIP and RTP reach the media pod on the node's own address."""
    ns = deployed.namespace
    sip_port = 15060  # on the node's network: away from the well-known port and the tests'
    patch_vd(kube, ns, {"hostNetwork": True, "sip": {"port": sip_port},
                        "rtp": {"portMin": 23000, "portMax": 23199}})  # fmt: skip

    def on_node_network() -> dict[str, Any] | None:
        pods = [p for p in media_pods(kube, ns) if p["spec"].get("hostNetwork")]
        return pods[0] if pods and k.is_running(pods[0]) else None

    pod = kube.wait("a media pod on the node's network", on_node_network, 240)
    assert pod["status"]["podIP"] == deployed.node_ip
    since = time.time()
    target = f"sip:{VD}@{deployed.node_ip}:{sip_port}"
    log = asyncio.run(place_call(target, deployed.node_ip, voices))
    assert_demo_call(log, backend_requests(kube, deployed, since))
