"""VoiceDeployment: one voicetyped pipeline (media, speech, runtime, integration gateways).

Cross-field rules are CEL (``x-kubernetes-validations``) so the API server refuses a bad
object at ``kubectl apply`` time with a message naming the field; the operator validates
the same model again and reports what only it can see (missing Dialogs, Secrets).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from voicetyped_specs.resources.base import (
    DNS_SUBDOMAIN,
    NodeSelector,
    ObjectName,
    ResourceRequirements,
    SecretKeyRef,
    Spec,
    Toleration,
    cel,
    validations,
)

SERVICES = ("media", "speech", "runtime", "integration")
Codec = Literal["opus", "G722", "PCMU", "PCMA"]
ImagePullPolicy = Literal["Always", "IfNotPresent", "Never"]
NAME_MAX = 40
Transport = Literal["udp", "tcp"]
SrtpPolicy = Literal["required", "optional", "off"]
TRUNK_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
# RFC 3261 user part (the unescaped subset the media gateway accepts).
SIP_USER = r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+$"
# sip:host[:port][;params], no user part: what the media gateway's registrar parser accepts.
REGISTRAR_URI = (
    r"^sip:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?)(:[0-9]{1,5})?(;[^\s]*)?$"
)


def _transports() -> list[Transport]:
    return ["udp", "tcp"]


def _codecs() -> list[Codec]:
    return [
        "opus",
        "G722",
        "PCMU",
        "PCMA",
    ]  # children are "<name>-integration", a DNS label of at most 63


def _range_rule() -> dict[str, str]:
    return cel(
        "self.minReplicas <= self.maxReplicas",
        "minReplicas must not exceed maxReplicas",
        ".minReplicas",
    )


class _ReplicaRange(Spec):
    """The replica range of a HorizontalPodAutoscaler (the autoscaling specs below)."""

    model_config = ConfigDict(json_schema_extra=validations(_range_rule()))

    min_replicas: int = Field(1, ge=1, le=1000, description="Fewest replicas.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas.")

    @model_validator(mode="after")
    def _range(self) -> _ReplicaRange:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        return self


class Autoscaling(_ReplicaRange):
    """A HorizontalPodAutoscaler (autoscaling/v2) on CPU utilization."""

    target_cpu_utilization: int = Field(
        70,
        alias="targetCPUUtilization",
        ge=1,
        le=100,
        description="Average CPU utilization (% of requests) to aim for.",
    )


class MediaAutoscaling(_ReplicaRange):
    """Scale the media gateway on active calls per pod (a Pods metric served by a metrics
    adapter from ``voicetyped_media_active_calls``): CPU is the wrong signal for call load.
    Scale-down is slow and one pod at a time; each pod drains its calls before it stops."""

    target_active_calls: int = Field(
        50, ge=1, le=10000, description="Average active calls per pod to aim for."
    )
    metric_name: str = Field(
        "voicetyped_media_active_calls",
        max_length=253,
        description="Pods metric with the active calls of each pod.",
    )
    scale_down_stabilization_seconds: int = Field(
        300, ge=0, le=3600, description="Wait this long at lower load before removing pods."
    )


class GpuMetric(Spec):
    """Where the GPU utilization comes from (e.g. NVIDIA DCGM exporter via a metrics adapter)."""

    type: Literal["Pods", "External"] = Field(
        "Pods", description="Pods: per-pod metric averaged over pods; External: one value."
    )
    name: str = Field("DCGM_FI_DEV_GPU_UTIL", max_length=253, description="Metric name.")


_SPEECH_TARGETS = "set targetGPUUtilization and/or targetCPUUtilization, or targetLoad"


class SpeechAutoscaling(_ReplicaRange):
    """Scale the speech gateway on its recognition load (``targetLoad``: a Pods metric served
    by a metrics adapter from ``voicetyped_speech_load``, docs/autoscaling.md), GPU utilization
    (GPU pools) and/or CPU utilization; with several, the HPA takes the most replicas any asks
    for."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            _range_rule(),
            cel(
                "has(self.targetCPUUtilization) || has(self.targetGPUUtilization) "
                "|| has(self.targetLoad)",
                _SPEECH_TARGETS,
            ),
        )
    )

    target_cpu_utilization: int | None = Field(
        None,
        alias="targetCPUUtilization",
        ge=1,
        le=100,
        description="Average CPU utilization (% of requests).",
    )
    target_gpu_utilization: int | None = Field(
        None, alias="targetGPUUtilization", ge=1, le=100, description="Average GPU utilization (%)."
    )
    gpu_metric: GpuMetric = Field(default_factory=GpuMetric, alias="gpuMetric")
    target_load: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Average recognition load per pod to aim for: finals' decode seconds per "
        "worker-second (voicetyped_speech_load). Keep it under capacity.loadThreshold (0.8), "
        "where a pod starts refusing new calls: 0.5 adds pods well before calls are refused.",
    )
    load_metric: str = Field(
        "voicetyped_speech_load",
        max_length=253,
        description="Pods metric with each pod's recognition load (as the adapter names it).",
    )

    @model_validator(mode="after")
    def _targets(self) -> SpeechAutoscaling:
        if (
            self.target_cpu_utilization is None
            and self.target_gpu_utilization is None
            and self.target_load is None
        ):
            raise ValueError(_SPEECH_TARGETS)
        return self


