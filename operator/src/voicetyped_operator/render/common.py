"""What every builder shares: the children's kinds, ports and paths, the inputs (owner, served
documents), and the pod-level helpers (metadata, resources, tolerations, affinity).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from lightkube.models.core_v1 import (
    Affinity,
    ContainerPort,
    EnvVar,
    EnvVarSource,
    KeyToPath,
    ObjectFieldSelector,
    ResourceRequirements,
    SecretVolumeSource,
    Sysctl,
    Toleration,
    Volume,
    VolumeMount,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import ConfigMap, Service, ServiceAccount
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.resources.policy_v1 import PodDisruptionBudget
from voicetyped_specs.resources import base
from voicetyped_specs.resources.voicedeployment import (
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


SECRETS_DIR = "/var/run/secrets/voicetyped"


DIGEST_DIR = f"{SECRETS_DIR}/digest"


REDIS_PASSWORD_DIR = f"{SECRETS_DIR}/redis"


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
    language: str = "en"
    """Its settings.language: the language its callers speak."""


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
    tls_hash: str = ""
    """Of media.tls's certificate and key as checked (empty: no tls); rolls the media pods."""

    def dialogs_hash(self) -> str:
        return naming.digest([(d.name, d.content_hash) for d in self.dialogs])

    def integrations_hash(self) -> str:
        return naming.digest(
            [(i.name, i.content_hash, [m.to_json() for m in i.mounts]) for i in self.integrations]
        )


@dataclass
class PodPlan:
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


def secret_files(pod: PodPlan, volume: str, secret: str, items: list[KeyToPath], path: str) -> None:
    """Keys of a Secret as read-only files in ``path`` (never environment variables)."""
    pod.volumes.append(
        Volume(
            name=volume,
            secret=SecretVolumeSource(secretName=secret, items=items, defaultMode=0o440),
        )
    )
    pod.mounts.append(VolumeMount(name=volume, mountPath=path, readOnly=True))


def image(settings: OperatorSettings, component: str, workload: Workload) -> str:
    return workload.image or f"{settings.image_registry}/{component}:{settings.image_tag}"


def object_meta(
    owner: Owner, name: str, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> ObjectMeta:
    return ObjectMeta(
        name=name,
        namespace=owner.namespace,
        labels=labels,
        annotations=annotations or None,
        ownerReferences=[naming.owner_reference("VoiceDeployment", owner.name, owner.uid)],
    )


def field_env(name: str, path: str) -> EnvVar:
    return EnvVar(name=name, valueFrom=EnvVarSource(fieldRef=ObjectFieldSelector(fieldPath=path)))


def is_autoscaled(spec: VoiceDeploymentSpec, component: str) -> bool:
    workload: Any = getattr(spec, component)
    return getattr(workload, "autoscaling", None) is not None


def resource_requirements(
    workload: Workload, extra_limits: dict[str, str]
) -> ResourceRequirements | None:
    requests = {k: str(v) for k, v in workload.resources.requests.items()}
    limits = {k: str(v) for k, v in workload.resources.limits.items()}
    limits.update(extra_limits)
    if not requests and not limits:
        return None
    return ResourceRequirements(requests=requests or None, limits=limits or None)


def pod_tolerations(items: Sequence[base.Toleration]) -> list[Toleration] | None:
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


def pod_affinity(component: str, workload: Workload) -> Affinity | None:
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
