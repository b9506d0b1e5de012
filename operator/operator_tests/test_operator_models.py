"""The spec models refuse what the CRDs' CEL rules refuse (the operator checks again)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError
from voicetyped_operator.documents import pydantic_issues
from voicetyped_specs.integration import IntegrationSpec
from voicetyped_specs.resources.voicedeployment import VoiceDeploymentSpec


def _with(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    node = out
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return out


def test_the_example_is_valid(vd_spec: dict[str, Any]) -> None:
    spec = VoiceDeploymentSpec.model_validate(vd_spec)
    assert spec.speech.gpu.enabled and spec.speech.backend == "faster-whisper"
    assert spec.default_dialog() == "order-status"
    assert spec.media.sip.transports == ["udp", "tcp"]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("media.rtp", {"portMin": 30000, "portMax": 30001}, "portMax must be at least"),
        ("media.allowedSourceCIDRs", [], "set allowedSourceCIDRs or digestAuth"),
        ("speech.backend", "whispercpp", "gpu.enabled needs backend faster-whisper"),
        ("runtime.store", {"type": "redis"}, "type redis needs redis.urlSecretRef"),
        ("media.dialog", "other", "media.dialog must be one of spec.dialogs"),
        ("media.dialogRoutes", {"100": "other"}, "is not in spec.dialogs"),
        ("dialogs", ["a", "a"], "dialogs must not repeat"),
        ("media.autoscaling", {"minReplicas": 3, "maxReplicas": 2}, "minReplicas must not"),
        ("media.unknown", 1, "Extra inputs are not permitted"),
    ],
)
def test_invalid_specs(vd_spec: dict[str, Any], path: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        VoiceDeploymentSpec.model_validate(_with(vd_spec, path, value))


TRUNK = {
    "name": "carrier-a",
    "registrars": ["sip:reg1.carrier.example:5060", "sip:reg2.carrier.example"],
    "username": "4930123",
    "passwordSecretRef": {"name": "trunk-a", "key": "password"},
}


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        ("media.carrierCIDRs", ["192.0.2.0/24", "carrier"], "spec.media.carrierCIDRs[1]: "),
        ("media.srtp", "mandatory", "spec.media.srtp: "),
        ("media.dialogSRTP", {"other": "required"}, "media.dialogSRTP.other: not in spec.dialogs"),
        ("media.tls", {"secretRef": {"name": "Bad_Name"}}, "spec.media.tls.secretRef.name: "),
        ("media.tls", {"secretRef": {"name": "t"}, "minVersion": "TLSv1.1"}, "tls.minVersion: "),
        (
            "media.tls",
            {"secretRef": {"name": "t"}, "clientCASecretRef": {"name": "ca"}},
            "spec.media.tls.clientCASecretRef.key: required field missing",
        ),
        ("media.tls", {"secretRef": {"name": "t"}, "port": 5060}, "tls.port must differ"),
        ("media.rateLimit", {"requestsPerSecond": 0}, "spec.media.rateLimit.requestsPerSecond: "),
        ("media.rateLimit", {"banS": 5}, "spec.media.rateLimit.banS: unknown field"),
        ("media.maxCallsPerSource", 0, "spec.media.maxCallsPerSource: "),
        (
            "media.trunks",
            [{**TRUNK, "registrars": ["sip:me@reg.example"]}],
            "spec.media.trunks[0].registrars[0]: ",
        ),
        ("media.trunks", [{**TRUNK, "registrars": []}], "spec.media.trunks[0].registrars: "),
        ("media.trunks", [{**TRUNK, "name": "Carrier A"}], "spec.media.trunks[0].name: "),
        ("media.trunks", [{**TRUNK, "password": "hunter2"}], "trunks[0].password: unknown field"),
        (
            "media.trunks",
            [{k: v for k, v in TRUNK.items() if k != "passwordSecretRef"}],
            "spec.media.trunks[0].passwordSecretRef: required field missing",
        ),
        ("media.trunks", [TRUNK, TRUNK], "trunks[1].name: 'carrier-a' is used by another trunk"),
        (
            "media.trunks",
            [{**TRUNK, "transport": "tls"}],
            "spec.media.trunks[0].transport: ",
        ),
        ("media.trunks", [{**TRUNK, "dialog": "other"}], "media.trunks[0].dialog: 'other' is not"),
        ("media.trunks", [{**TRUNK, "expiresSeconds": 5}], "trunks[0].expiresSeconds: "),
        ("media.trunks", [{**TRUNK, "maxCalls": 0}], "spec.media.trunks[0].maxCalls: "),
    ],
)
def test_sip_edge_errors_name_their_field(
    vd_spec: dict[str, Any], path: str, value: Any, where: str
) -> None:
    """What the operator reports (InvalidSpec) carries the field's path."""
    with pytest.raises(ValidationError) as caught:
        VoiceDeploymentSpec.model_validate(_with(vd_spec, path, value))
    message = "; ".join(pydantic_issues(caught.value, "spec"))
    assert where in message, message