class Workload(Spec):
    """What every service has: image, replicas, resources and placement."""

    image: str | None = Field(
        None,
        max_length=512,
        description="Container image; default: <operator's registry>/<service>:<version>.",
    )
    image_pull_policy: ImagePullPolicy | None = Field(None, description="Image pull policy.")
    replicas: int = Field(1, ge=0, le=1000, description="Replicas when autoscaling is off.")
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    node_selector: NodeSelector = Field(
        default_factory=dict, description="Node labels the pods must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Taints the pods tolerate."
    )
    affinity: dict[str, Any] = Field(
        default_factory=dict,
        description="Pod affinity/anti-affinity as in a Pod spec (checked by the API server "
        "when the operator applies the Deployment).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Logs.")


class SipSpec(Spec):
    port: int = Field(5060, ge=1, le=65535, description="SIP port.")
    transports: list[Transport] = Field(
        default_factory=_transports,
        min_length=1,
        json_schema_extra={"uniqueItems": True},
        description="SIP transports to listen on (and expose on the Service).",
    )


class RtpSpec(Spec):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.portMax - self.portMin >= 2",
                "portMax must be at least portMin + 2",
                ".portMax",
            ),
            cel(
                "self.portMax - self.portMin <= 20000",
                "the RTP range may span at most 20000 ports",
                ".portMax",
            ),
        )
    )

    port_min: int = Field(20000, ge=1024, le=65534, description="First RTP port.")
    port_max: int = Field(20999, ge=1025, le=65535, description="Last RTP port.")

    @model_validator(mode="after")
    def _range(self) -> RtpSpec:
        if self.port_max - self.port_min < 2:
            raise ValueError("portMax must be at least portMin + 2")
        return self


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not a CIDR such as 192.0.2.0/24") from None
    return value


Cidr = Annotated[str, Field(max_length=64), AfterValidator(_cidr)]


class SecretName(Spec):
    """A whole Secret in the same namespace (the keys are fixed by the field using it)."""

    name: ObjectName = Field(description="Name of the Secret (same namespace).")


