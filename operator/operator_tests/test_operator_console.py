"""The live call console (runtime) and browser calling (media gateway) in the operator: the
spec's rules, what is rendered when they are on (and nothing when off), the token Secret's
checks, and that no token ever reaches a rendered object or the status."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError
from voicetyped_operator import crds
from voicetyped_operator.documents import pydantic_issues
from voicetyped_operator.render import Dependencies, Owner, ServedDialog, possible_children, render
from voicetyped_operator.render.console import token_problem
from voicetyped_operator.settings import OperatorSettings
from voicetyped_specs.resources.voicedeployment import VoiceDeploymentSpec

OWNER = Owner(name="order-status", namespace="shop", uid="uid-1")
DEPS = Dependencies(
    dialogs=(ServedDialog("order-status", "voicetyped-dialog-order-status", "h1"),),
)
SETTINGS = OperatorSettings(image_registry="registry.local/voicetyped", image_tag="1.2.3")
TOKEN = b"c0ns0le-t0ken-d0-n0t-leak-4f1a9e"
CALL_TOKEN = b"webrtc-t0ken-d0-n0t-leak-77b2c1"
CONSOLE = {
    "enabled": True,
    "tokenSecretRef": {"name": "console-token", "key": "token"},
    "allowedSourceCIDRs": ["10.20.0.0/16"],
    "namespaceSelector": {"kubernetes.io/metadata.name": "ingress-nginx"},
}
WEBRTC = {
    "enabled": True,
    "tokenSecretRef": {"name": "webrtc-token", "key": "secret"},
    "allowedSourceCIDRs": ["192.168.1.0/24"],
}
Objects = dict[tuple[str, str], dict[str, Any]]
Secrets = dict[str, dict[str, bytes]]


def _spec(vd_spec: dict[str, Any], **fields: Any) -> dict[str, Any]:
    spec = copy.deepcopy(vd_spec)
    spec["integrations"] = []
    spec.update(copy.deepcopy(fields))
    return spec


def _render(spec: dict[str, Any]) -> Objects:
    children = render(OWNER, VoiceDeploymentSpec.model_validate(spec), DEPS, SETTINGS)
    return {(type(c).__name__, str(c.metadata and c.metadata.name)): c.to_dict() for c in children}


def _container(objects: Objects, component: str) -> dict[str, Any]:
    pod = objects[("Deployment", f"order-status-{component}")]["spec"]["template"]["spec"]
    container: dict[str, Any] = pod["containers"][0]
    return container


def _env(objects: Objects, component: str, prefix: str) -> dict[str, Any]:
    return {
        e["name"]: e.get("value", e.get("valueFrom"))
        for e in _container(objects, component)["env"]
        if e["name"].startswith(prefix)
    }


def _volumes(objects: Objects, component: str) -> dict[str, Any]:
    pod = objects[("Deployment", f"order-status-{component}")]["spec"]["template"]["spec"]
    return {v["name"]: v for v in pod["volumes"]}


def test_off_by_default_renders_exactly_as_without_the_fields(vd_spec: dict[str, Any]) -> None:
    default = _render(_spec(vd_spec))
    # Every setting of a disabled console / browser calling is inert.
    off = _render(
        _spec(
            vd_spec,
            console={**CONSOLE, "enabled": False, "maskCallerNumbers": False},
            webrtc={**WEBRTC, "enabled": False, "tokenTtlSeconds": 900, "maxCalls": 3},
        )
    )
    assert off == default
    text = str(default)
    for trace in ("VOICETYPED_CONSOLE", "VOICETYPED_WEBRTC", "console-token", "webrtc-token"):
        assert trace not in text
    assert ("Service", "order-status-webrtc") not in default
    parsed = VoiceDeploymentSpec.model_validate(_spec(vd_spec))
    assert (parsed.console.enabled, parsed.console.mask_caller_numbers) == (False, True)
    assert (parsed.webrtc.enabled, parsed.webrtc.token_ttl_seconds) == (False, 60)


def test_console_on_the_runtime(vd_spec: dict[str, Any]) -> None:
    base = _render(_spec(vd_spec))
    objects = _render(_spec(vd_spec, console=CONSOLE))
    assert _env(objects, "runtime", "VOICETYPED_CONSOLE__") == {
        "VOICETYPED_CONSOLE__ENABLED": "true",
        "VOICETYPED_CONSOLE__TOKEN_FILE": "/var/run/secrets/voicetyped/console/token",
        "VOICETYPED_CONSOLE__MASK_CALLERS": "true",
    }
    # The token is a read-only file from the Secret's key, never an environment variable.
    assert _volumes(objects, "runtime")["console-token"] == {
        "name": "console-token",
        "secret": {
            "secretName": "console-token",
            "items": [{"key": "token", "path": "token"}],
            "defaultMode": 0o440,
        },
    }
    mounts = {m["name"]: m for m in _container(objects, "runtime")["volumeMounts"]}
    assert mounts["console-token"] == {
        "name": "console-token",
        "mountPath": "/var/run/secrets/voicetyped/console",
        "readOnly": True,
    }
    assert "console-token" not in str(_container(objects, "runtime")["env"])
    # Served on the runtime's HTTP port, which its ClusterIP Service already carries.
    service = objects[("Service", "order-status-runtime")]["spec"]
    assert service["type"] == "ClusterIP"
    assert {"name": "http", "port": 8083, "targetPort": "http"} in service["ports"]
    # The NetworkPolicy admits the listed network and namespace to that port only.
    rules = objects[("NetworkPolicy", "order-status-runtime")]["spec"]["ingress"]
    assert rules[-2:] == [
        {"from": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
         "ports": [{"port": 8083, "protocol": "TCP"}]},
        {"from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "ingress-nginx"}}}],
         "ports": [{"port": 8083, "protocol": "TCP"}]},
    ]  # fmt: skip
    base_rules = base[("NetworkPolicy", "order-status-runtime")]["spec"]["ingress"]
    assert rules[:-2] == base_rules
    # Only the runtime changes.
    for key, obj in objects.items():
        if key not in (("Deployment", "order-status-runtime"),
                       ("NetworkPolicy", "order-status-runtime")):  # fmt: skip
            assert obj == base[key], key
    assert objects.keys() == base.keys()


def test_console_caller_numbers_unmasked_and_port_forward_only(vd_spec: dict[str, Any]) -> None:
    console = {"enabled": True, "tokenSecretRef": CONSOLE["tokenSecretRef"]}
    objects = _render(_spec(vd_spec, console={**console, "maskCallerNumbers": False}))
    assert _env(objects, "runtime", "VOICETYPED_CONSOLE__MASK")[
        "VOICETYPED_CONSOLE__MASK_CALLERS"
    ] == ("false")
    # Nothing listed: no NetworkPolicy rule (an empty peer list would admit everyone);
    # kubectl port-forward is not filtered by NetworkPolicies.
    base = _render(_spec(vd_spec))
    assert (
        objects[("NetworkPolicy", "order-status-runtime")]
        == base[("NetworkPolicy", "order-status-runtime")]
    )


def test_webrtc_on_the_media_gateway(vd_spec: dict[str, Any]) -> None:
    base = _render(_spec(vd_spec))
    objects = _render(_spec(vd_spec, webrtc=WEBRTC))
    assert _env(objects, "media", "VOICETYPED_WEBRTC__") == {
        "VOICETYPED_WEBRTC__ENABLED": "true",
        "VOICETYPED_WEBRTC__TOKEN_FILE": "/var/run/secrets/voicetyped/webrtc/token",
        "VOICETYPED_WEBRTC__TOKEN_TTL_S": "60",
        "VOICETYPED_WEBRTC__DIALOG": "order-status",  # the media dialog
        "VOICETYPED_WEBRTC__MAX_CALLS": "10",
    }
    assert _volumes(objects, "media")["webrtc-token"]["secret"] == {
        "secretName": "webrtc-token",
        "items": [{"key": "secret", "path": "token"}],
        "defaultMode": 0o440,
    }
    mounts = {m["name"]: m for m in _container(objects, "media")["volumeMounts"]}
    assert mounts["webrtc-token"]["readOnly"] is True
    # The SIP Service (a public LoadBalancer in the example) stays as it was; the call page
    # gets a ClusterIP Service of its own on the media HTTP port.
    assert objects[("Service", "order-status-media")] == base[("Service", "order-status-media")]
    web = objects[("Service", "order-status-webrtc")]
    assert web["spec"] == {
        "type": "ClusterIP",
        "selector": {
            "app.kubernetes.io/name": "voicetyped-media",
            "app.kubernetes.io/instance": "order-status",
            "app.kubernetes.io/component": "media",
        },
        "ports": [{"name": "http", "port": 8081, "targetPort": "http"}],
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 3600}},
    }
    assert web["metadata"]["ownerReferences"][0]["name"] == "order-status"
    # Browsers' networks reach the call page and send UDP media to any port (ICE host
    # candidates on aioice's ephemeral ports); nobody else gains anything.
    rules = objects[("NetworkPolicy", "order-status-media")]["spec"]["ingress"]
    assert rules[-1] == {
        "from": [{"ipBlock": {"cidr": "192.168.1.0/24"}}],
        "ports": [{"port": 8081, "protocol": "TCP"}, {"protocol": "UDP"}],
    }
    assert rules[:-1] == base[("NetworkPolicy", "order-status-media")]["spec"]["ingress"]
    changed = {k for k in objects if objects[k] != base.get(k)}
    assert changed == {
        ("Deployment", "order-status-media"),
        ("NetworkPolicy", "order-status-media"),
        ("Service", "order-status-webrtc"),
    }


def test_webrtc_settings_and_pruning(vd_spec: dict[str, Any]) -> None:
    spec = _spec(
        vd_spec,
        dialogs=["order-status", "web-demo"],
        webrtc={**WEBRTC, "dialog": "web-demo", "tokenTtlSeconds": 300, "maxCalls": 4},
    )
    env = _env(_render(spec), "media", "VOICETYPED_WEBRTC__")
    assert (env["VOICETYPED_WEBRTC__DIALOG"], env["VOICETYPED_WEBRTC__TOKEN_TTL_S"]) == (
        "web-demo",
        "300",
    )
    assert env["VOICETYPED_WEBRTC__MAX_CALLS"] == "4"
    # The Service is one the operator may have made: turning webrtc off prunes it.
    kinds = {(kind.__name__, name) for kind, name in possible_children(OWNER)}
    assert ("Service", "order-status-webrtc") in kinds
    # Without NetworkPolicies the browsers' networks need not be listed.
    open_spec = _spec(
        vd_spec,
        webrtc={**WEBRTC, "allowedSourceCIDRs": []},
        networkPolicy={"enabled": False},
    )
    assert ("Service", "order-status-webrtc") in _render(open_spec)


def _issues(spec: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        VoiceDeploymentSpec.model_validate(spec)
    return "; ".join(pydantic_issues(caught.value, "spec"))


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"console": {"enabled": True}},
         "spec.console.tokenSecretRef: required when enabled (a bearer token from a Secret)"),
        ({"webrtc": {**WEBRTC, "tokenSecretRef": None}},
         "spec.webrtc.tokenSecretRef: required when enabled (a bearer token from a Secret)"),
        ({"webrtc": {**WEBRTC, "allowedSourceCIDRs": []}},
         "spec.webrtc.allowedSourceCIDRs: list the browsers' networks when networkPolicy is "
         "enabled"),
        ({"webrtc": {**WEBRTC, "dialog": "other"}},
         "spec.webrtc.dialog: 'other' is not in spec.dialogs"),
        ({"webrtc": {**WEBRTC, "tokenTtlSeconds": 5}}, "spec.webrtc.tokenTtlSeconds: "),
        ({"webrtc": {**WEBRTC, "tokenTtlSeconds": 3601}}, "spec.webrtc.tokenTtlSeconds: "),
        ({"webrtc": {**WEBRTC, "maxCalls": 0}}, "spec.webrtc.maxCalls: "),
        ({"console": {**CONSOLE, "allowedSourceCIDRs": ["lan"]}},
         "spec.console.allowedSourceCIDRs[0]: 'lan' is not a CIDR"),
        ({"console": {**CONSOLE, "token": "inline"}}, "spec.console.token: unknown field"),
        ({"console": {**CONSOLE, "authProxy": True}}, "spec.console.authProxy: unknown field"),
    ],
)  # fmt: skip
def test_invalid_settings_name_their_field(
    vd_spec: dict[str, Any], fields: dict[str, Any], says: str
) -> None:
    message = _issues(_spec(vd_spec, **fields))
    assert says in message, message


def test_the_crd_carries_the_same_rules() -> None:
    """What the API server checks at kubectl apply time (CEL), beside the model's checks."""
    (vd,) = [k for k in crds.kinds() if k.kind == "VoiceDeployment"]
    props = vd.spec["properties"]
    for part in ("console", "webrtc"):
        rules = {r["fieldPath"]: r["rule"] for r in props[part]["x-kubernetes-validations"]}
        assert rules[".tokenSecretRef"] == "!self.enabled || has(self.tokenSecretRef)"
        assert "isCIDR(c)" in rules[".allowedSourceCIDRs"]
        assert props[part]["default"]["enabled"] is False
    spec_rules = {r.get("fieldPath"): r["rule"] for r in vd.spec["x-kubernetes-validations"]}
    assert "self.webrtc.dialog in self.dialogs" in spec_rules[".webrtc.dialog"]
    assert "size(self.webrtc.allowedSourceCIDRs) > 0" in spec_rules[".webrtc.allowedSourceCIDRs"]
    assert props["webrtc"]["properties"]["tokenTtlSeconds"]["minimum"] == 10
    assert props["webrtc"]["properties"]["tokenTtlSeconds"]["maximum"] == 3600


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"", "it is empty"),
        (b"  \n", "it is empty"),
        (b"short-token", "it is shorter than 16 characters"),
        (b"has a space in the middle of it", "it holds spaces or control characters"),
        ("tök3n-ünicode-0123456789".encode(), "it is not ASCII text"),
        (TOKEN + b"\n", ""),  # a trailing newline (echo > file) is fine
    ],
)
def test_token_checks(value: bytes, problem: str) -> None:
    assert token_problem(value) == problem


