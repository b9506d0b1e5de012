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
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from voicetyped_dev.caller.phone import Phone
from voicetyped_dev.caller.run import Event, Voices, run_call
from voicetyped_dev.caller.script import CallLog, Expect, Listen, ListenStep, Step, load_script

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
# The local cluster's real node is tainted (cluster/node.py); kind's nodes are not.
TOLERATE = [{"key": "voicetyped.io/node-pool", "value": "local", "effect": "NoSchedule"}]
VD = "order-status"
SERVICES = ("media", "speech", "runtime", "integration")
READY_TIMEOUT = "600s"


def for_one_node(doc: dict[str, Any], node: str) -> dict[str, Any]:
    """The example's objects as they run on one small real node (named ``node``)."""
    doc = copy.deepcopy(doc)
    on_node = {"kubernetes.io/hostname": node}
    kind = doc["kind"]
    if kind == "VoiceDeployment":
        spec = doc["spec"]
        for service in SERVICES:
            part = spec[service]
            part["nodeSelector"] = on_node
            part["tolerations"] = TOLERATE
            part["imagePullPolicy"] = "Never"
            part["resources"] = {"requests": {"cpu": "50m", "memory": "128Mi"}}
        spec["media"].update(serviceType="NodePort", replicas=1)
        speech = spec["speech"]
        speech.pop("autoscaling", None)
        speech.update(backend="whispercpp", gpu={"enabled": False}, replicas=1)
        speech["resources"] = {"requests": {"cpu": "250m", "memory": "512Mi"}}
        spec["runtime"]["store"] = {"type": "managedRedis", "managedRedis": {"image": REDIS_IMAGE}}
        # A deleted runtime pod hands its calls over after 5 s (not 60): inside a test call.
        spec["runtime"]["drainSeconds"] = 5
        spec["integration"]["replicas"] = 1
    elif kind == "Deployment":  # the example backend
        pod = doc["spec"]["template"]["spec"]
        pod["nodeSelector"] = on_node
        pod["tolerations"] = TOLERATE
        for container in pod["containers"]:
            container["imagePullPolicy"] = "Never"  # make images built its tag
    return doc