class MediaTls(Spec):
    """SIP over TLS (RFC 5630) on its own port, beside the plain transports."""

    secret_ref: SecretName = Field(
        description="A kubernetes.io/tls Secret: tls.crt (certificate with its chain) and "
        "tls.key. The operator checks it (dates, key match) before rolling it out."
    )
    client_ca_secret_ref: SecretKeyRef | None = Field(
        None,
        alias="clientCASecretRef",
        description="PEM CA certificate(s): TLS clients (a carrier) must present a certificate "
        "they issued; others are refused in the handshake.",
    )
    min_version: Literal["TLSv1.2", "TLSv1.3"] = Field(
        "TLSv1.2", description="Oldest TLS version accepted."
    )
    port: int = Field(5061, ge=1, le=65535, description="SIP over TLS port (TCP).")


class SipRateLimit(Spec):
    """Per-source scanner and flood defence: a token bucket per source address, bans after
    repeated refusals or digest failures (docs/public-sip.md)."""

    enabled: bool = Field(True, description="Rate limits and bans on (call ceilings stay on).")
    requests_per_second: float = Field(
        20.0, gt=0, le=100000, description="Token bucket refill: requests per second per source."
    )
    burst: int = Field(60, ge=1, le=1000000, description="Token bucket size per source.")
    ban_after: int = Field(
        40, ge=1, le=1000000, description="Requests refused for the rate before a ban."
    )
    failures_before_ban: int = Field(
        10, ge=1, le=1000000, description="Digest authentication failures before a ban."
    )
    ban_seconds: int = Field(600, ge=1, le=604800, description="How long a ban lasts.")
    max_sources: int = Field(
        10000, ge=1, le=10000000, description="Sources tracked at most (memory bound)."
    )


class Trunk(Spec):
    """A carrier trunk the media gateway registers to (REGISTER with digest, refresh before
    expiry, failover to the next registrar, NAT keepalive). The password only from a Secret."""

    name: str = Field(
        max_length=63,
        pattern=TRUNK_NAME,
        description="Names the trunk in status (condition TrunkRegistered-<name>), metrics "
        "and logs.",
    )
    registrars: list[Annotated[str, Field(max_length=256, pattern=REGISTRAR_URI)]] = Field(
        min_length=1,
        max_length=4,
        description="Registrar URIs (sip:host[:port]) in order of preference (failover).",
    )
    username: str = Field(
        min_length=1, max_length=128, pattern=SIP_USER, description="User of the address of record."
    )
    auth_username: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=SIP_USER,
        description="Digest user name when it differs from username.",
    )
    password_secret_ref: SecretKeyRef = Field(
        description="The digest password (mounted as a file, never an environment variable)."
    )
    domain: str | None = Field(
        None,
        max_length=253,
        description="Host of the address of record; default: the first registrar's host.",
    )
    expires_seconds: int = Field(300, ge=10, le=86400, description="Expires asked for.")
    transport: Transport = Field("udp", description="Transport to the registrars.")
    keepalive: Literal["options", "register", "off"] = Field(
        "options",
        description="Keeps the NAT binding open between refreshes: an OPTIONS, or a re-REGISTER, "
        "every keepaliveSeconds.",
    )
    keepalive_seconds: int = Field(25, ge=1, le=3600, description="Keepalive interval.")
    dids: list[Annotated[str, Field(max_length=64, pattern=SIP_USER)]] = Field(
        default_factory=list,
        max_length=256,
        description="Called numbers (Request-URI users) the carrier delivers on this trunk.",
    )
    dialog: ObjectName | None = Field(
        None,
        description="Dialog for this trunk's calls (one of spec.dialogs); default: media.dialog.",
    )
    trust_registrar_source: bool = Field(
        False,
        description="Admit INVITEs from the registrars' addresses without digest and outside "
        "allowedSourceCIDRs (carriers do not answer challenges).",
    )
    max_calls: int | None = Field(
        None,
        ge=1,
        le=100000,
        description="Calls at once from this trunk per media pod (the carrier's channels); "
        "beyond, its INVITEs get 503 with Retry-After. Unset: no ceiling of its own.",
    )


