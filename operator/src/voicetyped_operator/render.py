"""VoiceDeployment -> the Kubernetes objects that run it (pure: no API calls).

Per service (media, speech, runtime, integration): a ServiceAccount, a settings ConfigMap
(``config.yaml``, read through ``VOICETYPED_CONFIG_FILE``), a Deployment, a Service, a
PodDisruptionBudget, a NetworkPolicy and, with autoscaling, an HPA; plus a Redis
Deployment/Service for the operator-managed state store.

Rollout rules:

* a settings change rolls the service (``voicetyped.io/config-hash`` on the pod template);
* a Dialog change does **not** roll anything: the runtime and speech pods mount the Dialog
  ConfigMaps through a projected volume and hot-reload them (calls keep running); the hash
  is recorded on the Deployment's own annotations;
* an Integration change rolls the integration gateway (``voicetyped.io/integrations-hash``
  on its pod template), which holds no calls;
* media and runtime stop gracefully: a preStop pause lets endpoints drop the pod, SIGTERM
  then drains (media: new calls 503, active calls finish) within the drain time, and
  ``terminationGracePeriodSeconds`` covers both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import yaml
from lightkube.models.apps_v1 import DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment
from lightkube.models.autoscaling_v2 import (
    CrossVersionObjectReference,
    ExternalMetricSource,
    HorizontalPodAutoscalerBehavior,
    HorizontalPodAutoscalerSpec,
    HPAScalingPolicy,
    HPAScalingRules,
    MetricIdentifier,
    MetricSpec,
    MetricTarget,
    PodsMetricSource,
    ResourceMetricSource,
)
from lightkube.models.core_v1 import (
    Affinity,
    Capabilities,
    ClientIPConfig,
    ConfigMapProjection,
    ConfigMapVolumeSource,
    Container,
    ContainerPort,
    EmptyDirVolumeSource,
    EnvVar,
    EnvVarSource,
    HTTPGetAction,
    KeyToPath,
    Lifecycle,
    LifecycleHandler,
    LocalObjectReference,
    ObjectFieldSelector,
    PodSecurityContext,
    PodSpec,
    PodTemplateSpec,
    Probe,
    ProjectedVolumeSource,
    ResourceRequirements,
    SeccompProfile,
    SecretKeySelector,
    SecretVolumeSource,
    SecurityContext,
    ServicePort,
    ServiceSpec,
    SessionAffinityConfig,
    SleepAction,
    Sysctl,
    TCPSocketAction,
    Toleration,
    Volume,
    VolumeMount,
    VolumeProjection,
)
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.models.networking_v1 import (
    IPBlock,
    NetworkPolicyIngressRule,
    NetworkPolicyPeer,
    NetworkPolicyPort,
)
from lightkube.models.networking_v1 import NetworkPolicySpec as NpSpec
from lightkube.models.policy_v1 import PodDisruptionBudgetSpec
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import ConfigMap, Service, ServiceAccount
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.resources.policy_v1 import PodDisruptionBudget
from voicetyped_specs.resources import base
from voicetyped_specs.resources.voicedeployment import (
    SERVICES,
    VoiceDeploymentSpec,
    Workload,
)

from voicetyped_operator import naming
from voicetyped_operator.documents import SecretMount
from voicetyped_operator.settings import OperatorSettings

Child = (
    Deployment
    | Service
    | ConfigMap
    | ServiceAccount
    | HorizontalPodAutoscaler
    | PodDisruptionBudget
    | NetworkPolicy
)
ChildKind = (
    type[Deployment]
    | type[Service]
    | type[ConfigMap]
    | type[ServiceAccount]
    | type[HorizontalPodAutoscaler]
    | type[PodDisruptionBudget]
    | type[NetworkPolicy]
)
CHILD_KINDS: tuple[ChildKind, ...] = (
    ServiceAccount,
    ConfigMap,
    Service,
    Deployment,
    PodDisruptionBudget,
    HorizontalPodAutoscaler,
    NetworkPolicy,
)

HTTP_PORT = {"media": 8081, "speech": 8082, "runtime": 8083, "integration": 8084}
GRPC_PORT = {"media": 50061, "speech": 50062, "runtime": 50063, "integration": 50064}
REDIS = "redis"
REDIS_PORT = 6379
UID = 10001
CONFIG_DIR = "/etc/voicetyped"
DIALOGS_DIR = "/etc/voicetyped/dialogs"
INTEGRATIONS_DIR = "/etc/voicetyped/integrations"
DATA_DIR = "/var/lib/voicetyped"
DIGEST_DIR = "/var/run/secrets/voicetyped/digest"
REDIS_PASSWORD_DIR = "/var/run/secrets/voicetyped/redis"
PRE_STOP_SECONDS = 5  # endpoints and load balancers drop the pod before SIGTERM
SHUTDOWN_DELAY_S = 2.0  # the service's own: /readyz fails before it stops accepting
GRACE_MARGIN_S = 10


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class ServedDialog:
    name: str
    config_map: str
    content_hash: str


@dataclass(frozen=True)
class ServedIntegration:
    name: str
    config_map: str
    content_hash: str
    mounts: tuple[SecretMount, ...] = ()


@dataclass(frozen=True)
class Dependencies:
    dialogs: tuple[ServedDialog, ...] = ()
    integrations: tuple[ServedIntegration, ...] = ()

    def dialogs_hash(self) -> str:
        return naming.digest([(d.name, d.content_hash) for d in self.dialogs])

    def integrations_hash(self) -> str:
        return naming.digest(
            [(i.name, i.content_hash, [m.to_json() for m in i.mounts]) for i in self.integrations]
        )


@dataclass
class _Pod:
    """What differs between the services' pod templates."""

    component: str
    workload: Workload
    config: dict[str, Any]
    env: list[EnvVar] = field(default_factory=list)
    volumes: list[Volume] = field(default_factory=list)
    mounts: list[VolumeMount] = field(default_factory=list)
    ports: list[ContainerPort] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    deployment_annotations: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[base.Toleration] = field(default_factory=list)
    extra_limits: dict[str, str] = field(default_factory=dict)
    grace_seconds: int = 30
    pre_stop: bool = False
    host_network: bool = False
    sysctls: list[Sysctl] = field(default_factory=list)
    startup_failures: int = 30


