"""The spec models refuse what the CRDs' CEL rules refuse (the operator checks again)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError
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


def test_speech_gpu_target_needs_gpu(vd_spec: dict[str, Any]) -> None:
    spec = _with(vd_spec, "speech", {"autoscaling": {"maxReplicas": 2, "targetGPUUtilization": 50}})
    with pytest.raises(ValidationError, match=r"targetGPUUtilization needs gpu\.enabled"):
        VoiceDeploymentSpec.model_validate(spec)
    with pytest.raises(ValidationError, match="set targetGPUUtilization and/or"):
        VoiceDeploymentSpec.model_validate(_with(vd_spec, "speech.autoscaling", {"maxReplicas": 2}))


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
