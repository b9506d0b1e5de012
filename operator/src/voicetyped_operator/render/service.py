"""A service's Service: the ports it exposes, and the media gateway's SIP exposure."""

from __future__ import annotations

from lightkube.models.core_v1 import (
    ClientIPConfig,
    ServicePort,
    ServiceSpec,
    SessionAffinityConfig,
)
from lightkube.resources.core_v1 import Service
from voicetyped_specs.resources.voicedeployment import (
    VoiceDeploymentSpec,
)

from voicetyped_operator import naming
from voicetyped_operator.render.common import GRPC_PORT, HTTP_PORT, Owner, PodPlan, object_meta

SPEECH_PODS = "speech-pods"


def speech_target(vd: str) -> str:
    """The media gateway's gRPC target for the speech replicas: every ready one by DNS."""
    return f"dns:///{naming.child_name(vd, SPEECH_PODS)}:{GRPC_PORT['speech']}"


def speech_pods_service(owner: Owner, labels: dict[str, str]) -> Service:
    """A headless Service naming every ready speech pod. Through the ClusterIP Service a media
    pod's one gRPC connection would reach a single speech pod, so every call of that media
    pod would go there and replicas added by the autoscaler would get none. By this name the
    media gateway resolves all of them and spreads new calls round-robin, tries the next one
    when a replica refuses at capacity, and finds new replicas when the speech gateway moves
    it to a new connection (``grpc_max_connection_age_s``)."""
    return Service(
        metadata=object_meta(owner, naming.child_name(owner.name, SPEECH_PODS), labels),
        spec=ServiceSpec(
            clusterIP="None",
            selector=naming.selector_labels(owner.name, "speech"),
            ports=[
                ServicePort(
                    name="grpc",
                    port=GRPC_PORT["speech"],
                    targetPort="grpc",
                    protocol="TCP",
                    appProtocol="kubernetes.io/h2c",
                )
            ],
        ),
    )


def service_for(
    owner: Owner, spec: VoiceDeploymentSpec, pod: PodPlan, labels: dict[str, str]
) -> Service:
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
        if media.tls is not None:
            ports.append(
                ServicePort(
                    name="sip-tls", port=media.tls.port, targetPort="sip-tls", protocol="TCP"
                )
            )
        external = media.service_type != "ClusterIP"
        return Service(
            metadata=object_meta(owner, name, labels),
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
        metadata=object_meta(owner, name, labels),
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