def test_sip_edge_spec(vd_spec: dict[str, Any]) -> None:
    spec = _with(vd_spec, "media.tls", {"secretRef": {"name": "sip-tls"}})
    spec = _with(spec, "media.trunks", [{**TRUNK, "transport": "tcp", "dialog": "order-status"}])
    media = VoiceDeploymentSpec.model_validate(spec).media
    assert media.transports() == ["udp", "tcp", "tls"]
    assert media.tls is not None and media.tls.port == 5061 and media.tls.min_version == "TLSv1.2"
    assert media.trunks[0].keepalive_seconds == 25 and media.trunks[0].expires_seconds == 300
    assert media.trunks[0].max_calls is None, "no ceiling of the trunk's own unless set"
    udp_only = _with(spec, "media.sip", {"transports": ["udp"]})
    with pytest.raises(ValidationError, match=r"trunks\[0\]\.transport: tcp is not one of"):
        VoiceDeploymentSpec.model_validate(udp_only)


def test_speech_gpu_target_needs_gpu(vd_spec: dict[str, Any]) -> None:
    spec = _with(vd_spec, "speech", {"autoscaling": {"maxReplicas": 2, "targetGPUUtilization": 50}})
    with pytest.raises(ValidationError, match=r"targetGPUUtilization needs gpu\.enabled"):
        VoiceDeploymentSpec.model_validate(spec)
    with pytest.raises(ValidationError, match="set targetGPUUtilization and/or"):
        VoiceDeploymentSpec.model_validate(_with(vd_spec, "speech.autoscaling", {"maxReplicas": 2}))
    load_only = _with(vd_spec, "speech.autoscaling", {"maxReplicas": 2, "targetLoad": 0.5})
    assert VoiceDeploymentSpec.model_validate(load_only).speech.autoscaling is not None


BASE = {"baseURL": "https://shop/api", "operations": {"get": {"path": "/x"}}}


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"type": "apiKey", "header": "X", "value": "secret"}, "auth.value: inline secrets"),
        ({"type": "oauth2", "clientSecret": "s"}, "auth.clientSecret: inline secrets"),
        ({"valueFile": "/etc/passwd"}, "auth.valueFile"),
        ({"type": "apiKey", "header": "X"}, "apiKey auth needs secretRef"),
        (
            {"type": "apiKey", "header": "X", "query": "k", "secretRef": {"name": "s", "key": "k"}},
            "exactly one of header or query",
        ),
        ({"type": "oauth2"}, "oauth2 auth needs"),
        ({"type": "mtls"}, "mtls auth needs tlsSecretName"),
    ],
)
def test_integration_auth_refuses_inline_secrets(auth: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        IntegrationSpec.model_validate({**BASE, "auth": auth})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"baseURL": "https://u:p@shop/api"}, "must not carry credentials"),
        ({"operations": {"get": {"path": "/x", "headers": {"Authorization": "B x"}}}}, "headers"),
        ({"operations": {"get": {"path": "/x", "query": {"api_key": "k"}}}}, "query.api_key"),
    ],
)
def test_integration_refuses_credentials_elsewhere(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        IntegrationSpec.model_validate({**BASE, **change})


def test_secret_refs_name_their_fields() -> None:
    spec = IntegrationSpec.model_validate(
        {
            **BASE,
            "auth": {
                "type": "oauth2",
                "tokenURL": "https://idp/token",
                "clientIdSecretRef": {"name": "oauth", "key": "id"},
                "clientSecretSecretRef": {"name": "oauth", "key": "secret"},
            },
            "tls": {"caSecretRef": {"name": "ca", "key": "ca.crt"}},
        }
    )
    assert [(path, ref.name, ref.key) for path, ref in spec.secret_refs()] == [
        ("spec.auth.clientIdSecretRef", "oauth", "id"),
        ("spec.auth.clientSecretSecretRef", "oauth", "secret"),
        ("spec.tls.caSecretRef", "ca", "ca.crt"),
    ]
