"""One call through the gateway: its SIP dialog, RTP stream, playout, and the two gRPC streams.

Lifecycle: INVITE admitted -> 180 -> speech stream opened (its replica endpoint is known) ->
200 with the SDP answer -> CallStarted to the runtime -> audio flows both ways -> ended by BYE
from either side, CANCEL, transfer, ACK or session timeout, a runtime hangup, or drain. Whatever
ends it, :meth:`MediaCall.end` runs once: RTP closed (its port rested and returned), speech stream
half-closed, CallEnded sent with the reason, metrics and a summary log line written.

The session id is ``<Call-ID>`` hashed with the local tag (unique per dialog, stable across a
runtime reattach, safe to log).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from aiosipua import IncomingCall, SipRequest, parse_sdp
from opentelemetry import trace
from voicetyped.service import tracing
from voicetyped.service.logs import get_logger, session_context
from voicetyped.v1 import common_pb2, runtime_pb2

from voicetyped_media.codecs.codec import open_codec
from voicetyped_media.dtmf.inband import InbandDetector
from voicetyped_media.rtp.pacer import FRAME_S, Pacer, Playout
from voicetyped_media.rtp.ports import PortPool
from voicetyped_media.rtp.stream import MediaStream
from voicetyped_media.runtime_link import RuntimeLink
from voicetyped_media.sdp import Negotiated, SdpError, accept_answer, make_offer, negotiate
from voicetyped_media.sip.server import refuse
from voicetyped_media.speech_audio import SpeechAudioStream

if TYPE_CHECKING:
    import grpc

    from voicetyped_media.metrics import MediaMetrics

log = get_logger("voicetyped.media.call")
tracer = tracing.tracer("voicetyped.media")

DTMF_SOURCE = {
    "rfc4733": runtime_pb2.DtmfReceived.SOURCE_RFC4733,
    "sip_info": runtime_pb2.DtmfReceived.SOURCE_SIP_INFO,
    "inband": runtime_pb2.DtmfReceived.SOURCE_INBAND,
}
ENDED = runtime_pb2.CallEnded
Reason: TypeAlias = runtime_pb2.CallEnded.Reason.ValueType
MAX_HELD_PLAYBACK_FRAMES = 1500  # 30 s of bot audio kept while the caller holds
MAX_PLAYOUT_WAIT_S = 10.0  # the longest a BYE or REFER waits for queued audio to go out
# After the last packet of a prompt, before BYE/REFER: the caller's jitter buffer still holds
# up to a few frames, which a phone drops when the BYE arrives right behind them.
PLAYOUT_TAIL_S = 0.2
ACK_TIMEOUT_S = 32.0  # 64 x T1: how long a delayed offer's answer (the ACK) may take


def session_id_for(call: IncomingCall) -> str:
    digest = hashlib.sha256(f"{call.call_id}\0{call.dialog.local_tag}".encode()).hexdigest()
    return f"sip-{digest[:24]}"


@dataclass
class CallConfig:
    local_ip: str
    advertised_ip: str
    codecs: tuple[str, ...]
    inband_dtmf: str  # auto | on | off
    passed_headers: tuple[str, ...]
    dialog: str
    symmetric_rtp: bool
    ring_ms: int = 0


@dataclass
class Services:
    """What a call needs from the process (shared by all calls)."""

    ports: PortPool
    pacer: Pacer
    speech: grpc.aio.Channel
    runtime: grpc.aio.Channel
    metrics: MediaMetrics
    send_in_dialog: Callable[[IncomingCall, str, dict[str, str], str], Awaitable[Any]]
    """``(call, method, headers, body)`` -> final response or None: an in-dialog request."""


@dataclass
class MediaCall:
    sip: IncomingCall
    config: CallConfig
    services: Services
    on_ended: Callable[[MediaCall], None]
    session_id: str = ""
    negotiated: Negotiated | None = None
    stream: MediaStream | None = None
    playout: Playout | None = None
    speech: SpeechAudioStream | None = None
    runtime: RuntimeLink | None = None
    port: int | None = None
    held: bool = False
    answered: bool = False
    ended: bool = False
    transfer_command: str = ""
    _inband: InbandDetector | None = None
    _started: float = field(default_factory=time.monotonic)
    _span: trace.Span | None = None
    _trace: tracing.Context | None = None
    _playback_first_chunk: dict[str, int] = field(default_factory=dict)
    _end_task: asyncio.Task[None] | None = None
    _awaiting_answer: asyncio.Future[SipRequest] | None = None
    _unopened: tuple[socket.socket, socket.socket] | None = None
    _reoffered: bool = False
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.session_id = session_id_for(self.sip)

    def call_time_ms(self) -> int:
        return round((time.monotonic() - self._started) * 1000)

    # -- set-up ------------------------------------------------------------------------------

    async def answer(self) -> None:
        """Ring, open the media and the speech stream, answer, hand the call to the runtime."""
        with session_context(self.session_id):
            try:
                await self._answer()
            except Exception:
                log.exception("call set-up failed")
                self._reject(500, "Server Internal Error")
                await self.end(ENDED.REASON_FAILED, 500)

    async def _answer(self) -> None:
        port, rtp_sock, rtcp_sock = self.services.ports.acquire()
        self.port = port
        self._unopened = (rtp_sock, rtcp_sock)
        offer = self.sip.invite.text
        if not offer.strip():
            await self._answer_delayed_offer(port, rtp_sock, rtcp_sock)
            return
        try:
            negotiated = negotiate(offer, self.config.advertised_ip, port, self.config.codecs)
        except SdpError as exc:  # checked at admission; a race with config only
            self._reject(488, "Not Acceptable Here", str(exc))
            await self.end(ENDED.REASON_FAILED, 488)
            return
        self._start_trace(negotiated)
        self.sip.ringing()
        endpoint = await self._open_media(negotiated, rtp_sock, rtcp_sock)
        if endpoint is None:
            self._reject(503, "Service Unavailable", "speech recognition unavailable")
            await self.end(ENDED.REASON_FAILED, 503)
            return
        if self.ended:  # CANCEL while we were setting up
            return
        if self.config.ring_ms:
            await asyncio.sleep(self.config.ring_ms / 1000)
            if self.ended:
                return
        self.sip.accept(parse_sdp(negotiated.answer))
        self.answered = True
        self._start_call(negotiated, endpoint)

    async def _answer_delayed_offer(
        self, port: int, rtp_sock: socket.socket, rtcp_sock: socket.socket
    ) -> None:
        """An INVITE without SDP: our offer in the 200, the caller's answer in the ACK.

        The media and speech stream open once the answer names the codec; if the answer is
        missing or unusable (or speech is unavailable by then) the call is ended with a BYE,
        as RFC 3261 §13.3.1.4 has a UAS do when the ACK's answer cannot be used."""
        self._start_trace(None)
        self.sip.ringing()
        if self.config.ring_ms:
            await asyncio.sleep(self.config.ring_ms / 1000)
        if self.ended:
            return
        self._awaiting_answer = asyncio.get_running_loop().create_future()
        ours = make_offer(self.config.advertised_ip, port, self.config.codecs)
        self.sip.accept(parse_sdp(ours))
        self.answered = True
        try:
            async with asyncio.timeout(ACK_TIMEOUT_S):
                ack = await self._awaiting_answer
            if not ack.body.strip():
                raise SdpError("the ACK carried no SDP answer")
            negotiated = accept_answer(
                ack.text, self.config.advertised_ip, port, self.config.codecs
            )
        except (SdpError, TimeoutError) as exc:
            if not self.ended:
                detail = str(exc) or "no SDP answer in the ACK"
                log.info("delayed offer: no usable answer; hanging up", detail=detail)
                await self.hang_up()
                await self.end(ENDED.REASON_FAILED, 488)
            return
        finally:
            self._awaiting_answer = None
        if self.ended:
            return
        if self._span is not None:
            self._span.set_attribute("codec", negotiated.codec.name)
        endpoint = await self._open_media(negotiated, rtp_sock, rtcp_sock)
        if endpoint is None:
            await self.hang_up()
            await self.end(ENDED.REASON_FAILED, 503)
            return
        if not self.ended:
            self._start_call(negotiated, endpoint)

    def acked(self, ack: SipRequest) -> None:
        """An ACK of our 2xx; when that 2xx had an offer (a delayed-offer INVITE or an
        offerless re-INVITE), it carries the answer."""
        with session_context(self.session_id):
            if self._awaiting_answer is not None:
                if not self._awaiting_answer.done():
                    self._awaiting_answer.set_result(ack)
                return
            if self._reoffered and self.stream is not None and self.port is not None:
                self._reoffered = False
                try:
                    negotiated = accept_answer(
                        ack.text, self.config.advertised_ip, self.port, self.config.codecs
                    )
                except SdpError as exc:
                    log.info("re-INVITE answer unusable; session unchanged", detail=str(exc))
                    return
                self._apply(negotiated)

    def _start_trace(self, negotiated: Negotiated | None) -> None:
        # The call's trace: the speech gateway and the runtime record its stages under it.
        attributes = {"session_id": self.session_id, "sip.call_id": self.sip.call_id}
        if negotiated is not None:
            attributes["codec"] = negotiated.codec.name
        self._span = tracer.start_span("call", attributes=attributes)
        self._trace = trace.set_span_in_context(self._span)

    async def _open_media(
        self, negotiated: Negotiated, rtp_sock: socket.socket, rtcp_sock: socket.socket
    ) -> str | None:
        """Start RTP and open the speech stream: its replica's endpoint, None if unavailable."""
        m = self.services.metrics
        self.negotiated = negotiated
        codec = open_codec(negotiated.codec)
        self.stream = MediaStream(
            codec,
            negotiated.remote,
            negotiated.telephone_event,
            self._on_audio,
            lambda digit, ms: self.dtmf(digit, ms, "rfc4733"),
            self.call_time_ms,
            symmetric=self.config.symmetric_rtp,
        )
        self._unopened = None
        await self.stream.start(rtp_sock, rtcp_sock)
        inband = self.config.inband_dtmf
        if inband == "on" or (inband == "auto" and negotiated.telephone_event is None):
            self._inband = InbandDetector(16000)
        self.speech = SpeechAudioStream(
            self.services.speech,
            self.session_id,
            codec.pcm_rate,
            self._on_playback,
            self._on_stop,
            on_forwarded=m.uplink_delay.observe,
            metadata=tracing.metadata(self._trace),
        )
        try:
            return await self.speech.open()
        except Exception as exc:
            log.warning("no speech stream; refusing the call", error=str(exc))
            m.refused.labels("speech_unavailable").inc()
            return None

    def _start_call(self, negotiated: Negotiated, endpoint: str) -> None:
        """The call is answered and its media flows: play out, and hand it to the runtime."""
        assert self.stream is not None
        self.playout = Playout(self.stream, on_started=self._first_rtp)
        self.playout.held = negotiated.on_hold
        self.held = negotiated.on_hold
        self.services.pacer.playouts.add(self.playout)
        self.services.metrics.calls_answered.labels(negotiated.codec.name).inc()
        self.runtime = RuntimeLink(
            self.services.runtime,
            self.session_id,
            runtime_pb2.CallStarted(
                caller=self._caller_info(),
                called_uri=self.sip.invite.uri,
                speech_endpoint=endpoint,
                dialog=self.config.dialog,
            ),
            self._on_command,
            self._on_runtime_refused,
            metadata=tracing.metadata(self._trace),
        )
        self.runtime.start()
        log.info(
            "call answered",
            codec=negotiated.codec.name,
            telephone_event=negotiated.telephone_event,
            remote=f"{negotiated.remote[0]}:{negotiated.remote[1]}",
            rtp_port=self.port,
            speech=endpoint,
        )

    def _caller_info(self) -> common_pb2.CallerInfo:
        invite = self.sip.invite
        identity = invite.get_header("p-asserted-identity") or invite.get_header("from") or ""
        caller_id = caller_id_from(identity)
        wanted = {h.lower() for h in self.config.passed_headers}
        headers = [
            common_pb2.SipHeader(name=name, value=value)
            for name, values in invite.headers.items()
            if name.lower() in wanted
            for value in values
        ]
        return common_pb2.CallerInfo(caller_id=caller_id, sip_headers=headers)

    def _reject(self, status: int, reason: str, warning: str = "") -> None:
        if self.answered:
            return
        with contextlib.suppress(Exception):
            refuse(self.sip, status, reason, warning)
        self.sip.dialog.terminate()

    # -- media callbacks ---------------------------------------------------------------------

    def _on_audio(self, pcm: bytes, start_ms: int) -> None:
        if self.speech is not None:
            self.speech.send(pcm, start_ms)
        if self._inband is not None:
            for tone in self._inband.push(pcm, start_ms):
                self.dtmf(tone.digit, tone.duration_ms, "inband", tone.start_ms)

    def _on_playback(self, request_id: str, pcm: bytes, last: bool) -> None:
        if self.playout is None:
            return
        if request_id not in self._playback_first_chunk:
            self._playback_first_chunk[request_id] = tracing.wall_ns()
        if self.held and self.playout.queued_frames > MAX_HELD_PLAYBACK_FRAMES:
            self.services.metrics.playback_dropped.inc()
            return
        self.playout.add(request_id, pcm, last)

    def _first_rtp(self, request_id: str) -> None:
        received = self._playback_first_chunk.get(request_id)
        if received is not None:
            tracing.record(tracer, "media.first_rtp", self._trace, received, request_id=request_id)

    def _on_stop(self, request_id: str) -> None:
        if self.playout is not None:
            dropped = self.playout.flush(request_id)
            self.services.metrics.barge_in_flushed.inc(dropped)

    def dtmf(self, digit: str, duration_ms: int, source: str, at_ms: int | None = None) -> None:
        self.services.metrics.dtmf.labels(source).inc()
        log.info(
            "dtmf", digit=digit, duration_ms=duration_ms, source=source, session_id=self.session_id
        )
        if self.runtime is not None:
            self.runtime.send(
                dtmf=runtime_pb2.DtmfReceived(
                    dtmf=common_pb2.DtmfEvent(digit=digit, duration_ms=duration_ms),
                    source=DTMF_SOURCE[source],
                    at_ms=at_ms if at_ms is not None else self.call_time_ms(),
                )
            )

    # -- in-dialog changes -------------------------------------------------------------------

    def reinvite(self, request: SipRequest) -> None:
        """A re-INVITE (hold, resume, new address or codec): answer and apply it."""
        with session_context(self.session_id):
            if self.stream is None or self.port is None:
                self.sip.reject(491, "Request Pending")
                return
            if not request.body.strip() and self.negotiated is not None:
                # Offerless re-INVITE: offer the session as it is (the answer comes in the ACK).
                self._reoffered = True
                self.sip.accept(parse_sdp(self.negotiated.answer))
                return
            try:
                negotiated = negotiate(
                    request.text, self.config.advertised_ip, self.port, self.config.codecs
                )
            except SdpError as exc:
                log.info("re-INVITE refused", detail=str(exc))
                self.sip.reject(488, "Not Acceptable Here")
                self.sip.dialog.confirm()  # the call goes on as it was
                return
            self._apply(negotiated)
            self.sip.accept(parse_sdp(negotiated.answer))

    def _apply(self, negotiated: Negotiated) -> None:
        """Take a renegotiated session: codec, remote address, telephone-event, hold."""
        assert self.stream is not None
        previous = self.negotiated
        self.negotiated = negotiated
        if previous is not None and negotiated.codec != previous.codec:
            self.stream.codec = open_codec(negotiated.codec)
        if previous is None or negotiated.remote != previous.remote:
            self.stream.remote = negotiated.remote
            self.stream.remote_rtcp = (negotiated.remote[0], negotiated.remote[1] + 1)
        self.stream.telephone_event = negotiated.telephone_event
        self._set_held(negotiated.on_hold)

    def _set_held(self, held: bool) -> None:
        if held == self.held:
            return
        self.held = held
        if self.playout is not None:
            self.playout.held = held
        if self.stream is not None:
            self.stream.flush()
        log.info("call held" if held else "call resumed")
        if self.runtime is not None:
            if held:
                self.runtime.send(held=runtime_pb2.CallHeld())
            else:
                self.runtime.send(resumed=runtime_pb2.CallResumed())

    # -- commands from the runtime ---------------------------------------------------------

    def _on_command(self, command: runtime_pb2.CallCommand) -> None:
        kind = command.WhichOneof("command")
        if kind == "hangup":
            self._spawn(self._hangup_command(command))
        elif kind == "transfer":
            self._spawn(self._transfer(command))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hangup_command(self, command: runtime_pb2.CallCommand) -> None:
        with session_context(self.session_id):
            await self._let_playout_finish()
            await self.hang_up()
            if self.runtime is not None:
                self.runtime.send(
                    command_result=runtime_pb2.CommandResult(
                        command_id=command.command_id, success=True, sip_status=200
                    )
                )
            await self.end(ENDED.REASON_BOT_HANGUP, command.hangup.reason_code or 16)

    async def _let_playout_finish(self) -> None:
        """The caller hears the end of the last prompt: the speech gateway reports a prompt
        played once it has handed its audio over, and part of it is still queued here
        (more when this process runs late). Bounded: a BYE is never held up for long."""
        if self.playout is None:
            return
        queued_s = self.playout.queued_frames * FRAME_S
        if not await self.playout.drain(min(queued_s + 1.0, MAX_PLAYOUT_WAIT_S)):
            log.warning("playout not finished before leaving the call", queued_s=queued_s)
        elif queued_s > 0:
            await asyncio.sleep(PLAYOUT_TAIL_S)

    async def hang_up(self) -> None:
        """Send BYE (answered calls) and wait for its response (bounded)."""
        if not self.answered or self.ended:
            return
        await self.services.send_in_dialog(self.sip, "BYE", {}, "")
        self.sip.dialog.terminate()

    async def _transfer(self, command: runtime_pb2.CallCommand) -> None:
        """Blind transfer (RFC 3515/5589): REFER the caller to the target, follow NOTIFYs."""
        with session_context(self.session_id):
            await self._let_playout_finish()
            target = command.transfer.target_uri
            self.transfer_command = command.command_id
            response = await self.services.send_in_dialog(
                self.sip,
                "REFER",
                {"Refer-To": f"<{target}>", "Referred-By": f"<{self.sip.callee}>"},
                "",
            )
            status = getattr(response, "status_code", 0)
            if not 200 <= status < 300:
                self._transfer_done(status or 408, f"REFER answered {status or 'never'}")

    def transfer_progress(self, status: int, reason: str) -> None:
        """A NOTIFY with the transfer's progress (message/sipfrag)."""
        with session_context(self.session_id):
            log.info("transfer progress", sip_status=status, reason=reason)
            if status >= 200:
                self._transfer_done(status, reason)

    def _transfer_done(self, status: int, reason: str) -> None:
        command, self.transfer_command = self.transfer_command, ""
        if not command:
            return
        ok = 200 <= status < 300
        self.services.metrics.transfers.labels("ok" if ok else "failed").inc()
        if self.runtime is not None:
            self.runtime.send(
                command_result=runtime_pb2.CommandResult(
                    command_id=command, success=ok, sip_status=status, detail=reason
                )
            )
        if ok:  # the caller is now talking to the target: leave the call (RFC 5589 §6.1)
            self._spawn(self._leave_after_transfer())

    async def _leave_after_transfer(self) -> None:
        await self.hang_up()
        await self.end(ENDED.REASON_TRANSFERRED, 200)

    def _on_runtime_refused(self, reason: str) -> None:
        log.warning("runtime refused the call; hanging up", reason=reason)
        self._spawn(self._refused())

    async def _refused(self) -> None:
        await self.hang_up()
        await self.end(ENDED.REASON_FAILED, 500)

    # -- ending ------------------------------------------------------------------------------

    def remote_ended(self, reason: Reason, code: int) -> None:
        """BYE or CANCEL from the caller, or a SIP timeout: end without signalling."""
        self._spawn(self.end(reason, code))

    async def end(self, reason: Reason, code: int = 0) -> None:
        if self.ended:
            return
        self.ended = True
        with session_context(self.session_id):
            if self.playout is not None:
                self.services.pacer.playouts.discard(self.playout)
                self.playout.flush()  # nothing more goes out (and nobody waits for it)
            report = None
            if self._inband is not None:  # a key still held when the call ends
                for key in self._inband.flush():
                    self.dtmf(key.digit, key.duration_ms, "inband", key.start_ms)
            if self._awaiting_answer is not None and not self._awaiting_answer.done():
                self._awaiting_answer.set_exception(SdpError("the call ended"))
            if self._unopened is not None:  # acquired, never handed to a MediaStream
                for sock in self._unopened:
                    sock.close()
                self._unopened = None
            if self.stream is not None:
                await self.stream.close()
                report = self.stream.report()
            if self.port is not None:
                self.services.ports.release(self.port)
            if self.runtime is not None:
                await self.runtime.end(reason, code)
            if self.speech is not None:
                await self.speech.close()
            for task in list(self._tasks):
                if task is not asyncio.current_task():
                    task.cancel()
            m = self.services.metrics
            m.calls_ended.labels(ENDED.Reason.Name(reason).removeprefix("REASON_").lower()).inc()
            if report is not None:
                m.observe_stream(report)
            log.info(
                "call ended",
                reason=ENDED.Reason.Name(reason),
                code=code,
                seconds=round(time.monotonic() - self._started, 1),
                packets_received=report.packets_received if report else 0,
                packets_lost=report.packets_lost if report else 0,
                late=report.late if report else 0,
                jitter_ms=round(report.jitter_ms, 1) if report else 0,
                uplink_dropped=self.speech.dropped if self.speech else 0,
            )
            if self._span is not None:
                self._span.set_attribute("reason", ENDED.Reason.Name(reason))
                self._span.end()
            self.on_ended(self)


def caller_id_from(header: str) -> str:
    """The user part of a From / P-Asserted-Identity URI, or the whole URI without a user."""
    value = header.strip()
    if "<" in value and ">" in value:
        value = value[value.index("<") + 1 : value.index(">")]
    value = value.split(";", 1)[0].strip()
    scheme, _, rest = value.partition(":")
    if scheme.lower() == "tel":
        return rest
    user, at, _host = rest.partition("@")
    return user if at and user else value
