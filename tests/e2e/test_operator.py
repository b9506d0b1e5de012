"""The operator on the real control plane: the order-status example end to end.

Applying ``examples/order-status/`` creates every child with owner references; speech pods
land on the GPU pool; the VoiceDeployment turns Ready once its Deployments are available
(KWOK marks the pods Running) and ``kubectl wait`` returns; Dialog edits reach the
ConfigMap without rolling the runtime, an invalid edit is reported and the served version
stays; missing Dialogs/Secrets stall it until they appear; an expired or mismatched media TLS
certificate stalls it with nothing rolled out until the Secret is fixed; the console and
browser calling appear when enabled (the token only in its Secret) and go when disabled;
drift is repaired; deleting it garbage-collects every child.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from voicetyped_testkit.pki import make_pki

if TYPE_CHECKING:
    from tests.e2e.kube import Kube
    from tests.e2e.operator_support import Operator

pytestmark = pytest.mark.e2e


s = sys.modules["voicetyped_e2e_operator_support"]  # conftest.py loads it, with its fixtures

EXPECTED = {
    "Deployment": {"media", "speech", "runtime", "integration", "redis"},
    "Service": {"media", "speech", "speech-pods", "runtime", "integration", "redis"},
    "ServiceAccount": {"media", "speech", "runtime", "integration", "redis"},
    "ConfigMap": {"media", "speech", "runtime", "integration"},
    "PodDisruptionBudget": {"media", "speech", "runtime", "integration"},
    "NetworkPolicy": {"media", "speech", "runtime", "integration", "redis"},
    "HorizontalPodAutoscaler": {"speech"},
}


def _example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((s.EXAMPLE_DIR / f"{name}.yaml").read_text())
    return loaded


def _apply_example(kube: Kube, namespace: str) -> dict[str, Any]:
    kube.kubectl("apply", "-n", namespace, "-f", str(s.EXAMPLE_DIR))
    ready: dict[str, Any] = s.wait_condition(
        kube, s.VD, "order-status", namespace, "Ready", timeout_s=120
    )
    return ready


def test_example_creates_every_child_and_becomes_ready(
    kube: Kube, namespace: str, operator: Operator, gpu_nodes: list[str]
) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", str(s.EXAMPLE_DIR))
    # `kubectl wait` is how users and CI wait for it: it must return.
    waited = kube.kubectl(
        "wait", "--for=condition=Ready", "voicedeployment/order-status", "-n", namespace,
        "--timeout=120s",
    )  # fmt: skip
    assert "condition met" in waited.stdout, waited.stdout
    vd = s.get(kube, s.VD, "order-status", namespace)
    assert vd is not None
    uid = vd["metadata"]["uid"]
    status = vd["status"]
    assert status["observedGeneration"] == vd["metadata"]["generation"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
    }
    for cond in status["conditions"]:
        assert cond["reason"] and cond["lastTransitionTime"], cond
        assert cond["observedGeneration"] == vd["metadata"]["generation"]
    assert status["summary"] == "5/5"
    assert status["components"]["media"] == {
        "desired": 2, "ready": 2, "updated": 2, "available": True
    }  # fmt: skip
    assert status["dialogs"][0]["name"] == "order-status" and status["dialogs"][0]["contentHash"]

    # Every child: owned by this VoiceDeployment (controller), recommended labels.
    found: dict[str, set[str]] = {}
    for child in s.children(kube, namespace, "order-status"):
        meta = child["metadata"]
        refs = meta.get("ownerReferences") or []
        assert refs == [
            {
                "apiVersion": "voicetyped.io/v1alpha1",
                "kind": "VoiceDeployment",
                "name": "order-status",
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], (child["kind"], meta["name"], refs)
        labels = meta["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "voicetyped-operator"
        assert labels["app.kubernetes.io/part-of"] == "voicetyped"
        assert labels["app.kubernetes.io/instance"] == "order-status"
        component = labels["app.kubernetes.io/component"]
        suffix = meta["name"].removeprefix("order-status-")
        # The headless Service the media gateway resolves carries the speech pods' labels.
        assert suffix == component or (child["kind"], suffix, component) == (
            "Service",
            "speech-pods",
            "speech",
        ), meta["name"]
        found.setdefault(child["kind"], set()).add(suffix)
    assert found == EXPECTED

    # Speech: GPU requests, GPU node selector and toleration; it landed on a GPU node.
    speech = kube.wait_running(namespace, "app.kubernetes.io/component=speech", 1)[0]
    assert speech["spec"]["nodeName"] in gpu_nodes
    container = speech["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert speech["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in speech[
        "spec"
    ]["tolerations"]
    others = kube.pods(namespace, "app.kubernetes.io/component!=speech")
    assert others and all(p["spec"].get("nodeName") not in gpu_nodes for p in others)

    # Media and runtime drain on scale-down: preStop pause and a grace period covering it.
    for component, drain in (("media", 300), ("runtime", 60)):
        deployment = kube.get("deployment", f"order-status-{component}", "-n", namespace)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["containers"][0]["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
        assert pod["terminationGracePeriodSeconds"] >= drain + 5
        config = yaml.safe_load(
            kube.get("configmap", f"order-status-{component}", "-n", namespace)["data"][
                "config.yaml"
            ]
        )
        assert config["shutdown_grace_s"] == drain
        assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    media = kube.get("service", "order-status-media", "-n", namespace)["spec"]
    assert sorted((p["name"], p["protocol"], p["port"]) for p in media["ports"]) == [
        ("sip-tcp", "TCP", 5060),
        ("sip-udp", "UDP", 5060),
    ]
    assert media["type"] == "LoadBalancer" and media["externalTrafficPolicy"] == "Local"
    for component in ("speech", "runtime", "integration"):
        ports = kube.get("service", f"order-status-{component}", "-n", namespace)["spec"]["ports"]
        assert "grpc" in {p["name"] for p in ports}
    hpa = kube.get("hpa", "order-status-speech", "-n", namespace)["spec"]
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == "DCGM_FI_DEV_GPU_UTIL"
    # NetworkPolicies: the integration gateway only from the runtime; media only from the
    # allowed source networks, SIP and the RTP range.
    policy = kube.get("networkpolicy", "order-status-integration", "-n", namespace)["spec"]
    sources = policy["ingress"][0]["from"]
    assert [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in sources] == [
        "runtime"
    ]
    media_policy = kube.get("networkpolicy", "order-status-media", "-n", namespace)["spec"]
    rule = media_policy["ingress"][0]
    assert [p["ipBlock"]["cidr"] for p in rule["from"]] == ["10.0.0.0/8", "192.0.2.0/24"]
    assert {"port": 20000, "endPort": 20999, "protocol": "UDP"} in rule["ports"]

    # Printer columns.
    table = kube.kubectl("get", "voicedeployments", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "COMPONENTS", "AGE"], table
    assert table[1].split()[:3] == ["order-status", "True", "5/5"], table
    wide = kube.kubectl("get", "vd", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == [
        "NAME", "READY", "COMPONENTS", "AGE", "DIALOGS", "MEDIA", "SPEECH", "REASON", "MESSAGE"
    ], wide  # fmt: skip
    dialogs = kube.kubectl("get", "dialogs", "-n", namespace).stdout.splitlines()
    assert dialogs[0].split() == ["NAME", "READY", "STATES", "HASH", "AGE"], dialogs
    assert dialogs[1].split()[:3] == ["order-status", "True", "11"], dialogs
    integrations = kube.kubectl("get", "integrations", "-n", namespace).stdout.splitlines()
    assert integrations[1].split()[:3] == ["shop", "True", "2"], integrations
    dialog = s.get(kube, s.DIALOG, "order-status", namespace)
    assert dialog is not None and dialog["status"]["usedBy"] == ["order-status"]
    # An Event for the transition to Ready.
    reasons = {e["reason"] for e in s.events(kube, namespace, "order-status")}
    assert "Ready" in reasons, reasons


def test_dialog_edits_reload_without_a_rollout_and_invalid_edits_keep_the_served_version(
    kube: Kube, namespace: str, operator: Operator
) -> None:
    _apply_example(kube, namespace)
    config_map = "voicetyped-dialog-order-status"
    before_cm = kube.get("configmap", config_map, "-n", namespace)
    old_hash = before_cm["metadata"]["annotations"]["voicetyped.io/content-hash"]
    runtime = kube.get("deployment", "order-status-runtime", "-n", namespace)
    template_before = runtime["spec"]["template"]
    hash_before = runtime["metadata"]["annotations"]["voicetyped.io/dialogs-hash"]
    dialog = _example("dialog")

    # A valid edit: new prompt text.
    edited = copy.deepcopy(dialog)
    edited["spec"]["states"]["goodbye"]["on_enter"][0]["play_tts"]["text"] = "Bye for now!"
    kube.apply(edited, namespace)
    updated = s.wait_for(
        "the dialog ConfigMap to change",
        lambda: (
            got
            if (got := kube.get("configmap", config_map, "-n", namespace))["metadata"][
                "annotations"
            ]["voicetyped.io/content-hash"]
            != old_hash
            else None
        ),
    )
    new_hash = updated["metadata"]["annotations"]["voicetyped.io/content-hash"]
    document = yaml.safe_load(updated["data"]["order-status.yaml"])
    assert document["states"]["goodbye"]["on_enter"][0]["play_tts"]["text"] == "Bye for now!"
    assert document["name"] == "order-status"
    ready = s.wait_condition(kube, s.DIALOG, "order-status", namespace, "Ready")
    assert ready["status"]["contentHash"] == new_hash
    vd = s.wait_for(
        "the VoiceDeployment to serve the new version",
        lambda: (
            got
            if (got := s.get(kube, s.VD, "order-status", namespace))
            and got["status"]["dialogs"] == [{"name": "order-status", "contentHash": new_hash}]
            else None
        ),
    )
    # The hash on the Deployment's annotations bumps its generation (the API server copies
    # Deployment annotations to ReplicaSets), so Ready is False until the deployment
    # controller has observed it; nothing rolls.
    s.wait_condition(kube, s.VD, "order-status", namespace, "Ready", timeout_s=30)
    runtime = kube.get("deployment", "order-status-runtime", "-n", namespace)
    # Hot reload: the pods mount the ConfigMap; the pod template (so the pods) stays, the
    # Deployment records which version it serves.
    assert runtime["spec"]["template"] == template_before
    assert runtime["metadata"]["annotations"]["voicetyped.io/dialogs-hash"] != hash_before

    # An invalid edit (the runtime's validator, not the schema, finds it): reported with
    # the field path, the served version stays.
    broken = copy.deepcopy(edited)
    broken["spec"]["states"]["greet"]["transitions"][0]["condition"] = "vars.nope > 1"
    broken["spec"]["states"]["status"]["on_enter"][0]["play_tts"]["text"] = "{{ unclosed"
    kube.apply(broken, namespace)
    stalled = s.wait_condition(
        kube, s.DIALOG, "order-status", namespace, "Stalled", reason="InvalidDialog"
    )
    message = s.condition(stalled, "Stalled")["message"]
    assert "states.greet.transitions[0].condition" in message, message
    assert "vars.nope" in message and "states.status.on_enter[0]" in message, message
    assert f"still serving version {new_hash}" in message, message
    assert s.condition(stalled, "Ready")["status"] == "False"
    assert stalled["status"]["contentHash"] == new_hash
    kept = kube.get("configmap", config_map, "-n", namespace)
    assert kept["metadata"]["annotations"]["voicetyped.io/content-hash"] == new_hash
    assert kept["data"] == updated["data"]
    warnings = [e for e in s.events(kube, namespace, "order-status") if e["type"] == "Warning"]
    assert any(e["reason"] == "InvalidDialog" for e in warnings), warnings
    vd = s.get(kube, s.VD, "order-status", namespace)
    assert s.condition(vd, "Ready")["status"] == "True"

    # Fixed again: Ready, same hash as the valid edit.
    kube.apply(edited, namespace)
    fixed = s.wait_condition(kube, s.DIALOG, "order-status", namespace, "Ready")
    assert fixed["status"]["contentHash"] == new_hash
    assert s.condition(fixed, "Stalled")["status"] == "False"


def test_a_call_hook_without_its_integration_is_reported_on_the_dialog(
    kube: Kube, namespace: str, operator: Operator
) -> None:
    _apply_example(kube, namespace)
    # order-status's lookup calls shop.get_order: resolved while the Integration exists.
    waited = kube.kubectl(
        "wait", "--for=condition=IntegrationsResolved", "dialog/order-status", "-n", namespace,
        "--timeout=60s",
    )  # fmt: skip
    assert "condition met" in waited.stdout, waited.stdout
    kube.kubectl("delete", "-n", namespace, "integration", "shop", "--wait=true")
    dangling = s.wait_condition(
        kube, s.DIALOG, "order-status", namespace, "IntegrationsResolved", "False",
        reason="DanglingCallHook",
    )  # fmt: skip
    message = s.condition(dangling, "IntegrationsResolved")["message"]
    assert "spec.states.lookup.on_enter[1].call_hook" in message and "shop" in message, message
    # Still served: Integrations may come after the Dialogs that call them.
    assert s.condition(dangling, "Ready")["status"] == "True"
    warnings = [e for e in s.events(kube, namespace, "order-status") if e["type"] == "Warning"]
    assert any(e["reason"] == "DanglingCallHook" for e in warnings), warnings
    kube.apply(_example("integration"), namespace)
    s.wait_condition(kube, s.DIALOG, "order-status", namespace, "IntegrationsResolved")


def test_integration_edit_rolls_the_integration_gateway_only(
    kube: Kube, namespace: str, operator: Operator
) -> None:
    _apply_example(kube, namespace)
    gateway = kube.get("deployment", "order-status-integration", "-n", namespace)
    runtime = kube.get("deployment", "order-status-runtime", "-n", namespace)
    before = gateway["spec"]["template"]["metadata"]["annotations"][
        "voicetyped.io/integrations-hash"
    ]
    integration = _example("integration")
    integration["spec"]["timeoutMs"] = 2500
    kube.apply(integration, namespace)

    def rolled() -> dict[str, Any] | None:
        got = kube.get("deployment", "order-status-integration", "-n", namespace)
        annotations = got["spec"]["template"]["metadata"]["annotations"]
        return got if annotations["voicetyped.io/integrations-hash"] != before else None

    s.wait_for("the integration gateway's pod template to change", rolled)
    rendered = kube.get("configmap", "voicetyped-integration-shop", "-n", namespace)
    document = yaml.safe_load(rendered["data"]["shop.yaml"])
    assert document["timeoutMs"] == 2500
    # The Secret reference became a mounted file; the key itself is nowhere in the ConfigMap.
    assert document["auth"]["valueFile"] == (
        "/var/run/secrets/voicetyped/integrations/shop/shop-api-key/api-key"
    )
    assert "replace-with-the-shop-api-key" not in json.dumps(rendered)
    pod = kube.get("deployment", "order-status-integration", "-n", namespace)["spec"]["template"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    secret_volumes = [v["secret"] for v in volumes.values() if "secret" in v]
    assert secret_volumes == [
        {"secretName": "shop-api-key", "items": [{"key": "api-key", "path": "api-key"}],
         "defaultMode": 0o440}
    ], secret_volumes  # fmt: skip
    assert (
        kube.get("deployment", "order-status-runtime", "-n", namespace)["spec"]["template"]
        == runtime["spec"]["template"]
    )
    s.wait_condition(kube, s.VD, "order-status", namespace, "Ready")


def test_missing_secret_stalls_and_recovers_when_it_appears(
    kube: Kube, namespace: str, operator: Operator
) -> None:
    for name in ("dialog", "integration", "voicedeployment"):
        kube.apply(_example(name), namespace)
    stalled = s.wait_condition(
        kube, s.VD, "order-status", namespace, "Stalled", reason="SecretNotFound"
    )
    message = s.condition(stalled, "Stalled")["message"]
    assert f"Secret {namespace}/shop-api-key" in message, message
    assert f"Integration {namespace}/shop" in message, message
    assert s.condition(stalled, "Ready")["status"] == "False"
    integration = s.wait_condition(
        kube, s.INTEGRATION, "shop", namespace, "Stalled", reason="SecretNotFound"
    )
    assert "spec.auth.secretRef" in s.condition(integration, "Stalled")["message"]
    # The listing columns tell why without -o yaml.
    wide = kube.kubectl("get", "vd", "order-status", "-n", namespace, "-o", "wide").stdout
    assert "SecretNotFound" in wide and "shop-api-key" in wide, wide
    warnings = [e["reason"] for e in s.events(kube, namespace, "order-status")]
    assert "SecretNotFound" in warnings, warnings

    kube.apply(_example("secret"), namespace)
    recovered = s.wait_condition(kube, s.VD, "order-status", namespace, "Ready", timeout_s=120)
    assert s.condition(recovered, "Stalled")["status"] == "False"
    s.wait_condition(kube, s.INTEGRATION, "shop", namespace, "Ready")
    reasons = {e["reason"] for e in s.events(kube, namespace, "order-status")}
    assert {"Recovered", "Ready"} <= reasons, reasons


def _tls_secret(cert: Path, key: Path) -> dict[str, Any]:
    """The media gateway's kubernetes.io/tls Secret ``sip-tls`` holding ``cert`` and ``key``."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": "sip-tls"},
        "data": {
            "tls.crt": base64.b64encode(cert.read_bytes()).decode(),
            "tls.key": base64.b64encode(key.read_bytes()).decode(),
        },
    }


