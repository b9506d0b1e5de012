"""The children of a VoiceDeployment (pure rendering, no cluster)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube.resources.core_v1 import Service
from pydantic import ValidationError
from voicetyped.service.config import ServiceSettings
from voicetyped_integration.config import IntegrationSettings
from voicetyped_media.config import MediaSettings
from voicetyped_operator import naming
from voicetyped_operator.documents import SecretMount
from voicetyped_operator.render import (
    DIALOGS_DIR,
    INTEGRATIONS_DIR,
    Child,
    Dependencies,
    Owner,
    RenderError,
    ServedDialog,
    ServedIntegration,
    possible_children,
    render,
)
from voicetyped_operator.settings import OperatorSettings
from voicetyped_runtime.config import RuntimeSettings
from voicetyped_specs.resources.voicedeployment import VoiceDeploymentSpec
from voicetyped_speech.config import SpeechSettings

OWNER = Owner(name="order-status", namespace="shop", uid="uid-1")
DEPS = Dependencies(
    dialogs=(ServedDialog("order-status", "voicetyped-dialog-order-status", "h1"),),
    integrations=(
        ServedIntegration(
            "shop",
            "voicetyped-integration-shop",
            "h2",
            (SecretMount("shop-api-key", ("api-key",), "/var/run/secrets/x/shop/shop-api-key"),),
        ),
    ),
)
SETTINGS = OperatorSettings(image_registry="registry.local/voicetyped", image_tag="1.2.3")


def _render(
    spec: dict[str, Any], deps: Dependencies = DEPS
) -> dict[tuple[str, str], dict[str, Any]]:
    children = render(OWNER, VoiceDeploymentSpec.model_validate(spec), deps, SETTINGS)
    return {(type(c).__name__, _name(c)): c.to_dict() for c in children}


def _name(child: Child) -> str:
    assert child.metadata is not None and child.metadata.name is not None
    return child.metadata.name


def _pod(objects: dict[tuple[str, str], dict[str, Any]], component: str) -> dict[str, Any]:
    pod: dict[str, Any] = objects[("Deployment", f"order-status-{component}")]["spec"]["template"]
    return pod


def test_children_of_the_example(vd_spec: dict[str, Any]) -> None:
    objects = _render(vd_spec)
    kinds: dict[str, int] = {}
    for kind, _ in objects:
        kinds[kind] = kinds.get(kind, 0) + 1
    assert kinds == {
        "ServiceAccount": 5,
        "ConfigMap": 4,
        "Service": 6,
        "Deployment": 5,
        "PodDisruptionBudget": 4,
        "HorizontalPodAutoscaler": 1,
        "NetworkPolicy": 5,
    }
    for obj in objects.values():
        meta = obj["metadata"]
        assert meta["namespace"] == "shop"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "voicetyped.io/v1alpha1",
                "kind": "VoiceDeployment",
                "name": "order-status",
                "uid": "uid-1",
                "blockOwnerDeletion": True,
                "controller": True,
            }
        ]
        assert meta["labels"][naming.MANAGED_BY_LABEL] == naming.MANAGED_BY
    media = _pod(objects, "media")
    assert media["spec"]["containers"][0]["image"] == "registry.local/voicetyped/media:1.2.3"
    assert media["metadata"]["labels"][naming.VERSION] == "1.2.3"


def test_media_reaches_every_ready_speech_pod_by_a_headless_service(
    vd_spec: dict[str, Any],
) -> None:
    objects = _render(vd_spec)
    headless = objects[("Service", "order-status-speech-pods")]["spec"]
    speech = objects[("Service", "order-status-speech")]["spec"]
    assert headless["clusterIP"] == "None"
    assert "publishNotReadyAddresses" not in headless  # a draining or loading pod is left out
    assert (
        headless["selector"]
        == speech["selector"]
        == naming.selector_labels("order-status", "speech")
    )
    assert headless["ports"] == [
        {
            "name": "grpc",
            "port": 50062,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        }
    ]
    assert "clusterIP" not in speech  # the ClusterIP Service stays as it was
    config = yaml.safe_load(objects[("ConfigMap", "order-status-media")]["data"]["config.yaml"])
    assert config["speech_target"] == "dns:///order-status-speech-pods:50062"
    assert (Service, "order-status-speech-pods") in possible_children(OWNER)


@pytest.mark.parametrize("quantization", [None, "f16", "q8_0"])
def test_whispercpp_weights_follow_the_spec(
    vd_spec: dict[str, Any], tmp_path: Path, quantization: str | None
) -> None:
    spec = copy.deepcopy(vd_spec)
    spec["speech"] = {"backend": "whispercpp"}
    if quantization is not None:
        spec["speech"]["quantization"] = quantization
    text = _render(spec)[("ConfigMap", "order-status-speech")]["data"]["config.yaml"]
    settings = _load(SpeechSettings, text, tmp_path)
    assert settings.asr.quantization == (quantization or "q8_0")
    gpu = _render(vd_spec)[("ConfigMap", "order-status-speech")]["data"]["config.yaml"]
    assert "quantization" not in yaml.safe_load(gpu)["asr"]  # faster-whisper: compute_type


def test_an_unknown_quantization_is_rejected_with_its_field(vd_spec: dict[str, Any]) -> None:
    spec = copy.deepcopy(vd_spec)
    spec["speech"] = {"backend": "whispercpp", "quantization": "q4_0"}
    with pytest.raises(ValidationError, match=r"speech\.quantization"):
        VoiceDeploymentSpec.model_validate(spec)


def test_speech_on_gpu(vd_spec: dict[str, Any]) -> None:
    pod = _pod(_render(vd_spec), "speech")["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    spec = copy.deepcopy(vd_spec)
    spec["speech"] = {"backend": "whispercpp"}
    cpu = _pod(_render(spec), "speech")["spec"]
    assert "nodeSelector" not in cpu and "tolerations" not in cpu
    assert "resources" not in cpu["containers"][0]


def test_hot_reload_and_rollout_rules(vd_spec: dict[str, Any]) -> None:
    before = _render(vd_spec)
    changed = Dependencies(
        dialogs=(ServedDialog("order-status", "voicetyped-dialog-order-status", "h9"),),
        integrations=(ServedIntegration("shop", "voicetyped-integration-shop", "h8", ()),),
    )
    after = _render(vd_spec, changed)
    runtime_key = ("Deployment", "order-status-runtime")
    # A dialog change: same pod templates for runtime and speech (hot reload), new annotation.
    for component in ("runtime", "speech"):
        assert _pod(before, component) == _pod(after, component)
    assert (
        before[runtime_key]["metadata"]["annotations"][naming.DIALOGS_HASH]
        != after[runtime_key]["metadata"]["annotations"][naming.DIALOGS_HASH]
    )
    # An integration change rolls the integration gateway.
    old = _pod(before, "integration")["metadata"]["annotations"][naming.INTEGRATIONS_HASH]
    new = _pod(after, "integration")["metadata"]["annotations"][naming.INTEGRATIONS_HASH]
    assert old != new
    # A settings change rolls that service.
    spec = copy.deepcopy(vd_spec)
    spec["media"]["maxCalls"] = 50
    third = _render(spec)
    assert (
        _pod(third, "media")["metadata"]["annotations"][naming.CONFIG_HASH]
        != _pod(before, "media")["metadata"]["annotations"][naming.CONFIG_HASH]
    )
    assert _pod(third, "runtime") == _pod(before, "runtime")


def test_pods_carry_the_prometheus_scrape_convention(vd_spec: dict[str, Any]) -> None:
    objects = _render(vd_spec)
    for component in ("media", "speech", "runtime", "integration"):
        pod = _pod(objects, component)
        annotations = pod["metadata"]["annotations"]
        (http,) = [p for p in pod["spec"]["containers"][0]["ports"] if p["name"] == "http"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(http["containerPort"])
        assert annotations["prometheus.io/path"] == "/metrics"


def test_drain_and_security(vd_spec: dict[str, Any]) -> None:
    objects = _render(vd_spec)
    for component, drain in (("media", 300), ("runtime", 60)):
        pod = _pod(objects, component)["spec"]
        assert pod["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
        assert pod["terminationGracePeriodSeconds"] == 5 + 2 + drain + 10
    for component in ("media", "speech", "runtime", "integration"):
        pod = _pod(objects, component)["spec"]
        container = pod["containers"][0]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        }
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == f"order-status-{component}"
        assert {m["mountPath"] for m in container["volumeMounts"]} >= {
            "/tmp",
            "/var/lib/voicetyped",
        }
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def _load(settings_cls: type[ServiceSettings], text: str, tmp_path: Path) -> Any:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return settings_cls.load(path)


@pytest.mark.parametrize(
    ("component", "settings_cls"),
    [
        ("media", MediaSettings),
        ("speech", SpeechSettings),
        ("runtime", RuntimeSettings),
        ("integration", IntegrationSettings),
    ],
)
def test_rendered_settings_load_in_the_services(
    vd_spec: dict[str, Any],
    tmp_path: Path,
    component: str,
    settings_cls: type[ServiceSettings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = _render(vd_spec)
    text = objects[("ConfigMap", f"order-status-{component}")]["data"]["config.yaml"]
    # What the pod adds through the environment (fieldRefs).
    for env in _pod(objects, component)["spec"]["containers"][0]["env"]:
        if "valueFrom" in env:
            monkeypatch.setenv(env["name"], "10.0.0.7")
    settings = _load(settings_cls, text, tmp_path)
    assert settings.log_format == "json"
    if component == "media":
        assert settings.speech_target == "dns:///order-status-speech-pods:50062"
        assert settings.runtime_target == "order-status-runtime:50063"
        assert settings.allowed_cidrs == ["10.0.0.0/8", "192.0.2.0/24"]
        assert settings.shutdown_grace_s == 300
    elif component == "speech":
        assert settings.asr.backend == "faster-whisper" and settings.asr.device == "cuda"
        assert settings.asr.model_name == "tiny.en"
        assert settings.tts.warmup_dialogs_dir == Path(DIALOGS_DIR)
    elif component == "runtime":
        assert settings.dialogs_dir == Path(DIALOGS_DIR)
        assert settings.store_url == "redis://order-status-redis:6379/0"
        assert settings.integration_target == "order-status-integration:50064"
    else:
        assert settings.integrations_dir == Path(INTEGRATIONS_DIR)
        assert settings.store_url == "redis://order-status-redis:6379/1"


def test_speech_model_and_language(vd_spec: dict[str, Any], tmp_path: Path) -> None:
    spec = copy.deepcopy(vd_spec)
    spec["speech"].update({"modelName": "base", "language": "es"})
    text = _render(spec)[("ConfigMap", "order-status-speech")]["data"]["config.yaml"]
    asr = _load(SpeechSettings, text, tmp_path).asr
    assert (asr.model_name, asr.language, asr.model) == ("base", "es", None)
    spec["speech"]["modelName"] = "large"
    with pytest.raises(ValidationError, match="modelName"):
        VoiceDeploymentSpec.model_validate(spec)


def test_media_options(vd_spec: dict[str, Any]) -> None:
    spec = copy.deepcopy(vd_spec)
    spec["media"].update(
        {
            "hostNetwork": True,
            "serviceType": "NodePort",
            "allowedSourceCIDRs": [],
            "digestAuth": {"secretRef": {"name": "sip-users", "key": "users.txt"}},
            "sip": {"port": 5080, "transports": ["udp"]},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 8, "targetActiveCalls": 30},
        }
    )
    objects = _render(spec)
    deployment = objects[("Deployment", "order-status-media")]
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    pod = deployment["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["VOICETYPED_MEDIA_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["digest-users"]["secret"]["items"] == [{"key": "users.txt", "path": "users"}]
    config = yaml.safe_load(objects[("ConfigMap", "order-status-media")]["data"]["config.yaml"])
    assert config["digest_users_file"] == "/var/run/secrets/voicetyped/digest/users"
    service = objects[("Service", "order-status-media")]["spec"]
    assert [p["name"] for p in service["ports"]] == ["sip-udp"]
    assert service["sessionAffinity"] == "ClientIP"
    policy = objects[("NetworkPolicy", "order-status-media")]["spec"]["ingress"][0]
    assert "from" not in policy  # digest auth only: any source may reach SIP
    speech_from = objects[("NetworkPolicy", "order-status-speech")]["spec"]["ingress"][0]["from"]
    assert {"ipBlock": {"cidr": "0.0.0.0/0"}} in speech_from  # host-network media gateway
    hpa = objects[("HorizontalPodAutoscaler", "order-status-media")]["spec"]
    assert hpa["metrics"][0]["pods"]["target"] == {"type": "AverageValue", "averageValue": "30"}


def test_speech_scales_on_its_recognition_load_and_refuses_calls_beyond_it(
    vd_spec: dict[str, Any], tmp_path: Path
) -> None:
    spec = copy.deepcopy(vd_spec)
    spec["speech"] = {
        "backend": "whispercpp",
        "workers": 2,
        "autoscaling": {"minReplicas": 2, "maxReplicas": 6, "targetLoad": 0.5},
        "capacity": {"maxCalls": 10, "loadThreshold": 0.75},
    }
    objects = _render(spec)
    hpa = objects[("HorizontalPodAutoscaler", "order-status-speech")]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "voicetyped_speech_load"},
                "target": {"type": "AverageValue", "averageValue": "500m"},
            },
        }
    ]
    text = objects[("ConfigMap", "order-status-speech")]["data"]["config.yaml"]
    capacity = _load(SpeechSettings, text, tmp_path).capacity
    assert (capacity.max_streams, capacity.load_threshold, capacity.queue_threshold) == (
        10,
        0.75,
        2,
    )
    # With CPU as well the HPA takes whichever asks for more pods; the metric can be renamed.
    spec["speech"]["autoscaling"] |= {"targetCPUUtilization": 80, "loadMetric": "speech_load"}
    hpa = _render(spec)[("HorizontalPodAutoscaler", "order-status-speech")]["spec"]
    assert [m["type"] for m in hpa["metrics"]] == ["Pods", "Resource"]
    assert hpa["metrics"][0]["pods"]["metric"] == {"name": "speech_load"}
    spec["speech"]["autoscaling"] = {"maxReplicas": 6, "targetLoad": 1.5}
    with pytest.raises(ValidationError, match="targetLoad"):
        VoiceDeploymentSpec.model_validate(spec)


def test_low_sip_port_gets_the_unprivileged_port_sysctl(vd_spec: dict[str, Any]) -> None:
    spec = copy.deepcopy(vd_spec)
    spec["media"]["sip"] = {"port": 506, "transports": ["udp"]}
    pod = _pod(_render(spec), "media")["spec"]
    assert pod["securityContext"]["sysctls"] == [
        {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}
    ]


def test_external_redis(vd_spec: dict[str, Any]) -> None:
    spec = copy.deepcopy(vd_spec)
    spec["runtime"]["store"] = {
        "type": "redis",
        "redis": {
            "urlSecretRef": {"name": "redis", "key": "url"},
            "passwordSecretRef": {"name": "redis", "key": "password"},
        },
    }
    objects = _render(spec)
    assert ("Deployment", "order-status-redis") not in objects
    assert ("NetworkPolicy", "order-status-redis") not in objects
    for component in ("runtime", "integration"):
        env = {e["name"]: e for e in _pod(objects, component)["spec"]["containers"][0]["env"]}
        assert env["VOICETYPED_STORE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "redis",
            "key": "url",
        }
        config = yaml.safe_load(
            objects[("ConfigMap", f"order-status-{component}")]["data"]["config.yaml"]
        )
        assert config["redis_password_file"] == "/var/run/secrets/voicetyped/redis/password"
        assert "store_url" not in config


def test_managed_redis_is_placed_like_the_runtime(vd_spec: dict[str, Any]) -> None:
    spec = copy.deepcopy(vd_spec)
    spec["runtime"]["nodeSelector"] = {"pool": "cpu"}
    spec["runtime"]["tolerations"] = [
        {"key": "dedicated", "operator": "Equal", "value": "voice", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 30},
    ]  # fmt: skip
    objects = _render(spec)
    redis = _pod(objects, "redis")["spec"]
    runtime = _pod(objects, "runtime")["spec"]
    assert redis["nodeSelector"] == runtime["nodeSelector"] == {"pool": "cpu"}
    assert redis["tolerations"] == runtime["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "voice", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 30},
    ]  # fmt: skip
    # The speech pool's GPU placement is not the runtime's: Redis does not follow it.
    assert _pod(objects, "speech")["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    # Without placement on the runtime, none on Redis either.
    plain = _pod(_render(vd_spec), "redis")["spec"]
    assert "nodeSelector" not in plain and "tolerations" not in plain


def test_no_integrations_mounts_an_empty_directory(vd_spec: dict[str, Any]) -> None:
    spec = {**copy.deepcopy(vd_spec), "integrations": []}
    objects = _render(spec, Dependencies(dialogs=DEPS.dialogs))
    volumes = {v["name"]: v for v in _pod(objects, "integration")["spec"]["volumes"]}
    assert volumes["integrations"] == {"name": "integrations", "emptyDir": {}}


def test_affinity_is_checked(vd_spec: dict[str, Any]) -> None:
    spec = copy.deepcopy(vd_spec)
    spec["runtime"]["affinity"] = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {
                            "matchLabels": {"app.kubernetes.io/component": "runtime"}
                        },
                    },
                }
            ]
        }
    }
    pod = _pod(_render(spec), "runtime")["spec"]
    assert pod["affinity"] == spec["runtime"]["affinity"]
    spec["runtime"]["affinity"] = {"podAntiAfinity": {}}
    with pytest.raises(RenderError, match=r"spec.runtime.affinity: unknown field 'podAntiAfinity'"):
        _render(spec)


EDGE_TRUNKS = [
    {
        "name": "carrier-a",
        "registrars": ["sip:reg1.carrier.example:5060", "sip:reg2.carrier.example"],
        "username": "4930123",
        "authUsername": "acct-77",
        "passwordSecretRef": {"name": "trunk-a", "key": "password"},
        "domain": "carrier.example",
        "expiresSeconds": 600,
        "transport": "tcp",
        "keepaliveSeconds": 20,
        "dids": ["4930123"],
        "dialog": "order-status",
        "trustRegistrarSource": True,
        "maxCalls": 30,
    },
    {
        "name": "carrier-b",
        "registrars": ["sip:[2001:db8::5]:5080"],
        "username": "bob",
        "passwordSecretRef": {"name": "trunk-b", "key": "pw"},
    },
]


def _edge_spec(vd_spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(vd_spec)
    spec["media"].update(
        {
            "tls": {
                "secretRef": {"name": "sip-tls"},
                "clientCASecretRef": {"name": "carrier-ca", "key": "ca.pem"},
                "minVersion": "TLSv1.3",
            },
            "srtp": "required",
            "dialogSRTP": {"order-status": "optional"},
            "rateLimit": {"requestsPerSecond": 5.5, "burst": 30, "banAfter": 12,
                          "failuresBeforeBan": 3, "banSeconds": 900},
            "carrierCIDRs": ["192.0.2.0/24", "2001:db8::/32"],
            "maxCallsPerSource": 4,
            "maxCallsPerRoute": 50,
            "trunks": EDGE_TRUNKS,
        }
    )  # fmt: skip
    return spec


def test_sip_edge_settings_load_in_the_media_gateway(
    vd_spec: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = _render(_edge_spec(vd_spec), Dependencies(DEPS.dialogs, DEPS.integrations, "th1"))
    config = yaml.safe_load(objects[("ConfigMap", "order-status-media")]["data"]["config.yaml"])
    trunks = copy.deepcopy(config["trunks"])
    for trunk in config["trunks"]:  # the gateway reads each password file at start: mount them
        mounted = tmp_path / "secrets" / trunk["name"] / "password"
        mounted.parent.mkdir(parents=True)
        mounted.write_text("s3cret")
        trunk["password_file"] = str(mounted)
    monkeypatch.setenv("VOICETYPED_MEDIA_IP", "10.0.0.7")
    media = _load(MediaSettings, yaml.safe_dump(config), tmp_path)  # the gateway's own model
    assert [(t.name, t.transport, t.dialog, t.max_calls) for t in media.trunks] == [
        ("carrier-a", "tcp", "order-status", 30),
        ("carrier-b", "udp", "", None),
    ]
    assert media.sip_transports == ["udp", "tcp", "tls"] and media.sip_tls_port == 5061
    assert str(media.tls_cert_file) == "/var/run/secrets/voicetyped/sip-tls/tls.crt"
    assert str(media.tls_key_file) == "/var/run/secrets/voicetyped/sip-tls/tls.key"
    assert str(media.tls_client_ca_file) == "/var/run/secrets/voicetyped/sip-tls-client-ca/ca.crt"
    assert media.tls_min_version == "TLSv1.3"
    assert media.srtp == "required" and media.srtp_for("order-status") == "optional"
    limit = media.sip_rate_limit
    assert (limit.requests_per_s, limit.burst, limit.ban_after) == (5.5, 30, 12)
    assert (limit.failures_before_ban, limit.ban_s) == (3, 900.0)
    assert [str(n) for n in limit.exempt_cidrs] == [
        "127.0.0.0/8", "::1/128", "192.0.2.0/24", "2001:db8::/32",
    ]  # fmt: skip
    assert (media.max_calls_per_source, media.max_calls_per_route) == (4, 50)
    assert trunks == [
        {
            "name": "carrier-a",
            "registrars": ["sip:reg1.carrier.example:5060", "sip:reg2.carrier.example"],
            "username": "4930123",
            "auth_username": "acct-77",
            "password_file": "/var/run/secrets/voicetyped/trunks/carrier-a/password",
            "domain": "carrier.example",
            "expires_s": 600,
            "transport": "tcp",
            "keepalive": "options",
            "keepalive_s": 20.0,
            "dids": ["4930123"],
            "dialog": "order-status",
            "trust_registrar_source": True,
            "max_calls": 30,
        },
        {
            "name": "carrier-b",
            "registrars": ["sip:[2001:db8::5]:5080"],
            "username": "bob",
            "auth_username": None,
            "password_file": "/var/run/secrets/voicetyped/trunks/carrier-b/password",
            "domain": None,
            "expires_s": 300,
            "transport": "udp",
            "keepalive": "options",
            "keepalive_s": 25.0,
            "dids": [],
            "dialog": "",
            "trust_registrar_source": False,
            "max_calls": None,
        },
    ]


def test_sip_edge_secrets_are_read_only_files(vd_spec: dict[str, Any]) -> None:
    objects = _render(_edge_spec(vd_spec), Dependencies(DEPS.dialogs, DEPS.integrations, "th1"))
    pod = _pod(objects, "media")
    container = pod["spec"]["containers"][0]
    volumes = {v["name"]: v["secret"] for v in pod["spec"]["volumes"] if "secret" in v}
    assert volumes == {
        "sip-tls": {"secretName": "sip-tls", "defaultMode": 0o440,
                    "items": [{"key": "tls.crt", "path": "tls.crt"},
                              {"key": "tls.key", "path": "tls.key"}]},
        "sip-tls-client-ca": {"secretName": "carrier-ca", "defaultMode": 0o440,
                              "items": [{"key": "ca.pem", "path": "ca.crt"}]},
        "trunk-0": {"secretName": "trunk-a", "defaultMode": 0o440,
                    "items": [{"key": "password", "path": "password"}]},
        "trunk-1": {"secretName": "trunk-b", "defaultMode": 0o440,
                    "items": [{"key": "pw", "path": "password"}]},
    }  # fmt: skip
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    for name in volumes:
        assert mounts[name]["readOnly"] is True
    assert mounts["trunk-1"]["mountPath"] == "/var/run/secrets/voicetyped/trunks/carrier-b"
    # No Secret reaches the environment; the ConfigMap holds paths only.
    assert all("secretKeyRef" not in (e.get("valueFrom") or {}) for e in container["env"])
    assert pod["metadata"]["annotations"][naming.TLS_HASH] == "th1"
    ports = {p["name"]: p for p in container["ports"]}
    assert ports["sip-tls"] == {"name": "sip-tls", "containerPort": 5061, "protocol": "TCP"}


def test_sip_edge_service_and_network_policy(vd_spec: dict[str, Any]) -> None:
    objects = _render(_edge_spec(vd_spec))
    service = objects[("Service", "order-status-media")]["spec"]
    assert [(p["name"], p["port"], p["protocol"]) for p in service["ports"]] == [
        ("sip-udp", 5060, "UDP"), ("sip-tcp", 5060, "TCP"), ("sip-tls", 5061, "TCP"),
    ]  # fmt: skip
    assert service["ports"][2]["targetPort"] == "sip-tls"
    assert service["type"] == "LoadBalancer" and service["externalTrafficPolicy"] == "Local"
    rules = objects[("NetworkPolicy", "order-status-media")]["spec"]["ingress"]
    assert {"port": 5061, "protocol": "TCP"} in rules[0]["ports"]
    # The operator reads each media pod's GET /v1/trunks; nothing else reaches that port.
    assert rules[-1] == {
        "from": [{"namespaceSelector": {},
                  "podSelector": {"matchLabels": {"app.kubernetes.io/component": "operator",
                                                  "app.kubernetes.io/part-of": "voicetyped"}}}],
        "ports": [{"port": 8081, "protocol": "TCP"}],
    }  # fmt: skip
    # Without tls and trunks: no TLS port, no operator rule, transports as before.
    plain = _render(vd_spec)
    assert [p["name"] for p in plain[("Service", "order-status-media")]["spec"]["ports"]] == [
        "sip-udp", "sip-tcp",
    ]  # fmt: skip
    plain_rules = plain[("NetworkPolicy", "order-status-media")]["spec"]["ingress"]
    assert all(r["ports"] != [{"port": 8081, "protocol": "TCP"}] for r in plain_rules)
    config = yaml.safe_load(plain[("ConfigMap", "order-status-media")]["data"]["config.yaml"])
    assert config["sip_transports"] == ["udp", "tcp"] and "trunks" not in config
    assert "tls_cert_file" not in config and config["srtp"] == "optional"
