"""The operator-managed Redis: Deployment, Service, ServiceAccount and its password."""

from __future__ import annotations

from lightkube.models.apps_v1 import DeploymentSpec, DeploymentStrategy
from lightkube.models.core_v1 import (
    Capabilities,
    Container,
    ContainerPort,
    EmptyDirVolumeSource,
    PodSecurityContext,
    PodSpec,
    PodTemplateSpec,
    Probe,
    ResourceRequirements,
    SeccompProfile,
    SecurityContext,
    ServicePort,
    ServiceSpec,
    TCPSocketAction,
    Volume,
    VolumeMount,
)
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Service, ServiceAccount
from voicetyped_specs.resources.voicedeployment import (
    VoiceDeploymentSpec,
)

from voicetyped_operator import naming
from voicetyped_operator.render.common import (
    REDIS,
    REDIS_PORT,
    Child,
    Owner,
    object_meta,
    pod_tolerations,
)


def redis_children(owner: Owner, spec: VoiceDeploymentSpec) -> list[Child]:
    """The managed Redis. It is placed like the runtime pods it serves: the runtime's
    nodeSelector and tolerations (not its affinity, whose pod (anti-)affinity terms are about
    the runtime's own pods)."""
    managed = spec.runtime.store.managed_redis
    runtime = spec.runtime
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
        metadata=object_meta(owner, name, labels),
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
                    nodeSelector=dict(runtime.node_selector) or None,
                    tolerations=pod_tolerations(runtime.tolerations),
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
        metadata=object_meta(owner, name, labels),
        spec=ServiceSpec(
            type="ClusterIP",
            selector=selector,
            ports=[ServicePort(name="redis", port=REDIS_PORT, targetPort="redis")],
        ),
    )
    account = ServiceAccount(
        metadata=object_meta(owner, name, labels), automountServiceAccountToken=False
    )
    return [account, deployment, service]