class DigestAuth(Spec):
    """SIP digest authentication: a Secret key holding ``user:password`` lines."""

    secret_ref: SecretKeyRef = Field(description="The users file.")
    realm: str = Field("voicetyped", max_length=253, description="Digest realm.")


class MediaSpec(Workload):
    """The media gateway: SIP signalling and RTP media."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "size(self.allowedSourceCIDRs) > 0 || has(self.digestAuth)",
                "set allowedSourceCIDRs or digestAuth: an open SIP port invites toll fraud",
                ".allowedSourceCIDRs",
            ),
            cel(
                "self.allowedSourceCIDRs.all(c, isCIDR(c))",
                "allowedSourceCIDRs entries must be CIDRs such as 10.0.0.0/8",
                ".allowedSourceCIDRs",
            ),
            cel(
                "!self.hostNetwork || self.serviceType != 'LoadBalancer'",
                "hostNetwork media pods are reached on the node: use serviceType ClusterIP or "
                "NodePort",
                ".serviceType",
            ),
            cel(
                "self.carrierCIDRs.all(c, isCIDR(c))",
                "carrierCIDRs entries must be CIDRs such as 192.0.2.0/24",
                ".carrierCIDRs",
            ),
            cel(
                "self.trunks.all(t, t.transport in self.sip.transports)",
                "a trunk's transport must be one of sip.transports",
                ".trunks",
            ),
            cel(
                "!has(self.tls) || !self.sip.transports.exists(t, t == 'tcp') "
                "|| self.tls.port != self.sip.port",
                "tls.port must differ from sip.port (both are TCP)",
                ".tls.port",
            ),
        )
    )

    autoscaling: MediaAutoscaling | None = Field(
        None, description="Scale on active calls (replaces replicas)."
    )
    sip: SipSpec = Field(default_factory=SipSpec)
    rtp: RtpSpec = Field(default_factory=RtpSpec)
    host_network: bool = Field(
        False,
        description="Run on the node's network (RTP reaches the pod directly; SDP advertises "
        "the node address). One media pod per node for a given port range.",
    )
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        "ClusterIP", description="How the SIP Service is exposed."
    )
    codecs: list[Codec] = Field(
        default_factory=_codecs,
        min_length=1,
        json_schema_extra={"uniqueItems": True},
        description="Codecs offered and accepted.",
    )
    max_calls: int = Field(200, ge=1, le=100000, description="Calls admitted per pod.")
    allowed_source_cidrs: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list,
        alias="allowedSourceCIDRs",
        max_length=64,
        description="Networks allowed to send SIP/RTP (also enforced by the NetworkPolicy).",
    )
    digest_auth: DigestAuth | None = Field(None, description="SIP digest authentication.")
    tls: MediaTls | None = Field(None, description="SIP over TLS (adds the tls transport).")
    srtp: SrtpPolicy = Field(
        "optional",
        description="SRTP (SDES) for calls: required (plain RTP offers get 488), optional, off.",
    )
    dialog_srtp: dict[ObjectName, SrtpPolicy] = Field(
        default_factory=dict,
        alias="dialogSRTP",
        max_length=64,
        description="Dialog name (one of spec.dialogs) -> SRTP policy for its calls.",
    )
    rate_limit: SipRateLimit = Field(default_factory=SipRateLimit)
    carrier_cidrs: list[Cidr] = Field(
        default_factory=list,
        alias="carrierCIDRs",
        max_length=64,
        description="Carrier (and SBC) signalling networks: never rate limited, banned or held "
        "to maxCallsPerSource. Exempt is not allowed: list them in allowedSourceCIDRs too.",
    )
    max_calls_per_source: int = Field(
        20, ge=1, le=100000, description="Calls at once from one (non-carrier) source address."
    )
    max_calls_per_route: int | None = Field(
        None, ge=1, le=100000, description="Calls at once per dialog route; unset: no ceiling."
    )
    trunks: list[Trunk] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Carrier trunks to register to (condition TrunkRegistered-<name> each).",
    )
    dialog: str | None = Field(
        None,
        max_length=253,
        description="Dialog for calls (one of spec.dialogs); default: the first of spec.dialogs.",
    )
    dialog_routes: dict[Annotated[str, Field(max_length=64)], ObjectName] = Field(
        default_factory=dict,
        max_length=256,
        description="Called user part (Request-URI user) -> Dialog name.",
    )
    drain_seconds: int = Field(
        120,
        ge=1,
        le=86400,
        description="On scale-down/rollout: how long active calls may continue before the "
        "pod stops (terminationGracePeriodSeconds follows).",
    )

    @model_validator(mode="after")
    def _exposure(self) -> MediaSpec:
        if not self.allowed_source_cidrs and self.digest_auth is None:
            raise ValueError("set allowedSourceCIDRs or digestAuth")
        names = [t.name for t in self.trunks]
        for i, trunk in enumerate(self.trunks):
            if names.index(trunk.name) != i:
                raise ValueError(f"trunks[{i}].name: {trunk.name!r} is used by another trunk")
            if trunk.transport not in self.sip.transports:
                raise ValueError(
                    f"trunks[{i}].transport: {trunk.transport} is not one of sip.transports"
                )
        tls = self.tls
        if tls is not None and "tcp" in self.sip.transports and tls.port == self.sip.port:
            raise ValueError("tls.port must differ from sip.port (both are TCP)")
        return self

    def transports(self) -> list[str]:
        """The gateway's SIP transports: sip.transports, and tls when tls is set."""
        return [*self.sip.transports, *(["tls"] if self.tls is not None else [])]