def _stalled_saying(kube: Kube, namespace: str, text: str) -> dict[str, Any] | None:
    found = s.get(kube, s.VD, "order-status", namespace)
    stalled = s.condition(found, "Stalled") or {}
    return found if stalled.get("status") == "True" and text in stalled.get("message", "") else None


def test_an_invalid_tls_certificate_stalls_without_a_rollout_and_recovers_when_fixed(
    kube: Kube, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    for name in ("secret", "dialog", "integration"):
        kube.apply(_example(name), namespace)
    kube.apply(_tls_secret(pki.expired.cert, pki.expired.key), namespace)
    vd = _example("voicedeployment")
    vd["spec"]["media"]["tls"] = {"secretRef": {"name": "sip-tls"}}
    kube.apply(vd, namespace)
    stalled = s.wait_condition(
        kube, s.VD, "order-status", namespace, "Stalled", reason="InvalidTLSSecret"
    )
    message = s.condition(stalled, "Stalled")["message"]
    assert message.startswith(
        f"Secret {namespace}/sip-tls (spec.media.tls.secretRef): "
        "certificate CN=expired.voicetyped.test expired on "
    ), message
    assert s.condition(stalled, "Ready")["status"] == "False"
    assert "PRIVATE KEY" not in json.dumps(stalled["status"])
    # Checked before anything is applied: no media Deployment carries the certificate.
    assert kube.items("deployments", "-n", namespace) == []
    s.wait_for(
        "an InvalidTLSSecret Warning event",
        lambda: any(
            e["reason"] == "InvalidTLSSecret" and e.get("type") == "Warning"
            for e in s.events(kube, namespace, "order-status")
        ),
    )

    # A certificate with another certificate's key: still stalled, saying so.
    kube.apply(_tls_secret(pki.server.cert, pki.client.key), namespace)
    mismatched = s.wait_for(
        "the mismatched key in the Stalled message",
        lambda: _stalled_saying(
            kube, namespace, "tls.key is not the key of certificate CN=server.voicetyped.test"
        ),
    )
    assert s.condition(mismatched, "Stalled")["reason"] == "InvalidTLSSecret"
    assert f"Secret {namespace}/sip-tls" in s.condition(mismatched, "Stalled")["message"]
    assert kube.items("deployments", "-n", namespace) == []

    # The renewed certificate: the retry finds it, and the media pods get it.
    kube.apply(_tls_secret(pki.server.cert, pki.server.key), namespace)
    recovered = s.wait_condition(kube, s.VD, "order-status", namespace, "Ready", timeout_s=120)
    assert s.condition(recovered, "Stalled")["status"] == "False"
    media = kube.get("deployment", "order-status-media", "-n", namespace)["spec"]["template"]
    assert media["metadata"]["annotations"]["voicetyped.io/sip-tls-hash"]
    volumes = {v["name"]: v for v in media["spec"]["volumes"]}
    assert volumes["sip-tls"]["secret"]["secretName"] == "sip-tls"
    s.wait_for(
        "a Recovered event",
        lambda: "Recovered" in {e["reason"] for e in s.events(kube, namespace, "order-status")},
    )


def test_missing_dialog_stalls_and_recovers_when_it_appears(
    kube: Kube, namespace: str, operator: Operator
) -> None:
    for name in ("secret", "integration", "voicedeployment"):
        kube.apply(_example(name), namespace)
    stalled = s.wait_condition(
        kube, s.VD, "order-status", namespace, "Stalled", reason="DialogNotFound"
    )
    message = s.condition(stalled, "Stalled")["message"]
    assert f"Dialog {namespace}/order-status (spec.dialogs) not found" in message, message
    assert kube.items("deployments", "-n", namespace) == []  # nothing half-built
    kube.apply(_example("dialog"), namespace)
    s.wait_condition(kube, s.VD, "order-status", namespace, "Ready", timeout_s=120)


def test_drift_is_corrected(kube: Kube, namespace: str, operator: Operator) -> None:
    _apply_example(kube, namespace)
    kube.kubectl("delete", "service", "order-status-runtime", "-n", namespace)
    kube.kubectl("scale", "deployment", "order-status-integration", "-n", namespace, "--replicas=5")
    kube.kubectl(
        "patch", "networkpolicy", "order-status-redis", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"ingress": [{}]}}),
    )  # fmt: skip
    s.wait_for(
        "the runtime Service to come back",
        lambda: s.get(kube, "service", "order-status-runtime", namespace),
    )
    s.wait_for(
        "the integration gateway back at 2 replicas",
        lambda: (
            kube.get("deployment", "order-status-integration", "-n", namespace)["spec"]["replicas"]
            == 2
        ),
    )
    s.wait_for(
        "the redis NetworkPolicy restored",
        lambda: (
            len(
                kube.get("networkpolicy", "order-status-redis", "-n", namespace)["spec"]["ingress"][
                    0
                ].get("from", [])
            )
            == 2
        ),
    )
    s.wait_condition(kube, s.VD, "order-status", namespace, "Ready")