def image(settings: OperatorSettings, component: str, workload: Workload) -> str:
    return workload.image or f"{settings.image_registry}/{component}:{settings.image_tag}"


def render(
    owner: Owner,
    spec: VoiceDeploymentSpec,
    deps: Dependencies,
    settings: OperatorSettings,
) -> list[Child]:
    """Every child object, in apply order (ServiceAccounts and ConfigMaps first)."""
    pods = [_media(owner, spec), _speech(spec, deps), _runtime(owner, spec, deps)]
    pods.append(_integration(owner, spec, deps))
    children: list[Child] = []
    for pod in pods:
        children.extend(_service_children(owner, spec, pod, settings))
    if spec.runtime.store.type == "managedRedis":
        children.extend(_redis(owner, spec))
    if spec.network_policy.enabled:
        children.extend(_network_policies(owner, spec))
    order = {kind: i for i, kind in enumerate(CHILD_KINDS)}
    return sorted(children, key=lambda c: order[type(c)])


def possible_children(owner: Owner) -> list[tuple[ChildKind, str]]:
    """Every object the operator could create for this VoiceDeployment (for pruning)."""
    out: list[tuple[ChildKind, str]] = []
    for component in (*SERVICES, REDIS):
        name = naming.child_name(owner.name, component)
        out.extend((kind, name) for kind in CHILD_KINDS)
    return out


# ---- per service -------------------------------------------------------------------------


def _common_config(component: str, workload: Workload, drain_s: float) -> dict[str, Any]:
    return {
        "http_port": HTTP_PORT[component],
        "grpc_port": GRPC_PORT[component],
        "log_level": workload.log_level,
        "log_format": "json",
        "shutdown_grace_s": drain_s,
        "shutdown_delay_s": SHUTDOWN_DELAY_S,
    }


