"""VoiceDeployment -> every child object: the per-service objects and the shared ones."""

from __future__ import annotations

import yaml
from lightkube.models.meta_v1 import LabelSelector
from lightkube.models.policy_v1 import PodDisruptionBudgetSpec
from lightkube.resources.core_v1 import ConfigMap, Service, ServiceAccount
from lightkube.resources.policy_v1 import PodDisruptionBudget
from voicetyped_specs.resources.voicedeployment import (
    SERVICES,
    VoiceDeploymentSpec,
)

from voicetyped_operator import naming
from voicetyped_operator.render.common import (
    CHILD_KINDS,
    REDIS,
    Child,
    ChildKind,
    Dependencies,
    Owner,
    PodPlan,
    image,
    object_meta,
)
from voicetyped_operator.render.console import WEBRTC, webrtc_service
from voicetyped_operator.render.deployment import deployment_for
from voicetyped_operator.render.hpa import hpa_for
from voicetyped_operator.render.network_policy import network_policies_for
from voicetyped_operator.render.redis import redis_children
from voicetyped_operator.render.service import SPEECH_PODS, service_for, speech_pods_service
from voicetyped_operator.render.services import integration_pod, media_pod, runtime_pod, speech_pod
from voicetyped_operator.settings import OperatorSettings


def render(
    owner: Owner,
    spec: VoiceDeploymentSpec,
    deps: Dependencies,
    settings: OperatorSettings,
) -> list[Child]:
    """Every child object, in apply order (ServiceAccounts and ConfigMaps first)."""
    pods = [media_pod(owner, spec, deps), speech_pod(spec, deps), runtime_pod(owner, spec, deps)]
    pods.append(integration_pod(owner, spec, deps))
    children: list[Child] = []
    for pod in pods:
        children.extend(_service_children(owner, spec, pod, settings))
    if spec.runtime.store.type == "managedRedis":
        children.extend(redis_children(owner, spec))
    if spec.network_policy.enabled:
        children.extend(network_policies_for(owner, spec))
    order = {kind: i for i, kind in enumerate(CHILD_KINDS)}
    return sorted(children, key=lambda c: order[type(c)])


def possible_children(owner: Owner) -> list[tuple[ChildKind, str]]:
    """Every object the operator could create for this VoiceDeployment (for pruning)."""
    out: list[tuple[ChildKind, str]] = []
    for component in (*SERVICES, REDIS):
        name = naming.child_name(owner.name, component)
        out.extend((kind, name) for kind in CHILD_KINDS)
    out.append((Service, naming.child_name(owner.name, WEBRTC)))
    out.append((Service, naming.child_name(owner.name, SPEECH_PODS)))
    return out


def _service_children(
    owner: Owner, spec: VoiceDeploymentSpec, pod: PodPlan, settings: OperatorSettings
) -> list[Child]:
    component = pod.component
    name = naming.child_name(owner.name, component)
    tag = image(settings, component, pod.workload).rsplit(":", 1)[-1]
    labels = naming.labels(owner.name, component, tag)
    config_text = yaml.safe_dump(pod.config, sort_keys=True)
    config_map = ConfigMap(
        metadata=object_meta(owner, name, labels), data={"config.yaml": config_text}
    )
    account = ServiceAccount(
        metadata=object_meta(owner, name, labels), automountServiceAccountToken=False
    )
    deployment = deployment_for(owner, spec, pod, settings, labels, naming.digest(config_text))
    children: list[Child] = [account, config_map, deployment, service_for(owner, spec, pod, labels)]
    if component == "media" and spec.webrtc.enabled:
        children.append(webrtc_service(owner, spec, labels))
    if component == "speech":
        children.append(speech_pods_service(owner, labels))
    children.append(
        PodDisruptionBudget(
            metadata=object_meta(owner, name, labels),
            spec=PodDisruptionBudgetSpec(
                maxUnavailable=1,
                selector=LabelSelector(matchLabels=naming.selector_labels(owner.name, component)),
                unhealthyPodEvictionPolicy="AlwaysAllow",
            ),
        )
    )
    hpa = hpa_for(owner, spec, component, labels)
    if hpa is not None:
        children.append(hpa)
    return children