def test_spec_changes_roll_out_and_prune(kube: Kube, namespace: str, operator: Operator) -> None:
    _apply_example(kube, namespace)
    vd = _example("voicedeployment")
    # GPU off, autoscaling moves from speech to media (active calls), NetworkPolicies off.
    vd["spec"]["speech"] = {"backend": "whispercpp", "replicas": 1}
    vd["spec"]["media"]["autoscaling"] = {
        "minReplicas": 2,
        "maxReplicas": 6,
        "targetActiveCalls": 40,
    }
    vd["spec"]["networkPolicy"] = {"enabled": False}
    kube.apply(vd, namespace)
    s.wait_for(
        "the speech HPA and the NetworkPolicies to be pruned",
        lambda: (
            [h["metadata"]["name"] for h in kube.items("hpa", "-n", namespace)]
            == ["order-status-media"]
            and not kube.items("networkpolicies", "-n", namespace)
        ),
    )
    hpa = kube.get("hpa", "order-status-media", "-n", namespace)["spec"]
    assert hpa["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "voicetyped_media_active_calls"},
                "target": {"type": "AverageValue", "averageValue": "40"},
            },
        }
    ]
    assert hpa["behavior"]["scaleDown"]["policies"] == [
        {"type": "Pods", "value": 1, "periodSeconds": 60}
    ]
    ready = s.wait_condition(kube, s.VD, "order-status", namespace, "Ready", timeout_s=120)
    assert ready["status"]["observedGeneration"] == 2
    speech = kube.get("deployment", "order-status-speech", "-n", namespace)["spec"]["template"]
    assert "nvidia.com/gpu" not in (speech["spec"]["containers"][0].get("resources") or {}).get(
        "limits", {}
    )
    assert "nodeSelector" not in speech["spec"]
    pods = kube.wait_running(namespace, "app.kubernetes.io/component=speech", 1)
    assert all(p["spec"]["nodeName"].startswith("kwok-cpu") for p in pods), pods