def _media(owner: Owner, spec: VoiceDeploymentSpec) -> _Pod:
    media = spec.media
    vd = owner.name
    config = _common_config("media", media, float(media.drain_seconds))
    config.update(
        {
            "sip_port": media.sip.port,
            "sip_transports": list(media.sip.transports),
            "rtp_port_min": media.rtp.port_min,
            "rtp_port_max": media.rtp.port_max,
            "codecs": list(media.codecs),
            "max_calls": media.max_calls,
            "allowed_cidrs": list(media.allowed_source_cidrs),
            "dialog": spec.default_dialog(),
            "dialog_routes": dict(media.dialog_routes),
            "speech_target": f"{naming.child_name(vd, 'speech')}:{GRPC_PORT['speech']}",
            "runtime_target": f"{naming.child_name(vd, 'runtime')}:{GRPC_PORT['runtime']}",
        }
    )
    ip_field = "status.hostIP" if media.host_network else "status.podIP"
    pod = _Pod(
        component="media",
        workload=media,
        config=config,
        env=[_field_env("VOICETYPED_MEDIA_IP", ip_field)],
        grace_seconds=PRE_STOP_SECONDS
        + int(SHUTDOWN_DELAY_S)
        + media.drain_seconds
        + GRACE_MARGIN_S,
        pre_stop=True,
        host_network=media.host_network,
    )
    for transport in media.sip.transports:
        pod.ports.append(
            ContainerPort(
                name=f"sip-{transport}", containerPort=media.sip.port, protocol=transport.upper()
            )
        )
    if media.sip.port < 1024 and not media.host_network:
        # Non-root binds a low port: a namespaced, safe sysctl.
        pod.sysctls.append(Sysctl(name="net.ipv4.ip_unprivileged_port_start", value="0"))
    if media.digest_auth is not None:
        ref = media.digest_auth.secret_ref
        config["digest_users_file"] = f"{DIGEST_DIR}/users"
        config["digest_realm"] = media.digest_auth.realm
        pod.volumes.append(
            Volume(
                name="digest-users",
                secret=SecretVolumeSource(
                    secretName=ref.name,
                    items=[KeyToPath(key=ref.key, path="users")],
                    defaultMode=0o440,
                ),
            )
        )
        pod.mounts.append(VolumeMount(name="digest-users", mountPath=DIGEST_DIR, readOnly=True))
    return pod


def _serve_dialogs(pod: _Pod, deps: Dependencies) -> _Pod:
    """Mount the served Dialogs' ConfigMaps (read by hot reload: a change of their content
    is recorded on the Deployment, not the pod template, so it rolls nothing)."""
    pod.volumes.append(
        Volume(
            name="dialogs",
            projected=ProjectedVolumeSource(
                sources=[
                    VolumeProjection(configMap=ConfigMapProjection(name=d.config_map))
                    for d in deps.dialogs
                ],
                defaultMode=0o444,
            ),
        )
    )
    pod.mounts.append(VolumeMount(name="dialogs", mountPath=DIALOGS_DIR, readOnly=True))
    pod.deployment_annotations[naming.DIALOGS_HASH] = deps.dialogs_hash()
    return pod


def _speech(spec: VoiceDeploymentSpec, deps: Dependencies) -> _Pod:
    speech = spec.speech
    asr: dict[str, Any] = {
        "backend": speech.backend,
        "language": speech.language,
        "workers": speech.workers,
        "device": "cuda" if speech.gpu.enabled else "cpu",
    }
    if speech.model:
        asr["model"] = speech.model
    config = _common_config("speech", speech, 20.0)
    config.update({"asr": asr, "tts": {"warmup_dialogs_dir": DIALOGS_DIR}})
    pod = _serve_dialogs(
        _Pod(
            component="speech",
            workload=speech,
            config=config,
            env=[_field_env("VOICETYPED_ADVERTISE_HOST", "status.podIP")],
            startup_failures=90,  # models load (and warm up the prompt cache) before ready
        ),
        deps,
    )
    if speech.gpu.enabled:
        pod.node_selector.update(speech.gpu.node_selector)
        pod.tolerations.extend(speech.gpu.tolerations)
        pod.extra_limits[speech.gpu.resource_name] = str(speech.gpu.count)
    return pod


def _store(
    owner: Owner, spec: VoiceDeploymentSpec, database: int, config: dict[str, Any], pod: _Pod
) -> None:
    store = spec.runtime.store
    if store.type == "managedRedis":
        host = naming.child_name(owner.name, REDIS)
        config["store_url"] = f"redis://{host}:{REDIS_PORT}/{database}"
        return
    redis = store.redis
    assert redis is not None
    # The URL may carry credentials: an env var from the Secret wins over the file.
    pod.env.append(
        EnvVar(
            name="VOICETYPED_STORE_URL",
            valueFrom=EnvVarSource(
                secretKeyRef=SecretKeySelector(
                    name=redis.url_secret_ref.name, key=redis.url_secret_ref.key
                )
            ),
        )
    )
    if redis.password_secret_ref is not None:
        ref = redis.password_secret_ref
        config["redis_password_file"] = f"{REDIS_PASSWORD_DIR}/password"
        pod.volumes.append(
            Volume(
                name="redis-password",
                secret=SecretVolumeSource(
                    secretName=ref.name,
                    items=[KeyToPath(key=ref.key, path="password")],
                    defaultMode=0o440,
                ),
            )
        )
        pod.mounts.append(
            VolumeMount(name="redis-password", mountPath=REDIS_PASSWORD_DIR, readOnly=True)
        )


