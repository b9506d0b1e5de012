"""Settings of the media gateway (see voicetyped.service.config for the common ones).

Environment: ``VOICETYPED_SIP_PORT=5060``, ``VOICETYPED_RTP_PORT_MIN=20000``,
``VOICETYPED_ALLOWED_CIDRS='["10.0.0.0/8"]'``, ``VOICETYPED_CODECS='["PCMU","PCMA"]'``,
``VOICETYPED_SIP_TRANSPORTS='["udp","tcp","tls"]'``, ``VOICETYPED_SRTP=required``...
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, model_validator
from voicetyped.service.config import ServiceSettings

from voicetyped_media.rtp.srtp import SrtpPolicy
from voicetyped_media.sip.trunk_config import TrunkSettings

Codec = Literal["opus", "G722", "PCMU", "PCMA"]


class SipRateLimit(BaseModel):
    """Per-source scanner and flood defence (``VOICETYPED_SIP_RATE_LIMIT__*``; the guide is
    docs/public-sip.md). A source is an IP address; exempt networks (carrier trunks, the
    cluster's own) are never rate limited, banned or held to ``max_calls_per_source``."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = Field(True, description="Rate limits and bans on (ceilings stay on).")
    requests_per_s: float = Field(
        20.0, gt=0, le=100_000, description="Token bucket refill: requests per second per source."
    )
    burst: int = Field(60, ge=1, le=1_000_000, description="Token bucket size per source.")
    ban_after: int = Field(
        40,
        ge=1,
        description="Requests refused for the rate (503) before the source is banned; the count "
        "starts again once the source's bucket is full.",
    )
    failures_before_ban: int = Field(
        10,
        ge=1,
        description="Digest authentication failures (wrong user or password) before a ban.",
    )
    ban_s: float = Field(600.0, gt=0, description="How long a banned source is ignored.")
    max_sources: int = Field(
        10_000,
        ge=1,
        description="Sources tracked at most (memory bound); beyond, the least recently seen "
        "is forgotten.",
    )
    exempt_cidrs: list[IPvAnyNetwork] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],  # type: ignore[arg-type]
        description="Networks never rate limited or banned (carrier trunks); default loopback.",
    )


