"""NetworkPolicies: each service accepts only the peers that call it (and metrics scrapers)."""

from __future__ import annotations

from lightkube.models.meta_v1 import LabelSelector
from lightkube.models.networking_v1 import (
    IPBlock,
    NetworkPolicyIngressRule,
    NetworkPolicyPeer,
    NetworkPolicyPort,
)
from lightkube.models.networking_v1 import NetworkPolicySpec as NpSpec
from lightkube.resources.networking_v1 import NetworkPolicy
from voicetyped_specs.resources.voicedeployment import (
    VoiceDeploymentSpec,
)

from voicetyped_operator import naming
from voicetyped_operator.render.common import (
    GRPC_PORT,
    HTTP_PORT,
    REDIS,
    REDIS_PORT,
    Child,
    Owner,
    object_meta,
)
from voicetyped_operator.render.console import console_rules, webrtc_rules


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


OPERATOR_POD_LABELS = {
    "app.kubernetes.io/component": "operator",
    "app.kubernetes.io/part-of": "voicetyped",
}
"""The operator's pod labels (the chart's): it reads GET /v1/trunks on the media pods."""


def _trunk_status_rule(spec: VoiceDeploymentSpec) -> list[NetworkPolicyIngressRule]:
    if not spec.media.trunks:
        return []
    return [
        NetworkPolicyIngressRule(
            from_=[
                NetworkPolicyPeer(
                    namespaceSelector=LabelSelector(),
                    podSelector=LabelSelector(matchLabels=OPERATOR_POD_LABELS),
                )
            ],
            ports=[NetworkPolicyPort(port=HTTP_PORT["media"], protocol="TCP")],
        )
    ]


def _policy(owner: Owner, component: str, rules: list[NetworkPolicyIngressRule]) -> NetworkPolicy:
    name = naming.child_name(owner.name, component)
    return NetworkPolicy(
        metadata=object_meta(owner, name, naming.labels(owner.name, component)),
        spec=NpSpec(
            podSelector=LabelSelector(matchLabels=naming.selector_labels(owner.name, component)),
            policyTypes=["Ingress"],
            ingress=rules,
        ),
    )


def network_policies_for(owner: Owner, spec: VoiceDeploymentSpec) -> list[Child]:
    media = spec.media
    callers = [
        NetworkPolicyPeer(ipBlock=IPBlock(cidr=c)) for c in media.allowed_source_cidrs
    ] or None
    signalling = [
        NetworkPolicyPort(port=media.sip.port, protocol=t.upper()) for t in media.sip.transports
    ]
    if media.tls is not None:
        signalling.append(NetworkPolicyPort(port=media.tls.port, protocol="TCP"))
    rtp = NetworkPolicyPort(port=media.rtp.port_min, endPort=media.rtp.port_max, protocol="UDP")
    policies: list[Child] = [
        _policy(
            owner,
            "media",
            [
                NetworkPolicyIngressRule(from_=callers, ports=[*signalling, rtp]),
                *_metrics_rule(spec, HTTP_PORT["media"]),
                *_trunk_status_rule(spec),
                *webrtc_rules(spec),
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
                *console_rules(spec),
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