def _runtime(owner: Owner, spec: VoiceDeploymentSpec, deps: Dependencies) -> _Pod:
    runtime = spec.runtime
    vd = owner.name
    config = _common_config("runtime", runtime, float(runtime.drain_seconds))
    config.update(
        {
            "dialogs_dir": DIALOGS_DIR,
            "integration_target": f"{naming.child_name(vd, 'integration')}:"
            f"{GRPC_PORT['integration']}",
        }
    )
    pod = _serve_dialogs(
        _Pod(
            component="runtime",
            workload=runtime,
            config=config,
            env=[_field_env("VOICETYPED_ADVERTISE_HOST", "status.podIP")],
            grace_seconds=PRE_STOP_SECONDS
            + int(SHUTDOWN_DELAY_S)
            + runtime.drain_seconds
            + GRACE_MARGIN_S,
            pre_stop=True,
        ),
        deps,
    )
    _store(owner, spec, 0, config, pod)
    return pod


def _integration(owner: Owner, spec: VoiceDeploymentSpec, deps: Dependencies) -> _Pod:
    gateway = spec.integration
    config = _common_config("integration", gateway, 20.0)
    config["integrations_dir"] = INTEGRATIONS_DIR
    pod = _Pod(
        component="integration",
        workload=gateway,
        config=config,
        env=[_field_env("VOICETYPED_ADVERTISE_HOST", "status.podIP")],
        annotations={naming.INTEGRATIONS_HASH: deps.integrations_hash()},
        deployment_annotations={naming.INTEGRATIONS_HASH: deps.integrations_hash()},
    )
    if deps.integrations:
        pod.volumes.append(
            Volume(
                name="integrations",
                projected=ProjectedVolumeSource(
                    sources=[
                        VolumeProjection(configMap=ConfigMapProjection(name=i.config_map))
                        for i in deps.integrations
                    ],
                    defaultMode=0o444,
                ),
            )
        )
    else:
        pod.volumes.append(Volume(name="integrations", emptyDir=EmptyDirVolumeSource()))
    pod.mounts.append(VolumeMount(name="integrations", mountPath=INTEGRATIONS_DIR, readOnly=True))
    for index, integration in enumerate(deps.integrations):
        for number, mount in enumerate(integration.mounts):
            volume = f"secret-{index}-{number}"
            pod.volumes.append(
                Volume(
                    name=volume,
                    secret=SecretVolumeSource(
                        secretName=mount.secret,
                        items=[KeyToPath(key=k, path=k) for k in mount.keys],
                        defaultMode=0o440,
                    ),
                )
            )
            pod.mounts.append(VolumeMount(name=volume, mountPath=mount.path, readOnly=True))
    _store(owner, spec, 1, config, pod)
    return pod


# ---- the objects of one service --------------------------------------------------------------


def _service_children(
    owner: Owner, spec: VoiceDeploymentSpec, pod: _Pod, settings: OperatorSettings
) -> list[Child]:
    component = pod.component
    name = naming.child_name(owner.name, component)
    tag = image(settings, component, pod.workload).rsplit(":", 1)[-1]
    labels = naming.labels(owner.name, component, tag)
    config_text = yaml.safe_dump(pod.config, sort_keys=True)
    config_map = ConfigMap(metadata=_meta(owner, name, labels), data={"config.yaml": config_text})
    account = ServiceAccount(
        metadata=_meta(owner, name, labels), automountServiceAccountToken=False
    )
    deployment = _deployment(owner, spec, pod, settings, labels, naming.digest(config_text))
    children: list[Child] = [account, config_map, deployment, _service(owner, spec, pod, labels)]
    children.append(
        PodDisruptionBudget(
            metadata=_meta(owner, name, labels),
            spec=PodDisruptionBudgetSpec(
                maxUnavailable=1,
                selector=LabelSelector(matchLabels=naming.selector_labels(owner.name, component)),
                unhealthyPodEvictionPolicy="AlwaysAllow",
            ),
        )
    )
    hpa = _hpa(owner, spec, component, labels)
    if hpa is not None:
        children.append(hpa)
    return children