class Gpu(Spec):
    """GPU placement of the speech pods."""

    enabled: bool = Field(False, description="Request GPUs and schedule on GPU nodes.")
    count: int = Field(1, ge=1, le=16, description="nvidia.com/gpu per pod.")
    resource_name: str = Field(
        "nvidia.com/gpu", max_length=253, description="Extended resource to request."
    )
    node_selector: NodeSelector = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"},
        description="Node labels of GPU nodes.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=lambda: [
            Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
        ],
        max_length=32,
        description="Taints of GPU nodes to tolerate.",
    )


class SpeechCapacity(Spec):
    """When a speech pod refuses new calls (the media gateway answers them 503, Retry-After)."""

    max_calls: int = Field(
        0, ge=0, le=10000, description="Calls at once per pod (0: no fixed ceiling, load decides)."
    )
    load_threshold: float = Field(
        0.8,
        ge=0,
        le=10,
        description="Refuse new calls while the recognition load (finals' decode seconds per "
        "worker-second over 5 s, voicetyped_speech_load) reaches this (0: never for load). "
        "An autoscaling.targetLoad under it adds pods before calls are refused.",
    )
    queue_threshold: int = Field(
        2,
        ge=0,
        le=1000,
        description="Refuse new calls while at least this many finals waited for a worker "
        "throughout 2 s (0: never for the queue).",
    )


