"""One call through the gateway: its state, what happens to it while it runs, and its end.

Lifecycle: INVITE admitted (its SDP offer read) -> 180 -> speech stream opened (its replica
endpoint is known) -> 200 with the SDP answer -> CallStarted to the runtime -> audio flows both
ways -> ended by BYE from either side, CANCEL, transfer, ACK or session timeout, a runtime
hangup, drain, or the speech stream failing and not coming back in time. Whatever ends it,
:meth:`MediaCall.end` runs once: RTP closed (its port rested and returned), speech stream
half-closed, CallEnded sent with the reason, metrics and a summary log line written.

The jobs around it have their own modules: :mod:`.answer` (set-up), :mod:`.renegotiate`
(re-INVITEs and hold), :mod:`.keys` (DTMF), :mod:`.transfer` (REFER), :mod:`.speech_restore`
(the speech stream failing mid-call).

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

from aiosipua import IncomingCall, SipRequest
from opentelemetry import trace
from voicetyped.service import tracing
from voicetyped.service.logs import get_logger, session_context
from voicetyped.v1 import runtime_pb2

from voicetyped_media.call import answer, renegotiate, speech_restore
from voicetyped_media.call.keys import KeyRelay
from voicetyped_media.call.transfer import BlindTransfer, SendInDialog
from voicetyped_media.rtp.pacer import FRAME_S, Pacer, Playout
from voicetyped_media.rtp.ports import PortPool
from voicetyped_media.rtp.srtp import SrtpPolicy
from voicetyped_media.rtp.stream import MediaStream
from voicetyped_media.runtime_link import RuntimeLink
from voicetyped_media.sdp import Negotiated, Offer, SdpError
from voicetyped_media.sip.server import refuse
from voicetyped_media.speech_audio import SpeechAudioStream

if TYPE_CHECKING:
    import grpc

    from voicetyped_media.metrics import MediaMetrics

log = get_logger("voicetyped.media.call")
tracer = tracing.tracer("voicetyped.media")

ENDED = runtime_pb2.CallEnded
Reason: TypeAlias = runtime_pb2.CallEnded.Reason.ValueType
MAX_HELD_PLAYBACK_FRAMES = 1500  # 30 s of bot audio kept while the caller holds


def session_id_for(call: IncomingCall) -> str:
    return sip_session_id(call.call_id, call.dialog.local_tag)


def sip_session_id(call_id: str, local_tag: str) -> str:
    """The session id of the SIP dialog with this Call-ID and our (the answerer's) To-tag: the
    same on every replica, and a caller can work it out from its own side of the dialog."""
    digest = hashlib.sha256(f"{call_id}\0{local_tag}".encode()).hexdigest()
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
    speech_restore_s: float = 10.0
    """How long a failed speech stream may take to reopen before the call is hung up."""
    srtp: SrtpPolicy = "optional"
    """The call's SRTP policy (its dialog's, else the deployment's)."""
    encrypted_signalling: bool = False
    """The INVITE came over TLS (so an SDES key in the SDP was not sent in clear)."""
    retry_after_s: int = 5
    """Retry-After of a 503 (speech at capacity)."""
    speech_attempts: int = 3
    """Speech replicas a new call's stream is tried on when one is at capacity."""


@dataclass
class Services:
    """What a call needs from the process (shared by all calls)."""

    ports: PortPool
    pacer: Pacer
    speech: grpc.aio.Channel
    runtime: grpc.aio.Channel
    metrics: MediaMetrics
    send_in_dialog: SendInDialog


@dataclass
class MediaCall:
    sip: IncomingCall
    offer: Offer | None
    """The INVITE's SDP offer as read at admission; None for a delayed offer."""
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
    span: trace.Span | None = None
    trace: tracing.Context | None = None
    awaiting_answer: asyncio.Future[SipRequest] | None = None
    """Our 2xx carried an offer (delayed-offer INVITE): its ACK brings the answer."""
    reoffered: bool = False
    """Our 2xx to an offerless re-INVITE carried the session: its ACK brings the answer."""
    unopened: tuple[socket.socket, socket.socket] | None = None
    """The RTP/RTCP sockets acquired and not yet handed to a MediaStream."""
    keys: KeyRelay = field(init=False)
    _transfer: BlindTransfer = field(init=False)
    _started: float = field(default_factory=time.monotonic)
    _playback_first_chunk: dict[str, int] = field(default_factory=dict)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _restoring: bool = False

    def __post_init__(self) -> None:
        self.session_id = session_id_for(self.sip)
        self.keys = KeyRelay(
            self.session_id,
            self.services.metrics,
            self.call_time_ms,
            lambda received: self._to_runtime(dtmf=received),
        )
        self._transfer = BlindTransfer(
            self.sip,
            self.services.send_in_dialog,
            lambda ok: self.services.metrics.transfers.labels("ok" if ok else "failed").inc(),
            lambda result: self._to_runtime(command_result=result),
            lambda: self._spawn(self._leave(ENDED.REASON_TRANSFERRED, 200)),
        )

    def call_time_ms(self) -> int:
        return round((time.monotonic() - self._started) * 1000)

    def _to_runtime(self, **message: Any) -> None:
        if self.runtime is not None:
            self.runtime.send(**message)

    # -- from the SIP layer ------------------------------------------------------------------

    async def answer(self) -> None:
        """Ring, open the media and the speech stream, answer, hand the call to the runtime."""
        with session_context(self.session_id):
            try:
                await answer.answer(self)
            except Exception:
                log.exception("call set-up failed")
                self.reject(500, "Server Internal Error")
                await self.end(ENDED.REASON_FAILED, 500)

    def acked(self, ack: SipRequest) -> None:
        """An ACK of our 2xx; when that 2xx had an offer (a delayed-offer INVITE or an
        offerless re-INVITE), it carries the answer."""
        with session_context(self.session_id):
            if self.awaiting_answer is not None:
                if not self.awaiting_answer.done():
                    self.awaiting_answer.set_result(ack)
                return
            renegotiate.take_answer(self, ack)

    def reinvite(self, request: SipRequest) -> None:
        """A re-INVITE (hold, resume, new address or codec): answer and apply it."""
        with session_context(self.session_id):
            renegotiate.reinvite(self, request)

    def dtmf(self, digit: str, duration_ms: int, source: str) -> None:
        """A key press the SIP layer received (SIP INFO)."""
        self.keys.key(digit, duration_ms, source)

    def transfer_progress(self, status: int, reason: str) -> None:
        """A NOTIFY with the transfer's progress (message/sipfrag)."""
        with session_context(self.session_id):
            self._transfer.progress(status, reason)

    def remote_ended(self, reason: Reason, code: int) -> None:
        """BYE or CANCEL from the caller, or a SIP timeout: end without signalling."""
        self._spawn(self.end(reason, code))

    def reject(
        self, status: int, reason: str, warning: str = "", headers: dict[str, str] | None = None
    ) -> None:
        """Refuse the call while it is not answered yet."""
        if self.answered:
            return
        with contextlib.suppress(Exception):
            refuse(self.sip, status, reason, warning, headers)
        self.sip.dialog.terminate()

    # -- media -------------------------------------------------------------------------------

    def new_speech_stream(self, *, resumed: bool = False) -> SpeechAudioStream:
        """The call's ``StreamAudio`` (not opened yet), at the playback rate of its codec;
        ``resumed``: the call runs already (its stream moves), no capacity check applies."""
        assert self.stream is not None
        return SpeechAudioStream(
            self.services.speech,
            self.session_id,
            self.stream.codec.pcm_rate,
            self.on_playback,
            self.on_stop,
            resumed=resumed,
            on_forwarded=self.services.metrics.uplink_delay.observe,
            on_failed=self.speech_failed,
            metadata=tracing.metadata(self.trace),
        )

    def speech_failed(self, code: str) -> None:
        """The speech stream broke while the call is up: reopen it or hang up."""
        if self.ended or self._restoring:
            return
        self._restoring = True
        self._spawn(self._restore_speech())

    async def _restore_speech(self) -> None:
        try:
            await speech_restore.restore(self)
        finally:
            self._restoring = False

    def on_audio(self, pcm: bytes, start_ms: int) -> None:
        if self.speech is not None:
            self.speech.send(pcm, start_ms)
        self.keys.audio(pcm, start_ms)

    def on_playback(self, request_id: str, pcm: bytes, last: bool) -> None:
        if self.playout is None:
            return
        if request_id not in self._playback_first_chunk:
            self._playback_first_chunk[request_id] = tracing.wall_ns()
        if self.held and self.playout.queued_frames > MAX_HELD_PLAYBACK_FRAMES:
            self.services.metrics.playback_dropped.inc()
            return
        self.playout.add(request_id, pcm, last)

    def first_rtp(self, request_id: str) -> None:
        received = self._playback_first_chunk.get(request_id)
        if received is not None:
            tracing.record(tracer, "media.first_rtp", self.trace, received, request_id=request_id)

    def on_stop(self, request_id: str) -> None:
        if self.playout is not None:
            dropped = self.playout.flush(request_id)
            self.services.metrics.barge_in_flushed.inc(dropped)

    # -- commands from the runtime -----------------------------------------------------------

    def on_command(self, command: runtime_pb2.CallCommand) -> None:
        kind = command.WhichOneof("command")
        if kind == "hangup":
            self._spawn(self._hangup_command(command))
        elif kind == "transfer":
            self._spawn(self._transfer_command(command))

    def on_runtime_refused(self, reason: str) -> None:
        log.warning("runtime refused the call; hanging up", reason=reason)
        # The caller learns why from the BYE (RFC 3326): Q.850 21 is "call rejected".
        text = " ".join(f"runtime refused the call: {reason}".split())[:200]
        text = text.replace("\\", "/").replace('"', "'")
        self._spawn(self._leave(ENDED.REASON_FAILED, 500, f'Q.850;cause=21;text="{text}"'))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hangup_command(self, command: runtime_pb2.CallCommand) -> None:
        with session_context(self.session_id):
            await self._let_playout_finish()
            await self.hang_up()
            self._to_runtime(
                command_result=runtime_pb2.CommandResult(
                    command_id=command.command_id, success=True, sip_status=200
                )
            )
            await self.end(ENDED.REASON_BOT_HANGUP, command.hangup.reason_code or 16)

    async def _transfer_command(self, command: runtime_pb2.CallCommand) -> None:
        with session_context(self.session_id):
            await self._let_playout_finish()
            await self._transfer.start(command)

    async def _let_playout_finish(self) -> None:
        """The caller hears the end of the last prompt (:meth:`Playout.let_finish`)."""
        if self.playout is None:
            return
        queued_s = self.playout.queued_frames * FRAME_S
        if not await self.playout.let_finish():
            log.warning("playout not finished before leaving the call", queued_s=queued_s)

    # -- ending ------------------------------------------------------------------------------

    async def hang_up(self, reason: str = "") -> None:
        """Send BYE (answered calls; with a ``Reason`` header, RFC 3326, when given) and wait
        for its response (bounded)."""
        if not self.answered or self.ended:
            return
        await self.services.send_in_dialog(
            self.sip, "BYE", {"Reason": reason} if reason else {}, ""
        )
        self.sip.dialog.terminate()

    async def _leave(self, reason: Reason, code: int, bye_reason: str = "") -> None:
        await self.hang_up(bye_reason)
        await self.end(reason, code)

    async def end(self, reason: Reason, code: int = 0) -> None:
        if self.ended:
            return
        self.ended = True
        with session_context(self.session_id):
            if self.playout is not None:
                self.services.pacer.playouts.discard(self.playout)
                self.playout.flush()  # nothing more goes out (and nobody waits for it)
            report = None
            self.keys.flush()  # a key still held when the call ends
            if self.awaiting_answer is not None and not self.awaiting_answer.done():
                self.awaiting_answer.set_exception(SdpError("the call ended"))
            if self.unopened is not None:  # acquired, never handed to a MediaStream
                for sock in self.unopened:
                    sock.close()
                self.unopened = None
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
            if self.span is not None:
                self.span.set_attribute("reason", ENDED.Reason.Name(reason))
                self.span.end()
            self.on_ended(self)