def _meta(
    owner: Owner, name: str, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> ObjectMeta:
    return ObjectMeta(
        name=name,
        namespace=owner.namespace,
        labels=labels,
        annotations=annotations or None,
        ownerReferences=[naming.owner_reference("VoiceDeployment", owner.name, owner.uid)],
    )


def _field_env(name: str, path: str) -> EnvVar:
    return EnvVar(name=name, valueFrom=EnvVarSource(fieldRef=ObjectFieldSelector(fieldPath=path)))


def _autoscaled(spec: VoiceDeploymentSpec, component: str) -> bool:
    workload: Any = getattr(spec, component)
    return getattr(workload, "autoscaling", None) is not None


def _resources(workload: Workload, extra_limits: dict[str, str]) -> ResourceRequirements | None:
    requests = {k: str(v) for k, v in workload.resources.requests.items()}
    limits = {k: str(v) for k, v in workload.resources.limits.items()}
    limits.update(extra_limits)
    if not requests and not limits:
        return None
    return ResourceRequirements(requests=requests or None, limits=limits or None)


def _tolerations(items: Sequence[base.Toleration]) -> list[Toleration] | None:
    if not items:
        return None
    return [
        Toleration(
            key=t.key,
            operator=t.operator,
            value=t.value,
            effect=t.effect,
            tolerationSeconds=t.toleration_seconds,
        )
        for t in items
    ]


class RenderError(ValueError):
    """The spec cannot be turned into valid objects; ``field`` is the spec path."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


def _affinity(component: str, workload: Workload) -> Affinity | None:
    if not workload.affinity:
        return None
    where = f"spec.{component}.affinity"
    try:
        parsed = cast(Affinity, Affinity.from_dict(workload.affinity))
    except (TypeError, ValueError) as exc:  # msgspec.ValidationError is a ValueError
        raise RenderError(where, str(exc)) from None
    kept = parsed.to_dict()
    for key in workload.affinity:
        if key not in kept:
            raise RenderError(
                where, f"unknown field {key!r} (podAffinity, podAntiAffinity or nodeAffinity)"
            )
    return parsed


def _deployment(
    owner: Owner,
    spec: VoiceDeploymentSpec,
    pod: _Pod,
    settings: OperatorSettings,
    labels: dict[str, str],
    config_hash: str,
) -> Deployment:
    component = pod.component
    name = naming.child_name(owner.name, component)
    workload = pod.workload
    http = HTTP_PORT[component]
    ports = [
        ContainerPort(name="http", containerPort=http, protocol="TCP"),
        ContainerPort(name="grpc", containerPort=GRPC_PORT[component], protocol="TCP"),
        *pod.ports,
    ]
    env = [
        EnvVar(name="VOICETYPED_CONFIG_FILE", value=f"{CONFIG_DIR}/config.yaml"),
        # Libraries that cache in $HOME write to the (writable) /tmp volume.
        EnvVar(name="HOME", value="/tmp"),
        *pod.env,
    ]
    volumes = [
        Volume(name="config", configMap=ConfigMapVolumeSource(name=name, defaultMode=0o444)),
        Volume(name="tmp", emptyDir=EmptyDirVolumeSource(sizeLimit="256Mi")),
        Volume(name="data", emptyDir=EmptyDirVolumeSource(sizeLimit="1Gi")),
        *pod.volumes,
    ]
    mounts = [
        VolumeMount(name="config", mountPath=f"{CONFIG_DIR}/config.yaml", subPath="config.yaml"),
        VolumeMount(name="tmp", mountPath="/tmp"),
        VolumeMount(name="data", mountPath=DATA_DIR),
        *pod.mounts,
    ]
    container = Container(
        name=component,
        image=image(settings, component, workload),
        imagePullPolicy=workload.image_pull_policy,
        ports=ports,
        env=env,
        workingDir=DATA_DIR,
        volumeMounts=mounts,
        resources=_resources(workload, pod.extra_limits),
        startupProbe=Probe(
            httpGet=HTTPGetAction(path="/healthz", port="http"),
            periodSeconds=2,
            failureThreshold=pod.startup_failures,
        ),
        livenessProbe=Probe(
            httpGet=HTTPGetAction(path="/healthz", port="http"),
            periodSeconds=10,
            timeoutSeconds=2,
            failureThreshold=3,
        ),
        readinessProbe=Probe(
            httpGet=HTTPGetAction(path="/readyz", port="http"),
            periodSeconds=2,
            timeoutSeconds=2,
            failureThreshold=2,
        ),
        lifecycle=(
            Lifecycle(preStop=LifecycleHandler(sleep=SleepAction(seconds=PRE_STOP_SECONDS)))
            if pod.pre_stop
            else None
        ),
        securityContext=SecurityContext(
            allowPrivilegeEscalation=False,
            readOnlyRootFilesystem=True,
            runAsNonRoot=True,
            capabilities=Capabilities(drop=["ALL"]),
        ),
    )
    node_selector = {**workload.node_selector, **pod.node_selector}
    affinity = _affinity(component, workload)
    template_annotations = {
        naming.CONFIG_HASH: config_hash,
        # The de-facto scrape convention (Prometheus' kubernetes_sd examples, the Datadog and
        # OpenTelemetry collectors' Prometheus receivers); a PodMonitor would need the
        # Prometheus Operator's CRDs, which a cluster may not have.
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(http),
        "prometheus.io/path": "/metrics",
        **pod.annotations,
    }
    pod_spec = PodSpec(
        containers=[container],
        serviceAccountName=name,
        automountServiceAccountToken=False,
        enableServiceLinks=False,
        terminationGracePeriodSeconds=pod.grace_seconds,
        hostNetwork=pod.host_network or None,
        dnsPolicy="ClusterFirstWithHostNet" if pod.host_network else None,
        nodeSelector=node_selector or None,
        tolerations=_tolerations([*workload.tolerations, *pod.tolerations]),
        affinity=affinity,
        imagePullSecrets=[LocalObjectReference(name=s) for s in spec.image_pull_secrets] or None,
        securityContext=PodSecurityContext(
            runAsNonRoot=True,
            runAsUser=UID,
            runAsGroup=UID,
            fsGroup=UID,
            seccompProfile=SeccompProfile(type="RuntimeDefault"),
            sysctls=pod.sysctls or None,
        ),
        volumes=volumes,
    )
    return Deployment(
        metadata=_meta(owner, name, labels, pod.deployment_annotations),
        spec=DeploymentSpec(
            replicas=None if _autoscaled(spec, component) else workload.replicas,
            selector=LabelSelector(matchLabels=naming.selector_labels(owner.name, component)),
            # Never below the wanted capacity during a rollout: new pods first.
            strategy=DeploymentStrategy(
                type="RollingUpdate",
                rollingUpdate=RollingUpdateDeployment(maxSurge="25%", maxUnavailable=0),
            ),
            revisionHistoryLimit=5,
            template=PodTemplateSpec(
                metadata=ObjectMeta(labels=labels, annotations=template_annotations),
                spec=pod_spec,
            ),
        ),
    )


def _service(owner: Owner, spec: VoiceDeploymentSpec, pod: _Pod, labels: dict[str, str]) -> Service:
    component = pod.component
    name = naming.child_name(owner.name, component)
    selector = naming.selector_labels(owner.name, component)
    if component == "media":
        media = spec.media
        ports = [
            ServicePort(
                name=f"sip-{t}", port=media.sip.port, targetPort=f"sip-{t}", protocol=t.upper()
            )
            for t in media.sip.transports
        ]
        external = media.service_type != "ClusterIP"
        return Service(
            metadata=_meta(owner, name, labels),
            spec=ServiceSpec(
                type=media.service_type,
                selector=selector,
                ports=ports,
                # In-dialog requests (ACK, BYE, re-INVITE) must reach the pod holding the call.
                sessionAffinity="ClientIP",
                sessionAffinityConfig=SessionAffinityConfig(
                    clientIP=ClientIPConfig(timeoutSeconds=10800)
                ),
                # Keep the caller's address: allowedSourceCIDRs and digest realms see it.
                externalTrafficPolicy="Local" if external else None,
            ),
        )
    return Service(
        metadata=_meta(owner, name, labels),
        spec=ServiceSpec(
            type="ClusterIP",
            selector=selector,
            ports=[
                ServicePort(
                    name="grpc",
                    port=GRPC_PORT[component],
                    targetPort="grpc",
                    protocol="TCP",
                    appProtocol="kubernetes.io/h2c",
                ),
                ServicePort(name="http", port=HTTP_PORT[component], targetPort="http"),
            ],
        ),
    )


def _hpa(
    owner: Owner, spec: VoiceDeploymentSpec, component: str, labels: dict[str, str]
) -> HorizontalPodAutoscaler | None:
    name = naming.child_name(owner.name, component)
    target = CrossVersionObjectReference(apiVersion="apps/v1", kind="Deployment", name=name)
    behavior: HorizontalPodAutoscalerBehavior | None = None
    metrics: list[MetricSpec] = []
    if component == "media":
        media = spec.media.autoscaling
        if media is None:
            return None
        low, high = media.min_replicas, media.max_replicas
        metrics.append(
            MetricSpec(
                type="Pods",
                pods=PodsMetricSource(
                    metric=MetricIdentifier(name=media.metric_name),
                    target=MetricTarget(
                        type="AverageValue", averageValue=str(media.target_active_calls)
                    ),
                ),
            )
        )
        # One pod at a time, slowly: each stopping pod drains its calls first.
        behavior = HorizontalPodAutoscalerBehavior(
            scaleDown=HPAScalingRules(
                stabilizationWindowSeconds=media.scale_down_stabilization_seconds,
                policies=[HPAScalingPolicy(type="Pods", value=1, periodSeconds=60)],
                selectPolicy="Min",
            )
        )
    elif component == "speech":
        speech = spec.speech.autoscaling
        if speech is None:
            return None
        low, high = speech.min_replicas, speech.max_replicas
        if speech.target_gpu_utilization is not None:
            identifier = MetricIdentifier(name=speech.gpu_metric.name)
            value = MetricTarget(
                type="AverageValue", averageValue=str(speech.target_gpu_utilization)
            )
            if speech.gpu_metric.type == "Pods":
                metrics.append(
                    MetricSpec(type="Pods", pods=PodsMetricSource(metric=identifier, target=value))
                )
            else:
                identifier = MetricIdentifier(
                    name=speech.gpu_metric.name,
                    selector=LabelSelector(
                        matchLabels=naming.selector_labels(owner.name, component)
                    ),
                )
                metrics.append(
                    MetricSpec(
                        type="External",
                        external=ExternalMetricSource(metric=identifier, target=value),
                    )
                )
        if speech.target_cpu_utilization is not None:
            metrics.append(_cpu(speech.target_cpu_utilization))
    else:
        auto = spec.runtime.autoscaling if component == "runtime" else spec.integration.autoscaling
        if auto is None:
            return None
        low, high = auto.min_replicas, auto.max_replicas
        metrics.append(_cpu(auto.target_cpu_utilization))
    return HorizontalPodAutoscaler(
        metadata=_meta(owner, name, labels),
        spec=HorizontalPodAutoscalerSpec(
            scaleTargetRef=target,
            minReplicas=low,
            maxReplicas=high,
            metrics=metrics,
            behavior=behavior,
        ),
    )


def _cpu(utilization: int) -> MetricSpec:
    return MetricSpec(
        type="Resource",
        resource=ResourceMetricSource(
            name="cpu", target=MetricTarget(type="Utilization", averageUtilization=utilization)
        ),
    )


# ---- managed Redis -------------------------------------------------------------------------


def _redis(owner: Owner, spec: VoiceDeploymentSpec) -> list[Child]:
    managed = spec.runtime.store.managed_redis
    name = naming.child_name(owner.name, REDIS)
    labels = naming.labels(owner.name, REDIS, managed.image.rsplit(":", 1)[-1])
    selector = naming.selector_labels(owner.name, REDIS)
    requests = {k: str(v) for k, v in managed.resources.requests.items()}
    limits = {k: str(v) for k, v in managed.resources.limits.items()}
    container = Container(
        name="redis",
        image=managed.image,
        # Sessions are short-lived: no persistence; NetworkPolicy limits who connects.
        args=["--save", "", "--appendonly", "no", "--protected-mode", "no"],
        ports=[ContainerPort(name="redis", containerPort=REDIS_PORT, protocol="TCP")],
        volumeMounts=[VolumeMount(name="data", mountPath="/data")],
        resources=ResourceRequirements(requests=requests or None, limits=limits or None)
        if requests or limits
        else None,
        readinessProbe=Probe(tcpSocket=TCPSocketAction(port="redis"), periodSeconds=5),
        securityContext=SecurityContext(
            allowPrivilegeEscalation=False,
            readOnlyRootFilesystem=True,
            runAsNonRoot=True,
            runAsUser=999,
            runAsGroup=999,
            capabilities=Capabilities(drop=["ALL"]),
        ),
    )
    deployment = Deployment(
        metadata=_meta(owner, name, labels),
        spec=DeploymentSpec(
            replicas=1,
            selector=LabelSelector(matchLabels=selector),
            strategy=DeploymentStrategy(type="Recreate"),
            revisionHistoryLimit=3,
            template=PodTemplateSpec(
                metadata=ObjectMeta(labels=labels),
                spec=PodSpec(
                    containers=[container],
                    serviceAccountName=name,
                    automountServiceAccountToken=False,
                    enableServiceLinks=False,
                    securityContext=PodSecurityContext(
                        runAsNonRoot=True,
                        fsGroup=999,
                        seccompProfile=SeccompProfile(type="RuntimeDefault"),
                    ),
                    volumes=[Volume(name="data", emptyDir=EmptyDirVolumeSource(sizeLimit="1Gi"))],
                ),
            ),
        ),
    )
    service = Service(
        metadata=_meta(owner, name, labels),
        spec=ServiceSpec(
            type="ClusterIP",
            selector=selector,
            ports=[ServicePort(name="redis", port=REDIS_PORT, targetPort="redis")],
        ),
    )
    account = ServiceAccount(
        metadata=_meta(owner, name, labels), automountServiceAccountToken=False
    )
    return [account, deployment, service]


# ---- NetworkPolicies ------------------------------------------------------------------------


def _from_components(owner: Owner, *components: str) -> list[NetworkPolicyPeer]:
    return [
        NetworkPolicyPeer(
            podSelector=LabelSelector(matchLabels=naming.selector_labels(owner.name, c))
        )
        for c in components
    ]


def _metrics_rule(spec: VoiceDeploymentSpec, port: int) -> list[NetworkPolicyIngressRule]:
    selector = spec.network_policy.metrics_namespace_selector
    if selector is None:
        return []
    return [
        NetworkPolicyIngressRule(
            from_=[NetworkPolicyPeer(namespaceSelector=LabelSelector(matchLabels=selector))],
            ports=[NetworkPolicyPort(port=port, protocol="TCP")],
        )
    ]


def _policy(owner: Owner, component: str, rules: list[NetworkPolicyIngressRule]) -> NetworkPolicy:
    name = naming.child_name(owner.name, component)
    return NetworkPolicy(
        metadata=_meta(owner, name, naming.labels(owner.name, component)),
        spec=NpSpec(
            podSelector=LabelSelector(matchLabels=naming.selector_labels(owner.name, component)),
            policyTypes=["Ingress"],
            ingress=rules,
        ),
    )


def _network_policies(owner: Owner, spec: VoiceDeploymentSpec) -> list[Child]:
    media = spec.media
    callers = [
        NetworkPolicyPeer(ipBlock=IPBlock(cidr=c)) for c in media.allowed_source_cidrs
    ] or None
    signalling = [
        NetworkPolicyPort(port=media.sip.port, protocol=t.upper()) for t in media.sip.transports
    ]
    rtp = NetworkPolicyPort(port=media.rtp.port_min, endPort=media.rtp.port_max, protocol="UDP")
    policies: list[Child] = [
        _policy(
            owner,
            "media",
            [
                NetworkPolicyIngressRule(from_=callers, ports=[*signalling, rtp]),
                *_metrics_rule(spec, HTTP_PORT["media"]),
            ],
        )
    ]
    # A host-network media gateway connects from the node's address, not a pod's.
    media_peers = (
        [NetworkPolicyPeer(ipBlock=IPBlock(cidr=c)) for c in ("0.0.0.0/0", "::/0")]
        if media.host_network
        else _from_components(owner, "media")
    )
    grpc = {c: [NetworkPolicyPort(port=GRPC_PORT[c], protocol="TCP")] for c in GRPC_PORT}
    policies.append(
        _policy(
            owner,
            "speech",
            [
                NetworkPolicyIngressRule(
                    from_=[*media_peers, *_from_components(owner, "runtime")], ports=grpc["speech"]
                ),
                *_metrics_rule(spec, HTTP_PORT["speech"]),
            ],
        )
    )
    policies.append(
        _policy(
            owner,
            "runtime",
            [
                NetworkPolicyIngressRule(from_=media_peers, ports=grpc["runtime"]),
                *_metrics_rule(spec, HTTP_PORT["runtime"]),
            ],
        )
    )
    policies.append(
        _policy(
            owner,
            "integration",
            [
                NetworkPolicyIngressRule(
                    from_=_from_components(owner, "runtime"), ports=grpc["integration"]
                ),
                *_metrics_rule(spec, HTTP_PORT["integration"]),
            ],
        )
    )
    if spec.runtime.store.type == "managedRedis":
        policies.append(
            _policy(
                owner,
                REDIS,
                [
                    NetworkPolicyIngressRule(
                        from_=_from_components(owner, "runtime", "integration"),
                        ports=[NetworkPolicyPort(port=REDIS_PORT, protocol="TCP")],
                    )
                ],
            )
        )
    return policies