class SpeechSpec(Workload):
    """The speech gateway: VAD, ASR and TTS."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!self.gpu.enabled || self.backend == 'faster-whisper'",
                "gpu.enabled needs backend faster-whisper (whispercpp runs on CPU here)",
                ".backend",
            ),
            cel(
                "!has(self.autoscaling) || !has(self.autoscaling.targetGPUUtilization) "
                "|| self.gpu.enabled",
                "autoscaling.targetGPUUtilization needs gpu.enabled",
                ".autoscaling.targetGPUUtilization",
            ),
        )
    )

    autoscaling: SpeechAutoscaling | None = Field(
        None,
        description="Scale on recognition load, GPU and/or CPU utilization (replaces replicas).",
    )
    backend: Literal["whispercpp", "faster-whisper"] = Field(
        "whispercpp", description="Recognition backend."
    )
    model_name: Literal["tiny.en", "base"] = Field(
        "tiny.en",
        alias="modelName",
        description="Whisper model the image bundles: tiny.en (English only, fastest) or base "
        "(multilingual, 99 languages; needed for Dialogs whose settings.language is not en).",
    )
    model: str | None = Field(
        None,
        max_length=1024,
        description="Model path in the image (whispercpp: ggml file; faster-whisper: "
        "CTranslate2 directory), instead of modelName.",
    )
    language: str = Field(
        "en",
        max_length=16,
        description="Recognition language of calls whose Dialog names none (a Dialog's "
        "settings.language does).",
    )
    quantization: Literal["q8_0", "f16"] = Field(
        "q8_0",
        description="whispercpp: which of the image's prepared weights of modelName to load: "
        "q8_0 (8-bit weight blocks: more audio decoded per core at the same accuracy; "
        "bench/asr_capacity.py) or f16. Ignored with model and by faster-whisper.",
    )
    workers: int = Field(1, ge=1, le=64, description="Recognition workers per pod.")
    gpu: Gpu = Field(default_factory=Gpu)
    capacity: SpeechCapacity = Field(default_factory=SpeechCapacity)

    @model_validator(mode="after")
    def _gpu(self) -> SpeechSpec:
        if self.gpu.enabled and self.backend != "faster-whisper":
            raise ValueError("gpu.enabled needs backend faster-whisper")
        auto = self.autoscaling
        if auto is not None and auto.target_gpu_utilization is not None and not self.gpu.enabled:
            raise ValueError("autoscaling.targetGPUUtilization needs gpu.enabled")
        return self


class ExternalRedis(Spec):
    """A Redis the installation already has."""

    url_secret_ref: SecretKeyRef = Field(
        alias="urlSecretRef", description="Secret key holding redis://host:6379/0 (or rediss://)."
    )
    password_secret_ref: SecretKeyRef | None = Field(
        None, alias="passwordSecretRef", description="Secret key holding the password (a file)."
    )


class ManagedRedis(Spec):
    """A single Redis pod run by the operator (small installations; no persistence)."""

    image: str = Field("redis:7.4-alpine", max_length=512, description="Redis image.")
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)


class StateStore(Spec):
    """Where live call sessions (runtime) and idempotency records (integration) are kept."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.type != 'redis' || has(self.redis)",
                "type redis needs redis.urlSecretRef",
                ".redis",
            ),
        )
    )

    type: Literal["managedRedis", "redis"] = Field(
        "managedRedis", description="managedRedis: one Redis pod run by the operator; redis: yours."
    )
    redis: ExternalRedis | None = Field(None, description="type redis: how to reach it.")
    managed_redis: ManagedRedis = Field(
        default_factory=ManagedRedis,
        description="type managedRedis: a single Redis pod run by the operator (small "
        "installations; no persistence), placed like the runtime (its nodeSelector and "
        "tolerations).",
    )

    @model_validator(mode="after")
    def _redis(self) -> StateStore:
        if self.type == "redis" and self.redis is None:
            raise ValueError("type redis needs redis.urlSecretRef")
        return self


class RuntimeSpec(Workload):
    """The conversation runtime: runs the dialogs."""

    autoscaling: Autoscaling | None = Field(None, description="Scale on CPU (replaces replicas).")
    store: StateStore = Field(default_factory=StateStore)
    drain_seconds: int = Field(
        60,
        ge=1,
        le=86400,
        description="On scale-down/rollout: how long calls may finish or move before the pod "
        "stops (sessions are stored, the media gateway re-attaches elsewhere).",
    )


class IntegrationServiceSpec(Workload):
    """The integration gateway: the only way out to customer backends."""

    autoscaling: Autoscaling | None = Field(None, description="Scale on CPU (replaces replicas).")


