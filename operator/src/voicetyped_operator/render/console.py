"""The live call console (runtime) and browser calling (media gateway) in the cluster (pure).

Both are off by default and then nothing here renders: the objects are exactly those of a
VoiceDeployment without them. When enabled:

* the service gets its ``VOICETYPED_CONSOLE__*`` / ``VOICETYPED_WEBRTC__*`` environment, and
  the bearer token Secret's key as a read-only file (``.../console/token``,
  ``.../webrtc/token``): the token never enters the environment, a ConfigMap or status;
* the console is on the runtime's HTTP port, which the runtime Service already exposes; the
  call page is on the media gateway's HTTP port, which the media Service (SIP, possibly a
  public LoadBalancer) does not carry: a ClusterIP Service ``<name>-webrtc`` does;
* the NetworkPolicy lets ``allowedSourceCIDRs`` and ``namespaceSelector`` reach that HTTP
  port (``kubectl port-forward`` is not filtered by NetworkPolicies), and for browser calls
  the browsers' networks send UDP to any port of the media pods (ICE host candidates on
  ephemeral ports; no TURN).
"""

from __future__ import annotations

from lightkube.models.core_v1 import (
    ClientIPConfig,
    EnvVar,
    KeyToPath,
    ServicePort,
    ServiceSpec,
    SessionAffinityConfig,
)
from lightkube.models.meta_v1 import LabelSelector
from lightkube.models.networking_v1 import (
    IPBlock,
    NetworkPolicyIngressRule,
    NetworkPolicyPeer,
    NetworkPolicyPort,
)
from lightkube.resources.core_v1 import Service
from voicetyped_specs.resources.base import SecretKeyRef
from voicetyped_specs.resources.voicedeployment import TokenAccess, VoiceDeploymentSpec

from voicetyped_operator import naming
from voicetyped_operator.render.common import (
    HTTP_PORT,
    SECRETS_DIR,
    Owner,
    PodPlan,
    object_meta,
    secret_files,
)

TOKEN = "token"
"""The file name of a mounted token (the Secret's key is mapped to it)."""
WEBRTC = "webrtc"
"""The browser calling Service: ``<VoiceDeployment>-webrtc``."""


MIN_TOKEN = 16
"""Characters a bearer token has at least (``openssl rand -hex 32`` gives 64)."""


def token_refs(spec: VoiceDeploymentSpec) -> list[tuple[str, SecretKeyRef]]:
    """(field, Secret key) of each enabled token: what the operator checks before rendering."""
    out = []
    for field, access in (("spec.console", spec.console), ("spec.webrtc", spec.webrtc)):
        if access.enabled and access.token_secret_ref is not None:
            out.append((f"{field}.tokenSecretRef", access.token_secret_ref))
    return out


def token_problem(value: bytes) -> str:
    """Empty when ``value`` (a Secret's key) is a usable bearer token, else what is wrong with
    it, for a condition message: never any of the value itself."""
    try:
        token = value.decode("ascii").strip()
    except UnicodeDecodeError:
        return "it is not ASCII text"
    if not token:
        return "it is empty"
    if any(not "!" <= ch <= "~" for ch in token):
        return "it holds spaces or control characters"
    if len(token) < MIN_TOKEN:
        return f"it is shorter than {MIN_TOKEN} characters"
    return ""


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _serve(pod: PodPlan, name: str, access: TokenAccess, settings: dict[str, str]) -> None:
    """``VOICETYPED_<NAME>__ENABLED``, ``__TOKEN_FILE`` (the Secret's key as a read-only file)
    and ``settings`` (``__<SETTING>``) on the pod; nothing when disabled."""
    if not access.enabled:
        return
    ref = access.token_secret_ref
    assert ref is not None, "the spec requires tokenSecretRef when enabled"
    path = f"{SECRETS_DIR}/{name}"
    secret_files(pod, f"{name}-token", ref.name, [KeyToPath(key=ref.key, path=TOKEN)], path)
    values = {"ENABLED": "true", "TOKEN_FILE": f"{path}/{TOKEN}", **settings}
    prefix = f"VOICETYPED_{name.upper()}__"
    pod.env += [EnvVar(name=prefix + key, value=value) for key, value in values.items()]


def add_console(pod: PodPlan, spec: VoiceDeploymentSpec) -> None:
    """The runtime's console settings and token file (nothing when disabled)."""
    console = spec.console
    _serve(pod, "console", console, {"MASK_CALLERS": _flag(console.mask_caller_numbers)})


def add_webrtc(pod: PodPlan, spec: VoiceDeploymentSpec) -> None:
    """The media gateway's browser calling settings and token file (nothing when disabled)."""
    webrtc = spec.webrtc
    settings = {
        "TOKEN_TTL_S": str(webrtc.token_ttl_seconds),
        "DIALOG": webrtc.dialog or spec.default_dialog(),
        "MAX_CALLS": str(webrtc.max_calls),
    }
    _serve(pod, WEBRTC, webrtc, settings)


def webrtc_service(owner: Owner, spec: VoiceDeploymentSpec, labels: dict[str, str]) -> Service:
    """The media gateway's HTTP port (call page and signalling) on its own ClusterIP Service:
    never on the SIP Service, which may be a public LoadBalancer. ClientIP affinity keeps a
    browser's signalling requests on one media pod."""
    return Service(
        metadata=object_meta(owner, naming.child_name(owner.name, WEBRTC), labels),
        spec=ServiceSpec(
            type="ClusterIP",
            selector=naming.selector_labels(owner.name, "media"),
            ports=[ServicePort(name="http", port=HTTP_PORT["media"], targetPort="http")],
            sessionAffinity="ClientIP",
            sessionAffinityConfig=SessionAffinityConfig(
                clientIP=ClientIPConfig(timeoutSeconds=3600)
            ),
        ),
    )


def _access_rules(
    access: TokenAccess, port: int, cidr_ports: list[NetworkPolicyPort]
) -> list[NetworkPolicyIngressRule]:
    """Ingress to the HTTP ``port`` from the listed networks (plus ``cidr_ports`` for them)
    and namespaces; none when nothing is listed (an empty peer list would admit everyone)."""
    http = NetworkPolicyPort(port=port, protocol="TCP")
    rules = []
    if access.allowed_source_cidrs:
        rules.append(
            NetworkPolicyIngressRule(
                from_=[
                    NetworkPolicyPeer(ipBlock=IPBlock(cidr=c)) for c in access.allowed_source_cidrs
                ],
                ports=[http, *cidr_ports],
            )
        )
    if access.namespace_selector is not None:
        selector = LabelSelector(matchLabels=access.namespace_selector)
        rules.append(
            NetworkPolicyIngressRule(
                from_=[NetworkPolicyPeer(namespaceSelector=selector)], ports=[http]
            )
        )
    return rules


def console_rules(spec: VoiceDeploymentSpec) -> list[NetworkPolicyIngressRule]:
    """The runtime NetworkPolicy's rules for the console (none when disabled)."""
    if not spec.console.enabled:
        return []
    return _access_rules(spec.console, HTTP_PORT["runtime"], [])


def webrtc_rules(spec: VoiceDeploymentSpec) -> list[NetworkPolicyIngressRule]:
    """The media NetworkPolicy's rules for browser calls (none when disabled): the call page
    and signalling, and the browsers' UDP media to any port (aioice's ephemeral ports)."""
    if not spec.webrtc.enabled:
        return []
    return _access_rules(spec.webrtc, HTTP_PORT["media"], [NetworkPolicyPort(protocol="UDP")])
