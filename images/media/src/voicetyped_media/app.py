"""Assembles the media gateway process: SIP listeners, RTP ports, the playout clock, the gRPC
channels to the speech gateway and the runtime, admission control and graceful drain."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time

import grpc
import uvloop
from aiosipua import IncomingCall, SipRequest, SipTransport
from prometheus_client import REGISTRY, CollectorRegistry
from voicetyped.service.app import ServiceApp
from voicetyped.service.grpc_client import create_channel
from voicetyped.service.logs import get_logger
from voicetyped.v1 import runtime_pb2

from voicetyped_media.call import CallConfig, MediaCall, Services
from voicetyped_media.config import MediaSettings
from voicetyped_media.metrics import MediaMetrics
from voicetyped_media.rtp.pacer import Pacer
from voicetyped_media.rtp.ports import PortPool
from voicetyped_media.sdp import Offer, SdpError, SrtpPolicyError, read_offer
from voicetyped_media.sip.gate import SipGate
from voicetyped_media.sip.inbound import Challenge, InboundPolicy
from voicetyped_media.sip.server import Handlers, SipServer, encrypted
from voicetyped_media.sip.tls import server_context
from voicetyped_media.sip.transport import (
    GuardedTcpTransport,
    GuardedTlsTransport,
    GuardedUdpTransport,
    guard,
)
from voicetyped_media.sip.trunks import Sender, TrunkClient, Trunks
from voicetyped_media.sip.validate import Problem
from voicetyped_media.webrtc.signalling import WebRtcIngress

SERVICE_NAME = "media"

log = get_logger("voicetyped.media")
ENDED = runtime_pb2.CallEnded
_END_REASON = {
    "bye": (ENDED.REASON_CALLER_HANGUP, 200),
    "cancel": (ENDED.REASON_CALLER_HANGUP, 487),
    "ack_timeout": (ENDED.REASON_FAILED, 408),
    "session_expired": (ENDED.REASON_FAILED, 408),
}


class MediaGateway:
    def __init__(self, settings: MediaSettings, registry: CollectorRegistry = REGISTRY) -> None:
        self.settings = settings
        self.metrics = MediaMetrics(registry)
        self.calls: dict[str, MediaCall] = {}
        self.draining = False
        self.policy = InboundPolicy.build(
            settings.allowed_cidrs, settings.digest_users_file, settings.digest_realm
        )
        self.gate = SipGate(settings, self.metrics, time.monotonic)
        self.ports = PortPool(settings.rtp_host, settings.rtp_port_min, settings.rtp_port_max)
        self.pacer = Pacer()
        self.sip: SipServer | None = None
        self.trunks = Trunks([])
        self.sip_port = settings.sip_port
        self.sip_tls_port = settings.sip_tls_port
        # Read now, before anything listens: a bad certificate or key stops the start (exit 2).
        self.tls: ssl.SSLContext | None = None
        if "tls" in settings.sip_transports:
            assert settings.tls_cert_file is not None and settings.tls_key_file is not None
            self.tls = server_context(
                settings.tls_cert_file,
                settings.tls_key_file,
                settings.tls_client_ca_file,
                settings.tls_min_version,
            )
        self._channels: list[grpc.aio.Channel] = []
        self._pacer_task: asyncio.Task[None] | None = None
        self._answering: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()  # set whenever no call is in progress
        self._idle.set()
        self.webrtc = WebRtcIngress(settings, self.metrics) if settings.webrtc.enabled else None
        self.metrics.capacity.set(settings.max_calls)
        self.metrics.track(
            lambda: len(self.calls) + (len(self.webrtc.calls) if self.webrtc else 0),
            lambda: self.pacer.stats.late_ticks,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        speech = create_channel(s.speech_target, round_robin=True)
        runtime = create_channel(s.runtime_target)
        self._channels = [speech, runtime]
        self.services = Services(
            self.ports, self.pacer, speech, runtime, self.metrics, self._send_in_dialog
        )
        on_reject = lambda problem, addr: self.metrics.sip_rejected.labels(  # noqa: E731
            str(problem.status)
        ).inc()
        transports: list[SipTransport] = []
        for kind in s.sip_transports:
            screen = guard(s.user_agent, on_reject, self.gate)
            if kind == "tls":
                transports.append(
                    GuardedTlsTransport(
                        local_addr=(s.sip_host, s.sip_tls_port),
                        guard=screen,
                        ssl_context=self.tls,
                        handshake_timeout_s=s.tls_handshake_timeout_s,
                    )
                )
                continue
            cls = GuardedUdpTransport if kind == "udp" else GuardedTcpTransport
            transports.append(cls(local_addr=(s.sip_host, s.sip_port), guard=screen))
        self.sip = SipServer(
            transports,
            Handlers(
                admit=self._admit,
                new_call=self._new_call,
                reinvite=self._reinvite,
                acked=self._acked,
                ended=self._ended,
                dtmf=self._dtmf,
                transfer_progress=self._transfer_progress,
                draining=lambda: self.draining,
            ),
            user_agent=s.user_agent,
            session_expires=s.session_expires_s,
            min_se=s.min_se_s,
        )
        await self._start_sip(transports)
        self._pacer_task = asyncio.create_task(self.pacer.run(), name="playout-clock")
        self._start_trunks()
        if self.webrtc is not None:
            self.webrtc.start(self.services)
        log.info(
            "SIP listening",
            sip_port=self.sip_port,
            sip_tls_port=self.sip_tls_port if self.tls is not None else None,
            transports=s.sip_transports,
            srtp=s.srtp,
            media_ip=s.sdp_address(),
            rtp_ports=f"{s.rtp_port_min}-{s.rtp_port_max}",
        )

    async def _start_sip(self, transports: list[SipTransport]) -> None:
        """Start the listeners: UDP and TCP on one port (the first one's, when 0 picks it),
        TLS on its own."""
        assert self.sip is not None
        plain: int | None = None
        for uas, transport in zip(self.sip.uases, transports, strict=True):
            tls = isinstance(transport, GuardedTlsTransport)
            if not tls and plain is not None:
                transport.local_addr = (transport.local_addr[0], plain)
            await uas.start()
            if tls:
                self.sip_tls_port = self._bound_port(transport)
            elif plain is None:
                plain = self.sip_port = self._bound_port(transport)

    def _start_trunks(self) -> None:
        assert self.sip is not None
        s = self.settings
        for trunk in s.trunks:
            uas = self.sip.uases[s.sip_transports.index(trunk.transport)]
            sender = Sender(uas.transport, uas.client, s.sdp_address(), self.sip_port, s.user_agent)
            self.trunks.clients.append(TrunkClient(trunk, sender, self.metrics))
        self.trunks.start()

    @staticmethod
    def _bound_port(transport: SipTransport) -> int:
        udp = getattr(transport, "_udp_transport", None)
        if udp is not None:
            return int(udp.get_extra_info("sockname")[1])
        server = getattr(transport, "_server", None)
        if server is not None and server.sockets:
            return int(server.sockets[0].getsockname()[1])
        return transport.local_addr[1]

    async def ready(self) -> str | None:
        if self.sip is None:
            return "SIP not listening"
        if len(self.calls) >= self.settings.max_calls:
            return "at call capacity"
        return None

    async def drain(self, remaining_s: float) -> None:
        """Refuse new calls (503), let calls in progress finish within the grace period, then
        hang up those still going (BYE, CallEnded FAILED)."""
        self.draining = True
        log.info("draining", calls=len(self.calls))
        # Unregister first (beside the calls' drain): the carrier stops sending calls here.
        trunks = asyncio.create_task(self.trunks.stop(min(remaining_s / 2, 5.0)))
        browser = asyncio.create_task(self.webrtc.drain(remaining_s) if self.webrtc else _noop())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(remaining_s - 1.0, 0.0)):
                await self._idle.wait()
        if self.calls:
            log.warning("hanging up calls at the end of the grace period", calls=len(self.calls))
            await asyncio.gather(
                *(self._hang_up(call) for call in list(self.calls.values())),
                return_exceptions=True,
            )
        await trunks
        await browser

    async def _hang_up(self, call: MediaCall) -> None:
        await call.hang_up()
        await call.end(ENDED.REASON_FAILED, 503)

    async def stop(self) -> None:
        await self.trunks.stop(1.0)  # (after a drain there is nothing left to unregister)
        if self.webrtc is not None:
            await self.webrtc.stop()
        for call in list(self.calls.values()):
            await call.end(ENDED.REASON_FAILED, 503)
        if self._pacer_task is not None:
            self._pacer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pacer_task
        if self.sip is not None:
            await self.sip.stop()
        for channel in self._channels:
            await channel.close(None)

    # -- SIP handlers ------------------------------------------------------------------------

    def _admit(self, request: SipRequest, source: tuple[str, int]) -> Problem | Offer | None:
        s = self.settings
        retry = {"Retry-After": str(s.retry_after_s)}
        if self.draining:
            self.metrics.refused.labels("draining").inc()
            return Problem(503, "Service Unavailable", "shutting down", retry)
        trunk = self.trunks.trusted_source(source[0])
        problem = None if trunk is not None else self.policy.check(request, source)
        if isinstance(problem, Challenge) and problem.failed:
            self.gate.auth_failed(source[0])
        elif problem is None and trunk is None and self.policy.digest is not None:
            self.gate.auth_succeeded(source[0])
        if problem is not None:
            self.metrics.refused.labels("forbidden" if problem.status == 403 else "auth").inc()
            return problem
        dialog, came_by = self._route(request.uri, source[0])
        over = self.gate.call_refused(source[0], dialog, s.retry_after_s, came_by)
        if over is not None:
            self.metrics.refused.labels(over.reason).inc()
            return over.problem
        if len(self.calls) + len(self._answering) >= s.max_calls:
            self.metrics.refused.labels("capacity").inc()
            return Problem(503, "Service Unavailable", "at call capacity", retry)
        if self.ports.in_use >= self.ports.capacity:
            self.metrics.refused.labels("capacity").inc()
            return Problem(503, "Service Unavailable", "no RTP ports free", retry)
        if not request.body.strip():
            return None  # delayed offer: ours goes in the 200, the answer comes in the ACK
        try:
            return read_offer(
                request.text, tuple(s.codecs), s.srtp_for(dialog)
            )  # the only reading of it
        except SdpError as exc:
            policy = isinstance(exc, SrtpPolicyError)
            self.metrics.refused.labels("srtp_policy" if policy else "sdp").inc()
            return Problem(488, "Not Acceptable Here", str(exc))

    def _route(self, uri: str, source_ip: str) -> tuple[str, str | None]:
        """The dialog a call to ``uri`` from ``source_ip`` goes to (the called user's route,
        else the dialog of the trunk the call came by, else ``dialog``), and the name of that
        trunk (None: not a trunk's call)."""
        user = uri.split(":", 1)[-1].split("@", 1)[0] if "@" in uri else ""
        trunk = self.trunks.for_call(user, source_ip)
        name = None if trunk is None else trunk.name
        if user in self.settings.dialog_routes:
            return self.settings.dialog_routes[user], name
        if trunk is not None and trunk.settings.dialog:
            return trunk.settings.dialog, name
        return self.settings.dialog, name

    def _new_call(self, sip_call: IncomingCall, offer: Offer | None) -> None:
        s = self.settings
        dialog, trunk = self._route(sip_call.invite.uri, sip_call.source_addr[0])
        call = MediaCall(
            sip_call,
            offer,
            CallConfig(
                local_ip=s.rtp_host,
                advertised_ip=s.sdp_address(),
                codecs=tuple(s.codecs),
                inband_dtmf=s.inband_dtmf,
                passed_headers=tuple(s.passed_headers),
                dialog=dialog,
                symmetric_rtp=s.symmetric_rtp,
                ring_ms=s.ring_ms,
                speech_restore_s=s.speech_restore_s,
                srtp=s.srtp_for(dialog),
                encrypted_signalling=encrypted(sip_call),
                retry_after_s=s.retry_after_s,
                speech_attempts=s.speech_attempts,
            ),
            self.services,
            self._call_ended,
        )
        self.calls[sip_call.call_id] = call
        self.gate.call_started(sip_call.call_id, sip_call.source_addr[0], dialog, trunk)
        self._idle.clear()
        task = asyncio.get_running_loop().create_task(
            call.answer(), name=f"answer-{call.session_id}"
        )
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    def _call_ended(self, call: MediaCall) -> None:
        if self.calls.get(call.sip.call_id) is call:
            del self.calls[call.sip.call_id]
            self.gate.call_ended(call.sip.call_id)
        if not self.calls:
            self._idle.set()

    def _reinvite(self, sip_call: IncomingCall) -> None:
        call = self.calls.get(sip_call.call_id)
        if call is None:
            sip_call.reject(481, "Call/Transaction Does Not Exist")
            return
        call.reinvite(sip_call.invite)

    def _acked(self, sip_call: IncomingCall, ack: SipRequest) -> None:
        call = self.calls.get(sip_call.call_id)
        if call is not None:
            call.acked(ack)

    def _ended(self, call_id: str, why: str) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            reason, code = _END_REASON[why]
            call.remote_ended(reason, code)

    def _dtmf(self, sip_call: IncomingCall, digit: str, duration_ms: int) -> None:
        call = self.calls.get(sip_call.call_id)
        if call is not None:
            call.dtmf(digit, duration_ms, "sip_info")

    def _transfer_progress(self, call_id: str, status: int, reason: str) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            call.transfer_progress(status, reason)

    async def _send_in_dialog(
        self, call: IncomingCall, method: str, headers: dict[str, str], body: str
    ) -> object:
        assert self.sip is not None
        return await self.sip.send_in_dialog(call, method, headers, body)


async def _noop() -> None:
    return None


def build_app(settings: MediaSettings, registry: CollectorRegistry = REGISTRY) -> ServiceApp:
    gateway = MediaGateway(settings, registry)
    routes = gateway.trunks.routes(settings.admin_token_file)
    if gateway.webrtc is not None:
        routes += gateway.webrtc.routes()
    return ServiceApp(
        name=SERVICE_NAME,
        settings=settings,
        readiness_checks={"sip": gateway.ready},
        on_startup=[gateway.start],
        on_drain=[gateway.drain],
        on_shutdown=[gateway.stop],
        http_routes=routes,
        # RTP is thousands of datagrams a second: libuv's loop handles them for ~17 % less CPU
        # per call than asyncio's selector loop (bench/media.py measures both in one run).
        loop_factory=uvloop.new_event_loop if settings.event_loop == "uvloop" else None,
    )