class NetworkPolicySpec(Spec):
    """NetworkPolicies allowing only the pipeline's own traffic."""

    enabled: bool = Field(True, description="Create the NetworkPolicies.")
    metrics_namespace_selector: dict[str, str] | None = Field(
        None,
        description="Namespaces (by labels) allowed to scrape /metrics, e.g. "
        "{kubernetes.io/metadata.name: monitoring}; unset: none.",
    )


TOKEN_REQUIRED = "required when enabled (a bearer token from a Secret)"


class TokenAccess(Spec):
    """A web page of a service, off by default, behind a bearer token from a Secret; and who
    the NetworkPolicy lets reach its HTTP port besides ``kubectl port-forward`` (which
    NetworkPolicies do not filter): the browsers' networks, an ingress controller's namespace."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!self.enabled || has(self.tokenSecretRef)",
                f"tokenSecretRef is {TOKEN_REQUIRED}",
                ".tokenSecretRef",
            ),
            cel(
                "self.allowedSourceCIDRs.all(c, isCIDR(c))",
                "allowedSourceCIDRs entries must be CIDRs such as 10.0.0.0/8",
                ".allowedSourceCIDRs",
            ),
        )
    )

    enabled: bool = Field(False, description="Serve it (off by default).")
    token_secret_ref: SecretKeyRef | None = Field(
        None,
        description="The bearer token: a Secret key, mounted read-only as a file (never an "
        "environment variable). Required when enabled.",
    )
    allowed_source_cidrs: list[Cidr] = Field(
        default_factory=list,
        alias="allowedSourceCIDRs",
        max_length=64,
        description="Networks allowed to reach the HTTP port (NetworkPolicy).",
    )
    namespace_selector: dict[str, str] | None = Field(
        None,
        description="Namespaces (by labels) whose pods may reach the HTTP port, e.g. the ingress "
        "controller's {kubernetes.io/metadata.name: ingress-nginx}; unset: none.",
    )

    @model_validator(mode="after")
    def _token(self) -> TokenAccess:
        if self.enabled and self.token_secret_ref is None:
            raise ValueError(f"tokenSecretRef: {TOKEN_REQUIRED}")
        return self


class ConsoleSpec(TokenAccess):
    """The live call console, read-only, on the runtime's HTTP port (``/console/``). Off by
    default: it shows transcripts and caller numbers. Always behind a bearer token, also behind
    an auth proxy (the proxy sends it): the runtime's HTTP port also serves its probes, so the
    console cannot be bound to the pod's loopback instead."""

    mask_caller_numbers: bool = Field(
        True, description="Show caller numbers masked (last digits only)."
    )


class WebRtcSpec(TokenAccess):
    """Browser calling through the media gateway: the call page on its HTTP port (``/call/``),
    signalling at ``/v1/webrtc/``, media over ICE host candidates on the pod's address (UDP,
    ephemeral ports, no TURN): browsers must reach the pod IP. Off by default."""

    token_ttl_seconds: int = Field(
        60, ge=10, le=3600, description="How long a browser call token stays valid."
    )
    dialog: str = Field(
        "",
        max_length=253,
        description="Dialog for browser calls (one of spec.dialogs); empty: the media dialog.",
    )
    max_calls: int = Field(10, ge=1, le=100000, description="Browser calls at once per media pod.")


WEBRTC_CIDRS = (
    "list the browsers' networks when networkPolicy is enabled (their UDP media reaches the "
    "media pods directly)"
)