def test_console_and_browser_calling_are_rendered_then_pruned(
    kube: Kube, namespace: str, operator: Operator
) -> None:
    _apply_example(kube, namespace)
    token = secrets.token_hex(32)
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "voicetyped-console"},
            "stringData": {"token": token},
        },
        namespace,
    )
    vd = _example("voicedeployment")
    ref = {"name": "voicetyped-console", "key": "token"}
    vd["spec"]["console"] = {"enabled": True, "tokenSecretRef": ref}
    vd["spec"]["webrtc"] = {
        "enabled": True,
        "tokenSecretRef": ref,
        "allowedSourceCIDRs": ["192.168.0.0/16"],
    }
    kube.apply(vd, namespace)
    web = s.wait_for(
        "the webrtc Service",
        lambda: kube.find("service", "order-status-webrtc", "-n", namespace),
    )
    assert web["spec"]["ports"][0]["port"] == 8081 and web["spec"]["type"] == "ClusterIP"
    ready = s.wait_condition(kube, s.VD, "order-status", namespace, "Ready", timeout_s=120)
    assert ready["status"]["observedGeneration"] == 2
    runtime = kube.get("deployment", "order-status-runtime", "-n", namespace)
    env = {
        e["name"]: e.get("value")
        for e in runtime["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["VOICETYPED_CONSOLE__TOKEN_FILE"] == "/var/run/secrets/voicetyped/console/token"
    # The token is in the Secret only: not in any child, the status or an event.
    seen = json.dumps(
        [kube.items(kind, "-n", namespace) for kind in ("deployments", "configmaps", "services")]
        + [
            kube.get(s.VD, "order-status", "-n", namespace),
            s.events(kube, namespace, "order-status"),
        ]
    )
    assert token not in seen
    # Off again: the Service is pruned and the runtime's environment loses the console.
    del vd["spec"]["console"], vd["spec"]["webrtc"]
    kube.apply(vd, namespace)
    s.wait_for(
        "the webrtc Service to be pruned",
        lambda: kube.find("service", "order-status-webrtc", "-n", namespace) is None,
    )
    s.wait_for(
        "the runtime without the console",
        lambda: (
            "VOICETYPED_CONSOLE"
            not in json.dumps(
                kube.get("deployment", "order-status-runtime", "-n", namespace)["spec"]
            )
        ),
    )


def test_deleting_the_voice_deployment_removes_every_child(
    kube: Kube, namespace: str, operator: Operator
) -> None:
    _apply_example(kube, namespace)
    assert len(s.children(kube, namespace, "order-status")) == sum(map(len, EXPECTED.values()))
    kube.kubectl("delete", "voicedeployment", "order-status", "-n", namespace, "--wait=true")
    s.wait_for(
        "the garbage collector to remove every child",
        lambda: (
            not s.children(kube, namespace, "order-status")
            and not kube.pods(namespace, "voicetyped.io/voicedeployment=order-status")
        ),
        timeout_s=90,
    )
    # The Dialog's ConfigMap belongs to the Dialog, which is still there.
    assert s.get(kube, "configmap", "voicetyped-dialog-order-status", namespace) is not None
    dialog = s.wait_for(
        "the Dialog's usedBy to empty",
        lambda: (
            got
            if (got := s.get(kube, s.DIALOG, "order-status", namespace))
            and got["status"].get("usedBy") == []
            else None
        ),
    )
    assert dialog["status"]["usedBy"] == []
    kube.kubectl("delete", "dialog", "order-status", "-n", namespace, "--wait=true")
    s.wait_for(
        "the Dialog's ConfigMap to go with it",
        lambda: s.get(kube, "configmap", "voicetyped-dialog-order-status", namespace) is None,
    )
    assert operator.alive()