def example_objects(node: str) -> list[dict[str, Any]]:
    docs = []
    for path in sorted(EXAMPLE.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return [for_one_node(d, node) for d in docs]


@dataclass
class Deployed:
    namespace: str
    node_ip: str
    api_key: str


def _node_ip(kube: Kube, name: str) -> str:
    node = kube.get("node", name)
    return str(next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"))


@pytest.fixture(scope="module")
def deployed(
    kube: Kube, live_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    namespace = f"e2e-real-node-{uuid.uuid4().hex[:5]}"
    kube.kubectl("create", "namespace", namespace)
    release = "vt"
    node = live_cluster.real_nodes[0]
    try:
        kube.helm(
            "install", release, str(CHART), "--namespace", namespace,
            "--set", f"image.repository=voicetyped/operator,image.tag={TAG}",
            "--set", "image.pullPolicy=Never",
            "--set", f"serviceImages.registry=voicetyped,serviceImages.tag={TAG}",
            "--set", f"watchNamespaces={{{namespace}}}",
            "--set-json", f"nodeSelector={json.dumps({'kubernetes.io/hostname': node})}",
            "--set-json", f"tolerations={json.dumps(TOLERATE)}",
            "--wait", "--timeout", "5m",
            timeout_s=360,
        )  # fmt: skip
        kube.apply(example_objects(node), namespace)
        kube.kubectl(
            "wait", "-n", namespace, f"voicedeployment/{VD}", "--for=condition=Ready",
            f"--timeout={READY_TIMEOUT}", timeout_s=660,
        )  # fmt: skip
        secret = kube.get("secret", "shop-api-key", "-n", namespace)
        key = secret.get("stringData", {}).get("api-key") or _b64(secret["data"]["api-key"])
        yield Deployed(namespace, _node_ip(kube, node), key)
    except BaseException:
        print(kube.kubectl("get", "pods,events", "-n", namespace, "-o", "wide",
                           check=False).stdout)  # fmt: skip
        raise
    finally:
        save_logs(kube, namespace, tmp_path_factory.mktemp("real-node-logs"))
        kube.helm("uninstall", release, "--namespace", namespace, "--wait", check=False)
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def save_logs(kube: Kube, namespace: str, into: Path) -> None:
    """Every pod's log (and its previous container's), kept for reading after a failure."""
    for pod in kube.items("pods", "-n", namespace):
        name = pod["metadata"]["name"]
        for suffix, extra in ((".log", ()), (".previous.log", ("--previous",))):
            out = kube.kubectl("logs", "-n", namespace, name, "--all-containers", *extra,
                               check=False).stdout  # fmt: skip
            if out:
                (into / f"{name}{suffix}").write_text(out)
    print(f"pod logs of {namespace}: {into}")


def json_log(kube: Kube, namespace: str, pod: str) -> list[dict[str, Any]]:
    """A service pod's JSON log records."""
    out = kube.kubectl("logs", "-n", namespace, pod, check=False).stdout
    records = []
    for line in out.splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return records


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
    target: str,
    node_ip: str,
    voices: Voices,
    transcribe: bool = True,
    rtp_ports: int = 44000,
    on_event: Event | None = None,
    steps: list[Step] | None = None,
) -> CallLog:
    """The demo call script from the node's address (``transcribe=False``: without the
    ``expect`` steps, which need the caller's own Whisper; for many calls at once)."""
    steps = load_script(SCRIPT) if steps is None else steps
    if not transcribe:
        steps = [step for step in steps if not isinstance(step, Expect)]
    phone = Phone(host=node_ip, rtp_ports=(rtp_ports, rtp_ports + 99))
    await phone.start()
    try:
        return await run_call(
            target, steps, voices, on_event=on_event, phone=phone, transcribe=transcribe
        )
    finally:
        await phone.close()


def runtime_sessions(kube: Kube, namespace: str) -> dict[str, list[dict[str, Any]]]:
    """Each runtime pod's live calls (its admin API: GET /v1/sessions)."""
    found = {}
    for pod in _pods(kube, namespace, "runtime"):
        if not pod["status"].get("podIP"):  # a draining pod still drives its calls
            continue
        url = f"http://{pod['status']['podIP']}:8083/v1/sessions"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as reply:
            found[pod["metadata"]["name"]] = json.loads(reply.read())["sessions"]
    return found


@dataclass
class AfterTurn:
    """Runs ``action`` in a thread once the call's ``number``-th turn is done (its
    ``on_event``); :meth:`result` waits for it and raises what it raised."""

    number: int
    action: Callable[[], None]
    turns: int = 0
    thread: threading.Thread | None = None
    error: BaseException | None = None

    def on_event(self, kind: str, data: Any) -> None:
        if kind == "turn":
            self.turns += 1
            if self.turns == self.number:
                self.thread = threading.Thread(target=self._run, daemon=True)
                self.thread.start()

    def _run(self) -> None:
        try:
            self.action()
        except BaseException as err:  # raised again by result()
            self.error = err

    def result(self, timeout_s: float = 240.0) -> None:
        assert self.thread is not None, f"the call ended before turn {self.number}"
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), f"the action after turn {self.number} never ended"
        if self.error is not None:
            raise self.error


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


def assert_demo_call(log: CallLog, requests: list[tuple[str, str]]) -> None:
    assert not log.failures, log.failures
    assert log.ended_by_bot, "the bot did not hang up after its goodbye"
    assert requests == [("GET", "/api/orders/48213")], requests


def test_every_pod_runs_on_the_real_node(
    kube: Kube, deployed: Deployed, live_cluster: ClusterInfo
) -> None:
    pods = kube.items("pods", "-n", deployed.namespace)
    assert pods
    for pod in pods:
        name = pod["metadata"]["name"]
        assert pod["spec"]["nodeName"] in live_cluster.real_nodes, name
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


def test_the_runtime_pod_deleted_mid_call(kube: Kube, deployed: Deployed, voices: Voices) -> None:
    """The runtime pod driving the call is deleted (as a rollout or a drain does) before the
    order lookup: it drains, hands the call over with its state in Redis, the other replica
    resumes it; the caller hears every reply and the lookup is made once."""
    ns = deployed.namespace
    deleted: list[str] = []

    def delete_the_driving_runtime() -> None:
        driving = [name for name, live in runtime_sessions(kube, ns).items() if live]
        assert len(driving) == 1, driving
        kube.kubectl("delete", "pod", "-n", ns, driving[0], "--wait=false")
        deleted.append(driving[0])

    delete = AfterTurn(2, delete_the_driving_runtime)  # greeting, asked for the number
    since = time.time()
    log = asyncio.run(place_call(media_target(kube, deployed), deployed.node_ip, voices,
                                 on_event=delete.on_event))  # fmt: skip
    delete.result()
    assert len(deleted) == 1, "the runtime pod was not deleted during the call"
    assert_demo_call(log, backend_requests(kube, deployed, since))
    assert len(log.turns) == 4, [t.caller for t in log.turns]
    # It was handed over, not finished where it started: another replica took it from Redis.
    resumed = [
        record
        for pod in _pods(kube, ns, "runtime")
        for record in json_log(kube, ns, pod["metadata"]["name"])
        if record.get("event") == "call resumed"
    ]
    assert len(resumed) == 1, resumed
    # The Deployment replaces the pod before the next test.
    kube.wait_running(ns, "app.kubernetes.io/component=runtime", 2, timeout_s=180)


def test_the_speech_pod_deleted_mid_call(kube: Kube, deployed: Deployed, voices: Voices) -> None:
    """The speech pod serving the call is deleted (kubectl delete pod) before the caller's last
    turn: it drains, keeping the calls it has while the Service sends new ones to the other
    replica, so the caller notices nothing. (A crash of the replica, where the stream breaks
    and is reopened on another one or the call ends with Q.850 cause 41, is tested with real
    processes in images/media/tests/test_speech_restore.py.)"""
    ns = deployed.namespace
    patch_vd_part(kube, ns, "speech", {"replicas": 2})
    kube.wait_running(ns, "app.kubernetes.io/component=speech", 2, timeout_s=240)
    deleted: list[str] = []

    def delete_the_calls_speech_pod() -> None:
        (media,) = media_pods(kube, ns)
        answered = [r for r in json_log(kube, ns, media["metadata"]["name"])
                    if r.get("event") == "call answered"]  # fmt: skip
        speech_ip = answered[-1]["speech"].rsplit(":", 1)[0]
        (pod,) = [p for p in _pods(kube, ns, "speech") if p["status"].get("podIP") == speech_ip]
        kube.kubectl("delete", "pod", "-n", ns, pod["metadata"]["name"], "--wait=false")
        deleted.append(pod["metadata"]["name"])

    delete = AfterTurn(3, delete_the_calls_speech_pod)  # the lookup's answer was heard
    since = time.time()
    log = asyncio.run(place_call(media_target(kube, deployed), deployed.node_ip, voices,
                                 on_event=delete.on_event))  # fmt: skip
    delete.result()
    assert len(deleted) == 1
    assert_demo_call(log, backend_requests(kube, deployed, since))
    (media,) = media_pods(kube, ns)
    assert metric(media, "voicetyped_media_speech_restores_total") == 0  # never broke
    assert metric(media, "voicetyped_media_calls_ended_total") >= 1
    kube.wait_running(ns, "app.kubernetes.io/component=speech", 2, timeout_s=240)


def test_new_calls_are_spread_over_the_speech_replicas(
    kube: Kube, deployed: Deployed, voices: Voices
) -> None:
    """With two ready speech replicas, new calls reach both: the media gateway resolves the
    headless ``<name>-speech-pods`` Service and opens each call's stream on the next replica
    (round-robin). The replica started by the previous test became ready after the media pod
    last resolved the name; the media pod finds it when the other replica moves its connection
    (``grpc_max_connection_age_s``, 30 s) and gRPC resolves the name again (at most every
    30 s). So short calls (the greeting, then hang up) are placed until one has reached each
    replica, within 180 s; through the ClusterIP Service every call reached the same one."""
    ns = deployed.namespace
    pods = kube.wait_running(ns, "app.kubernetes.io/component=speech", 2, timeout_s=240)
    replicas = {p["status"]["podIP"] for p in pods if not p["metadata"].get("deletionTimestamp")}
    assert len(replicas) == 2, replicas
    headless = kube.get("service", f"{VD}-speech-pods", "-n", ns)
    assert headless["spec"]["clusterIP"] == "None"
    target = media_target(kube, deployed)
    greeting_only: list[Step] = [ListenStep(listen=Listen())]
    reached: list[str] = []

    def a_call_reached_each() -> set[str] | None:
        log = asyncio.run(place_call(target, deployed.node_ip, voices, steps=greeting_only))
        assert not log.failures, log.failures
        (media,) = media_pods(kube, ns)
        answered = [r for r in json_log(kube, ns, media["metadata"]["name"])
                    if r.get("event") == "call answered"]  # fmt: skip
        reached.append(answered[-1]["speech"].rsplit(":", 1)[0])
        return replicas if replicas <= set(reached) else None

    try:
        kube.wait("new calls to reach both speech replicas", a_call_reached_each, timeout_s=180)
    except AssertionError as err:
        why = f"{err}: replicas {sorted(replicas)}, calls reached {reached}"
        raise AssertionError(why) from None


def patch_vd_part(kube: Kube, namespace: str, part: str, values: dict[str, Any]) -> None:
    body = json.dumps({"spec": {part: values}})
    kube.kubectl("patch", "-n", namespace, f"voicedeployment/{VD}", "--type=merge", "-p", body)


def served_hashes(kube: Kube, namespace: str) -> set[str]:
    """The order-status dialog's hash each runtime pod serves."""
    hashes = set()
    for pod in _pods(kube, namespace, "runtime"):
        url = f"http://{pod['status']['podIP']}:8083/v1/dialogs/{VD}"
        with urllib.request.urlopen(url, timeout=5) as reply:
            hashes.add(json.loads(reply.read())["hash"])
    return hashes


def test_a_dialog_edit_reaches_the_next_call_not_the_live_one(
    kube: Kube, deployed: Deployed, voices: Voices
) -> None:
    ns = deployed.namespace
    (before,) = served_hashes(kube, ns)
    dialog = kube.get("dialog", VD, "-n", ns)
    greeting = dialog["spec"]["states"]["greet"]["on_enter"][0]["play_tts"]["text"]
    # Still thanks the caller first: the later tests' calls expect that.
    edited = "Hello and thanks for calling, this is the order line. Say your order number."

    def edit() -> None:
        dialog["spec"]["states"]["greet"]["on_enter"][0]["play_tts"]["text"] = edited
        kube.apply(dialog, ns)

        def served_everywhere() -> set[str] | None:
            with contextlib.suppress(OSError):
                hashes = served_hashes(kube, ns)
                return hashes if len(hashes) == 1 and before not in hashes else None
            return None

        # The ConfigMap reaches the pods' projected volume within the kubelet's sync period.
        kube.wait("every runtime pod to serve the edited dialog", served_everywhere, 180)
        live = [c for calls in runtime_sessions(kube, ns).values() for c in calls]
        assert [c["dialog_hash"] for c in live] == [before], live  # the call keeps its version

    edited_during_call = AfterTurn(1, edit)  # the greeting was heard
    since = time.time()
    target = media_target(kube, deployed)
    live = asyncio.run(
        place_call(target, deployed.node_ip, voices, on_event=edited_during_call.on_event)
    )
    edited_during_call.result()
    assert_demo_call(live, backend_requests(kube, deployed, since))  # the old version's words
    assert "thanks for calling" in greeting.lower()
    # The next call gets the edit: its greeting, and the new version's hash in its session.
    steps = load_script(SCRIPT)
    steps[1] = Expect(expect="this is the order line")
    since = time.time()
    nxt = asyncio.run(place_call(target, deployed.node_ip, voices, steps=steps))
    assert_demo_call(nxt, backend_requests(kube, deployed, since))
    (after,) = served_hashes(kube, ns)
    assert after != before


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
        await asyncio.to_thread(patch_vd_part, kube, ns, "media", {"logLevel": "debug"})

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
    patch_vd_part(kube, ns, "media", {"hostNetwork": True, "sip": {"port": sip_port},
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


def test_the_operator_pod_exits_0_on_rollout(kube: Kube, deployed: Deployed) -> None:
    """helm upgrade rolls the operator (Recreate): the old pod gets SIGTERM and exits 0."""
    ns = deployed.namespace
    selector = "app.kubernetes.io/name=voicetyped-operator"
    (old,) = kube.pods(ns, selector)
    # The old pod's last status (its exit code) is only seen by watching it go.
    watch = subprocess.Popen(
        [kube.kubectl_bin, "get", "pods", "-n", ns, "-l", selector, "--watch", "-o", "json"],
        stdout=subprocess.PIPE, text=True, env=kube.env(),
    )  # fmt: skip
    try:
        kube.helm(
            "upgrade", "vt", str(CHART), "--namespace", ns, "--reuse-values",
            "--set", "operator.logLevel=debug", "--wait", "--timeout", "5m", timeout_s=360,
        )  # fmt: skip
        (new,) = kube.wait_running(ns, selector, 1, timeout_s=120)
        assert new["metadata"]["name"] != old["metadata"]["name"]
    finally:
        watch.terminate()
        seen, _ = watch.communicate(timeout=30)
    codes = [
        state["terminated"]["exitCode"]
        for pod in _json_stream(seen)
        if pod["metadata"]["name"] == old["metadata"]["name"]
        for status in pod["status"].get("containerStatuses", [])
        if "terminated" in (state := status.get("state", {}))
    ]
    assert codes and set(codes) == {0}, codes


def _json_stream(text: str) -> Iterator[dict[str, Any]]:
    decoder = json.JSONDecoder()
    position = 0
    while (position := _skip_space(text, position)) < len(text):
        try:
            obj, position = decoder.raw_decode(text, position)
        except ValueError:
            return  # the watch was stopped in the middle of an object
        yield obj


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def test_deleting_the_voicedeployment_removes_everything(kube: Kube, deployed: Deployed) -> None:
    ns = deployed.namespace
    selector = f"voicetyped.io/voicedeployment={VD}"  # every child the operator made for it
    kinds = "deployments,replicasets,pods,services,configmaps,secrets,serviceaccounts,hpa"
    assert kube.items(kinds + ",networkpolicies", "-n", ns, "-l", selector)
    kube.kubectl("delete", "-n", ns, f"voicedeployment/{VD}", "--wait=true", "--timeout=300s",
                 timeout_s=330)  # fmt: skip
    left: list[str] = []

    def gone() -> bool | None:
        items = kube.items(kinds + ",networkpolicies", "-n", ns, "-l", selector)
        left[:] = [f"{i['kind']}/{i['metadata']['name']}" for i in items]
        return not items or None

    try:
        kube.wait("every child of the VoiceDeployment to go", gone, 300)
    except AssertionError as err:
        raise AssertionError(f"{err}; left: {left}") from None
    # The operator stays, and so does what the user applied beside it.
    assert kube.pods(ns, "app.kubernetes.io/name=voicetyped-operator")
    assert kube.find("dialog", VD, "-n", ns) is not None
    assert kube.find("configmap", f"voicetyped-dialog-{VD}", "-n", ns) is not None  # the Dialog's