class VoiceDeploymentSpec(Spec):
    """A voicetyped pipeline serving the given Dialogs with the given Integrations."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.media.dialog) || self.media.dialog in self.dialogs",
                "media.dialog must be one of spec.dialogs",
                ".media.dialog",
            ),
            cel(
                "self.media.dialogRoutes.all(k, self.media.dialogRoutes[k] in self.dialogs)",
                "media.dialogRoutes must route to Dialogs listed in spec.dialogs",
                ".media.dialogRoutes",
            ),
            cel(
                "self.media.dialogSRTP.all(k, k in self.dialogs)",
                "media.dialogSRTP must name Dialogs listed in spec.dialogs",
                ".media.dialogSRTP",
            ),
            cel(
                "self.media.trunks.all(t, !has(t.dialog) || t.dialog in self.dialogs)",
                "media.trunks[].dialog must be one of spec.dialogs",
                ".media.trunks",
            ),
            cel(
                "!has(self.webrtc) || self.webrtc.dialog == '' "
                "|| self.webrtc.dialog in self.dialogs",
                "webrtc.dialog must be one of spec.dialogs",
                ".webrtc.dialog",
            ),
            cel(
                "!has(self.webrtc) || !self.webrtc.enabled || !self.networkPolicy.enabled "
                "|| size(self.webrtc.allowedSourceCIDRs) > 0",
                WEBRTC_CIDRS,
                ".webrtc.allowedSourceCIDRs",
            ),
        )
    )

    dialogs: list[Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]] = (
        Field(
            min_length=1,
            max_length=64,
            json_schema_extra={"uniqueItems": True},
            description="Dialogs (same namespace) the runtime serves.",
        )
    )
    integrations: list[
        Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
    ] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"uniqueItems": True},
        description="Integrations (same namespace) the integration gateway serves.",
    )
    media: MediaSpec
    speech: SpeechSpec = Field(default_factory=SpeechSpec)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    integration: IntegrationServiceSpec = Field(default_factory=IntegrationServiceSpec)
    network_policy: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)
    image_pull_secrets: list[ObjectName] = Field(
        default_factory=list, max_length=16, description="Secrets for pulling the images."
    )
    console: ConsoleSpec = Field(
        default_factory=ConsoleSpec,
        description="The live call console on the runtime's HTTP port (/console/), read-only, "
        "behind a bearer token; off by default (docs/console-in-cluster.md).",
    )
    webrtc: WebRtcSpec = Field(
        default_factory=WebRtcSpec,
        description="Browser calling on the media gateway's HTTP port (/call/, Service "
        "<name>-webrtc); media over UDP to the pod's address; off by default.",
    )

    @model_validator(mode="after")
    def _dialogs(self) -> VoiceDeploymentSpec:
        if len(set(self.dialogs)) != len(self.dialogs):
            raise ValueError("dialogs must not repeat")
        if self.media.dialog is not None and self.media.dialog not in self.dialogs:
            raise ValueError("media.dialog must be one of spec.dialogs")
        for user, dialog in self.media.dialog_routes.items():
            if dialog not in self.dialogs:
                raise ValueError(f"media.dialogRoutes.{user}: {dialog!r} is not in spec.dialogs")
        for dialog in self.media.dialog_srtp:
            if dialog not in self.dialogs:
                raise ValueError(f"media.dialogSRTP.{dialog}: not in spec.dialogs")
        for i, trunk in enumerate(self.media.trunks):
            if trunk.dialog is not None and trunk.dialog not in self.dialogs:
                raise ValueError(
                    f"media.trunks[{i}].dialog: {trunk.dialog!r} is not in spec.dialogs"
                )
        webrtc = self.webrtc
        if webrtc.dialog and webrtc.dialog not in self.dialogs:
            raise ValueError(f"webrtc.dialog: {webrtc.dialog!r} is not in spec.dialogs")
        if webrtc.enabled and self.network_policy.enabled and not webrtc.allowed_source_cidrs:
            raise ValueError(f"webrtc.allowedSourceCIDRs: {WEBRTC_CIDRS}")
        return self

    def default_dialog(self) -> str:
        return self.media.dialog or self.dialogs[0]


VD_ROOT_RULES = [
    cel(
        f"size(self.metadata.name) <= {NAME_MAX}",
        f"VoiceDeployment names are at most {NAME_MAX} characters (children are named "
        "<name>-integration)",
    ),
    cel(
        "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        "VoiceDeployment names must be DNS labels starting with a letter (they name Services)",
    ),
]