def _both(vd_spec: dict[str, Any]) -> dict[str, Any]:
    return _spec(vd_spec, console=CONSOLE, webrtc=WEBRTC)


def test_tokens_never_reach_objects_or_status(
    vd_spec: dict[str, Any],
    fake_kube: Callable[[dict[str, dict[str, bytes]]], Any],
    reconcile_vd: Callable[[Any, dict[str, Any]], Any],
) -> None:
    kube = fake_kube({"console-token": {"token": TOKEN}, "webrtc-token": {"secret": CALL_TOKEN}})
    error, _ = reconcile_vd(kube, _both(vd_spec))
    assert error is None
    assert kube.condition("Stalled")["status"] == "False"
    names = {(type(o).__name__, o.metadata.name) for o in kube.applied}
    assert ("Service", "order-status-webrtc") in names
    rendered = str([o.to_dict() for o in kube.applied]) + str(kube.statuses)
    for token in (TOKEN, CALL_TOKEN):
        assert token.decode() not in rendered


@pytest.mark.parametrize(
    ("secrets", "reason", "says"),
    [
        ({"webrtc-token": {"secret": CALL_TOKEN}}, "SecretNotFound",
         "Secret shop/console-token (used by spec.console.tokenSecretRef) not found"),
        ({"console-token": {"other": TOKEN}, "webrtc-token": {"secret": CALL_TOKEN}},
         "SecretKeyNotFound",
         "Secret shop/console-token has no key 'token' (used by spec.console.tokenSecretRef)"),
        ({"console-token": {"token": TOKEN}}, "SecretNotFound",
         "Secret shop/webrtc-token (used by spec.webrtc.tokenSecretRef) not found"),
        ({"console-token": {"token": b"0123456789"}, "webrtc-token": {"secret": CALL_TOKEN}},
         "InvalidTokenSecret",
         "Secret shop/console-token key 'token' (spec.console.tokenSecretRef) is no usable "
         "bearer token: it is shorter than 16 characters"),
    ],
)  # fmt: skip
def test_a_missing_or_weak_token_stalls_naming_the_field(
    vd_spec: dict[str, Any],
    stalled_by: Callable[[Secrets, dict[str, Any]], tuple[dict[str, Any], list[Any]]],
    secrets: Secrets,
    reason: str,
    says: str,
) -> None:
    stalled, posted = stalled_by(secrets, _both(vd_spec))
    assert (stalled["status"], stalled["reason"], stalled["message"]) == ("True", reason, says)
    assert posted[0][:2] == ("Warning", reason)
    assert "0123456789" not in str(stalled) + str(posted)