class WebRtcSettings(BaseModel):
    """Browser calls over WebRTC (``VOICETYPED_WEBRTC__*``; the guide is
    docs/browser-calling.md): the page at ``/call/`` and the signalling under ``/v1/webrtc/``
    on the media gateway's HTTP port."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = Field(False, description="Serve the call page and WebRTC signalling.")
    token_file: Path | None = Field(
        None,
        description="Bearer token (Secret mount) needed to mint call tokens; the call tokens' "
        "HMAC key is derived from it (every replica accepts them). Required when enabled and "
        "http_host is not loopback; None (loopback only): minting is open.",
    )
    token_ttl_s: int = Field(60, ge=5, le=3600, description="A call token's lifetime.")
    dialog: str = Field("", description="Dialog for browser calls; empty: the `dialog` setting.")
    max_calls: int = Field(20, ge=1, description="Browser calls at once; beyond: 503.")


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class MediaSettings(ServiceSettings):
    # Distinct default ports let all four services run side by side on one machine.
    http_port: int = Field(8081, ge=0, le=65535)
    grpc_port: int = Field(50061, ge=0, le=65535)

    sip_host: str = Field("0.0.0.0", description="Bind address of the SIP listeners.")
    sip_port: int = Field(5060, ge=0, le=65535, description="SIP port (UDP and TCP).")
    sip_transports: list[Literal["udp", "tcp", "tls"]] = Field(
        default=["udp", "tcp"], description="tls listens on sip_tls_port (needs tls_cert_file)."
    )
    sip_tls_port: int = Field(5061, ge=0, le=65535, description="SIP over TLS port (RFC 5630).")
    tls_cert_file: Path | None = Field(
        None, description="PEM server certificate (chain) for SIP over TLS (Secret mount)."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(
        None,
        description="PEM CA(s): when set, a TLS client must present a certificate they issued "
        "(a carrier's); others are refused in the handshake.",
    )
    tls_min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    tls_handshake_timeout_s: float = Field(
        10.0, gt=0, le=120, description="A TLS client must finish its handshake within this."
    )
    srtp: SrtpPolicy = Field(
        "optional",
        description="SRTP (SDES, RFC 4568) for calls: required | optional | off; "
        "dialog_srtp overrides it per dialog.",
    )
    dialog_srtp: dict[str, SrtpPolicy] = Field(
        default_factory=dict,
        description="Dialog name (after dialog_routes) -> SRTP policy for its calls.",
    )
    rtp_host: str = Field("0.0.0.0", description="Bind address of RTP sockets.")
    media_ip: str = Field(
        "",
        description="Address written into SDP and Contact (the pod IP, or the node's with "
        "hostNetwork); empty: advertise_host, else 127.0.0.1 for a wildcard bind.",
    )
    rtp_port_min: int = Field(20000, ge=1024, le=65534)
    rtp_port_max: int = Field(20999, ge=1025, le=65535)
    codecs: list[Codec] = Field(
        default=["opus", "G722", "PCMU", "PCMA"],
        description="Codecs offered and accepted; the caller's order of preference decides.",
    )
    max_calls: int = Field(200, ge=1, description="Calls admitted at once; beyond: 503.")
    max_calls_per_source: int = Field(
        20,
        ge=1,
        description="Calls at once from one source address (not exempt ones); beyond: 503.",
    )
    max_calls_per_route: int | None = Field(
        None,
        ge=1,
        description="Calls at once per dialog route (the dialog a called user is routed to, "
        "all of a trunk's numbers on one dialog); None: only max_calls.",
    )
    sip_rate_limit: SipRateLimit = Field(default_factory=SipRateLimit)
    retry_after_s: int = Field(5, ge=1, description="Retry-After of a 503 (capacity, drain).")
    allowed_cidrs: list[str] = Field(
        default_factory=list, description="Source networks allowed to call in; empty: any."
    )
    digest_users_file: Path | None = Field(
        None, description="user:password lines (Secret mount): digest authentication on."
    )
    digest_realm: str = "voicetyped"
    session_expires_s: int | None = Field(1800, ge=90, description="RFC 4028; None: off.")
    min_se_s: int = Field(90, ge=90)
    inband_dtmf: Literal["auto", "on", "off"] = Field(
        "auto", description="Detect DTMF tones in the audio: auto = when no telephone-event."
    )
    symmetric_rtp: bool = Field(True, description="Send media where the caller's comes from.")
    passed_headers: list[str] = Field(
        default=["P-Asserted-Identity", "Diversion", "X-Customer-Id"],
        description="INVITE headers passed on to the runtime (CallerInfo.sip_headers).",
    )
    dialog: str = Field("", description="Dialog for calls; empty: the runtime's default.")
    dialog_routes: dict[str, str] = Field(
        default_factory=dict,
        description="Called user part (Request-URI user) -> dialog name; others use `dialog`.",
    )
    speech_target: str = Field(
        "127.0.0.1:50062",
        description="Speech gateway host:port, or a gRPC target naming several replicas "
        "(dns:///<headless service>:50062, ipv4:a:p,b:p): new calls' streams are spread over "
        "them round-robin.",
    )
    speech_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="Replicas a new call's speech stream is tried on when one refuses it at "
        "capacity (the next attempt goes to the next replica of speech_target); then 503.",
    )
    speech_restore_s: float = Field(
        10.0,
        ge=0,
        le=60,
        description="A call's speech stream failing mid-call (its replica gone) is reopened "
        "through speech_target for up to this long; then the call is hung up (BYE with "
        'Reason: Q.850;cause=41;text="speech unavailable").',
    )
    runtime_target: str = Field("127.0.0.1:50063", description="Runtime host:port.")
    user_agent: str = "voicetyped-media"
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop", description="Event loop implementation (uvloop: less CPU per call)."
    )
    ring_ms: int = Field(0, ge=0, le=10_000, description="Ring this long before answering.")
    trunks: list[TrunkSettings] = Field(
        default_factory=list,
        description="Carrier trunks this gateway registers to (REGISTER client); "
        "VOICETYPED_TRUNKS is a JSON list (docs/public-sip.md, registering to a trunk).",
    )
    admin_token_file: Path | None = Field(
        None, description="Bearer token (Secret mount) required by GET /v1/trunks; None: open."
    )
    webrtc: WebRtcSettings = Field(default_factory=WebRtcSettings)

    @model_validator(mode="after")
    def _ports(self) -> MediaSettings:
        if self.rtp_port_max - self.rtp_port_min < 2:
            raise ValueError("rtp_port_max must be at least rtp_port_min + 2")
        if not self.codecs:
            raise ValueError("codecs must name at least one codec")
        if "tls" in self.sip_transports and (
            self.tls_cert_file is None or self.tls_key_file is None
        ):
            raise ValueError("sip_transports has tls: tls_cert_file and tls_key_file are needed")
        names = [t.name for t in self.trunks]
        for i, trunk in enumerate(self.trunks):
            if names.index(trunk.name) != i:
                raise ValueError(f"trunks.{i}.name: {trunk.name!r} is used by another trunk")
            if trunk.transport not in self.sip_transports:
                raise ValueError(
                    f"trunks.{i}.transport: {trunk.transport} is not in sip_transports"
                )
        w = self.webrtc
        if w.enabled and w.token_file is None and self.http_host not in LOOPBACK_HOSTS:
            raise ValueError(
                "webrtc.enabled with http_host "
                f"{self.http_host!r} (not loopback): webrtc.token_file is required, or anyone "
                "who reaches the port could place calls"
            )
        return self

    def webrtc_dialog(self) -> str:
        """The dialog browser calls go to."""
        return self.webrtc.dialog or self.dialog

    def srtp_for(self, dialog: str) -> SrtpPolicy:
        """The SRTP policy of calls routed to ``dialog``."""
        return self.dialog_srtp.get(dialog, self.srtp)

    def sdp_address(self) -> str:
        if self.media_ip:
            return self.media_ip
        if self.advertise_host:
            return self.advertise_host
        return "127.0.0.1" if self.rtp_host in ("0.0.0.0", "", "::") else self.rtp_host
