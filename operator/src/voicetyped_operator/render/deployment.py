"""A service's Deployment from its pod plan: security context, probes, graceful stop, rollout
hashes.
"""

from __future__ import annotations

from lightkube.models.apps_v1 import DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment
from lightkube.models.core_v1 import (
    Capabilities,
    ConfigMapVolumeSource,
    Container,
    ContainerPort,
    EmptyDirVolumeSource,
    EnvVar,
    HTTPGetAction,
    Lifecycle,
    LifecycleHandler,
    LocalObjectReference,
    PodSecurityContext,
    PodSpec,
    PodTemplateSpec,
    Probe,
    SeccompProfile,
    SecurityContext,
    SleepAction,
    Volume,
    VolumeMount,
)
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from voicetyped_specs.resources.voicedeployment import (
    VoiceDeploymentSpec,
)

from voicetyped_operator import naming
from voicetyped_operator.render.common import (
    CONFIG_DIR,
    DATA_DIR,
    GRPC_PORT,
    HTTP_PORT,
    PRE_STOP_SECONDS,
    UID,
    Owner,
    PodPlan,
    image,
    is_autoscaled,
    object_meta,
    pod_affinity,
    pod_tolerations,
    resource_requirements,
)
from voicetyped_operator.settings import OperatorSettings


def deployment_for(
    owner: Owner,
    spec: VoiceDeploymentSpec,
    pod: PodPlan,
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
        resources=resource_requirements(workload, pod.extra_limits),
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
    affinity = pod_affinity(component, workload)
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
        tolerations=pod_tolerations([*workload.tolerations, *pod.tolerations]),
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
        metadata=object_meta(owner, name, labels, pod.deployment_annotations),
        spec=DeploymentSpec(
            replicas=None if is_autoscaled(spec, component) else workload.replicas,
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
