"""The media gateway's SIP edge: TLS, SRTP, the scanner and flood defence, trunks (pure).

Everything lands in the media ConfigMap's ``config.yaml`` under the gateway's own setting
names (the keys of ``VOICETYPED_*``: ``sip_transports``, ``tls_cert_file``, ``srtp``,
``sip_rate_limit``, ``max_calls_per_source``, ``trunks``...), like every other media setting,
so a change rolls the media pods through the config hash. Secrets never enter it: the TLS
certificate and key, the client CA and each trunk's password are Secret volumes mounted
read-only, and the settings hold their file paths.
"""

from __future__ import annotations

from typing import Any

from lightkube.models.core_v1 import ContainerPort, KeyToPath
from voicetyped_specs.resources.voicedeployment import MediaSpec, Trunk

from voicetyped_operator import naming
from voicetyped_operator.render.common import SECRETS_DIR, PodPlan, secret_files

TLS_DIR = f"{SECRETS_DIR}/sip-tls"
TLS_CLIENT_CA_DIR = f"{SECRETS_DIR}/sip-tls-client-ca"
TRUNKS_DIR = f"{SECRETS_DIR}/trunks"
TLS_KEYS = ("tls.crt", "tls.key")
"""The keys of a kubernetes.io/tls Secret (what ``media.tls.secretRef`` names)."""
LOOPBACK = ("127.0.0.0/8", "::1/128")
"""The gateway's own default exempt networks, kept beside the carriers'."""


def trunk_password_file(trunk: Trunk) -> str:
    return f"{TRUNKS_DIR}/{trunk.name}/password"


def trunk_settings(trunks: list[Trunk]) -> list[dict[str, Any]]:
    """The gateway's ``trunks`` setting (``VOICETYPED_TRUNKS``: a JSON list of these): one
    entry per trunk, in the media gateway's field names (``TrunkSettings``). The password is
    a file path only. The one place the two formats meet: keep it aligned with the gateway."""
    return [
        {
            "name": t.name,
            "registrars": list(t.registrars),
            "username": t.username,
            "auth_username": t.auth_username,
            "password_file": trunk_password_file(t),
            "domain": t.domain,
            "expires_s": t.expires_seconds,
            "transport": t.transport,
            "keepalive": t.keepalive,
            "keepalive_s": float(t.keepalive_seconds),
            "dids": list(t.dids),
            "dialog": t.dialog or "",  # empty: the gateway's dialog (media.dialog)
            "trust_registrar_source": t.trust_registrar_source,
            "max_calls": t.max_calls,  # None: no ceiling of the trunk's own
        }
        for t in trunks
    ]


def edge_settings(media: MediaSpec) -> dict[str, Any]:
    """The media settings of the SIP edge (no secrets, only paths to mounted ones)."""
    limit = media.rate_limit
    config: dict[str, Any] = {
        "sip_transports": media.transports(),
        "srtp": media.srtp,
        "dialog_srtp": dict(media.dialog_srtp),
        "sip_rate_limit": {
            "enabled": limit.enabled,
            "requests_per_s": limit.requests_per_second,
            "burst": limit.burst,
            "ban_after": limit.ban_after,
            "failures_before_ban": limit.failures_before_ban,
            "ban_s": float(limit.ban_seconds),
            "max_sources": limit.max_sources,
            "exempt_cidrs": [*LOOPBACK, *media.carrier_cidrs],
        },
        "max_calls_per_source": media.max_calls_per_source,
    }
    if media.max_calls_per_route is not None:
        config["max_calls_per_route"] = media.max_calls_per_route
    tls = media.tls
    if tls is not None:
        config.update(
            {
                "sip_tls_port": tls.port,
                "tls_cert_file": f"{TLS_DIR}/tls.crt",
                "tls_key_file": f"{TLS_DIR}/tls.key",
                "tls_min_version": tls.min_version,
            }
        )
        if tls.client_ca_secret_ref is not None:
            config["tls_client_ca_file"] = f"{TLS_CLIENT_CA_DIR}/ca.crt"
    if media.trunks:
        config["trunks"] = trunk_settings(media.trunks)
    return config


def add_sip_edge(pod: PodPlan, media: MediaSpec, tls_hash: str) -> None:
    """Settings, Secret volumes and the TLS port of the media pod. ``tls_hash`` (the checked
    certificate's, :mod:`voicetyped_operator.tls`) on the pod template rolls the pods when the
    Secret is renewed: the gateway reads its certificate at start."""
    pod.config.update(edge_settings(media))
    tls = media.tls
    if tls is not None:
        secret_files(
            pod,
            "sip-tls",
            tls.secret_ref.name,
            [KeyToPath(key=k, path=k) for k in TLS_KEYS],
            TLS_DIR,
        )
        ca = tls.client_ca_secret_ref
        if ca is not None:
            secret_files(
                pod,
                "sip-tls-client-ca",
                ca.name,
                [KeyToPath(key=ca.key, path="ca.crt")],
                TLS_CLIENT_CA_DIR,
            )
        pod.ports.append(ContainerPort(name="sip-tls", containerPort=tls.port, protocol="TCP"))
        if tls_hash:
            pod.annotations[naming.TLS_HASH] = tls_hash
    for index, trunk in enumerate(media.trunks):
        ref = trunk.password_secret_ref
        secret_files(
            pod,
            f"trunk-{index}",
            ref.name,
            [KeyToPath(key=ref.key, path="password")],
            f"{TRUNKS_DIR}/{trunk.name}",
        )
