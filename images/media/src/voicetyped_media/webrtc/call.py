"""One browser call: an aiortc peer connection wired into the same pipeline as a SIP call.

Lifecycle: offer checked (:mod:`.offer`) -> speech stream opened (503 if unavailable) ->
answer (ICE candidates gathered: no trickle) -> ICE and DTLS connect -> CallStarted to the
runtime -> audio both ways -> ended by the page (DELETE, or the peer connection closing), a
runtime hangup, drain, the browser disappearing (ICE consent fails: ``connectionState``
"failed"), or never connecting within ``CONNECT_TIMEOUT_S``. :meth:`WebRtcCall.end` runs once:
playout stopped, CallEnded to the runtime, speech stream half-closed, peer connection closed,
metrics and a summary log line.

Audio in: the browser's Opus (48 kHz) decoded by aiortc, resampled by PyAV to 16 kHz mono s16
and sent up the call's ``StreamAudio``. Audio out: the call's playout (the process's 20 ms
clock, as for SIP) into :class:`.outbound.OutboundTrack`. Keys: digits on the data channel
``dtmf`` (one message per key) go to the runtime as SIP INFO-like key presses would.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import av
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.stats import RTCTransportStats
from opentelemetry import trace
from voicetyped.service import tracing
from voicetyped.service.logs import get_logger, session_context
from voicetyped.v1 import common_pb2, runtime_pb2

from voicetyped_media.call.keys import KeyRelay
from voicetyped_media.call.media_call import Services
from voicetyped_media.rtp.pacer import Playout
from voicetyped_media.runtime_link import RuntimeLink
from voicetyped_media.speech_audio import (
    SpeechAtCapacity,
    SpeechAudioStream,
    SpeechUnavailable,
    open_new_call,
)
from voicetyped_media.webrtc.outbound import RATE, OutboundTrack

log = get_logger("voicetyped.media.webrtc")
tracer = tracing.tracer("voicetyped.media")

ENDED = runtime_pb2.CallEnded
Reason: TypeAlias = runtime_pb2.CallEnded.Reason.ValueType
CONNECT_TIMEOUT_S = 20.0
"""From the answer to ICE and DTLS connected; beyond, the call is ended (FAILED, 408)."""
LIVENESS_POLL_S = 2.0
GONE_AFTER_SILENT_S = 10.0
"""DTLS closed after this long without a packet from the browser: it went away (ICE consent
expires after 6 unanswered checks 4-6 s apart), not hung up (a close_notify comes right
after its last packet; a browser sends RTCP every second or so while a call is up)."""
UPLINK_RATE = 16_000
REANCHOR_MS = 200
"""Caller audio arriving this much later than its sample count says (the page sent nothing
for a while, e.g. before it opened the microphone) restarts the audio clock at arrival."""
DIGITS = frozenset("0123456789*#ABCD")
KEY_MS = 100  # a key press on the page has no duration: the usual tone length
OPUS = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.name.lower() == "opus"]


def new_session_id() -> str:
    return f"webrtc-{secrets.token_hex(12)}"


class WebRtcCall:
    def __init__(
        self,
        remote_ip: str,
        dialog: str,
        services: Services,
        on_ended: Callable[[WebRtcCall], None],
    ) -> None:
        self.session_id = new_session_id()
        self.remote_ip = remote_ip
        self.dialog = dialog
        self.services = services
        self._on_ended = on_ended
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # host candidates only
        self.outbound = OutboundTrack()
        self.playout = Playout(self.outbound, on_started=self.first_rtp)
        self.speech: SpeechAudioStream | None = None
        self.runtime: RuntimeLink | None = None
        self.keys = KeyRelay(
            self.session_id,
            services.metrics,
            self.call_time_ms,
            lambda received: self._to_runtime(dtmf=received),
        )
        self.span: trace.Span | None = None
        self.trace: tracing.Context | None = None
        self.connected = asyncio.Event()
        self._last_heard = time.monotonic()
        self.ended = False
        self.end_reason = ""
        self._started = time.monotonic()
        self._anchor_ms: int | None = None
        self._uplink_samples = 0
        self._playback_first_chunk: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)

    def call_time_ms(self) -> int:
        return round((time.monotonic() - self._started) * 1000)

    # -- set-up ------------------------------------------------------------------------------

    async def answer(self, offer_sdp: str, speech_attempts: int = 1) -> str:
        """Open the speech stream (on up to ``speech_attempts`` replicas while they are at
        capacity) and answer the (checked) offer: the answer SDP, with every host candidate.
        Raises :class:`SpeechUnavailable` (the call is ended then)."""
        self.span = tracer.start_span(
            "call",
            attributes={"session_id": self.session_id, "codec": "opus", "transport": "webrtc"},
        )
        self.trace = trace.set_span_in_context(self.span)
        try:
            await open_new_call(self._new_speech_stream, speech_attempts)
        except SpeechUnavailable as exc:
            log.warning("no speech stream; refusing the browser call", error=str(exc))
            capacity = isinstance(exc, SpeechAtCapacity)
            reason = "speech_capacity" if capacity else "speech_unavailable"
            self.services.metrics.refused.labels(reason).inc()
            await self.end(ENDED.REASON_FAILED, 503)
            raise
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "audio":
                transceiver.setCodecPreferences(OPUS)
                transceiver.sender.replaceTrack(self.outbound)
                transceiver.direction = "sendrecv"
                break
        await self.pc.setLocalDescription(await self.pc.createAnswer())  # gathers candidates
        self._spawn(self._connect_or_end())
        return self.pc.localDescription.sdp

    def _new_speech_stream(self) -> SpeechAudioStream:
        self.speech = SpeechAudioStream(
            self.services.speech,
            self.session_id,
            RATE,
            self.on_playback,
            self.on_stop,
            on_forwarded=self.services.metrics.uplink_delay.observe,
            on_failed=self._speech_failed,
            metadata=tracing.metadata(self.trace),
        )
        return self.speech

    async def _connect_or_end(self) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self.connected.wait()
        except TimeoutError:
            log.info("browser call never connected; ending it", session_id=self.session_id)
            await self.end(ENDED.REASON_FAILED, 408)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        with session_context(self.session_id):
            log.info("peer connection", state=state)
            if state == "connected" and not self.connected.is_set():
                self.connected.set()
                self._start_runtime()
                self._spawn(self._watch_liveness())
            elif state == "failed" and not self.ended:
                self._spawn(self.end(ENDED.REASON_FAILED, 408))
            elif state == "closed" and not self.ended:
                self._spawn(self._peer_closed())

    async def _peer_closed(self) -> None:
        """DTLS closed under us: the page closed the connection (its close_notify: the caller
        hung up), or the browser went away and ICE consent expired (it had sent nothing for
        half a minute)."""
        silent_s = time.monotonic() - self._last_heard
        if silent_s > GONE_AFTER_SILENT_S:
            log.info("browser gone (ICE consent expired)", silent_s=round(silent_s, 1))
            await self.end(ENDED.REASON_FAILED, 408)
        else:
            await self.end(ENDED.REASON_CALLER_HANGUP, 200)

    async def _watch_liveness(self) -> None:
        """Note when the browser last sent anything (media, RTCP, data channel)."""
        received = -1
        while not self.ended:
            for stats in (await self.pc.getStats()).values():
                if isinstance(stats, RTCTransportStats) and stats.packetsReceived != received:
                    received = stats.packetsReceived
                    self._last_heard = time.monotonic()
            await asyncio.sleep(LIVENESS_POLL_S)

    def _start_runtime(self) -> None:
        """ICE and DTLS are up: the bot may speak now (its first words are not lost)."""
        assert self.speech is not None
        self.services.pacer.playouts.add(self.playout)
        self.services.metrics.calls_answered.labels("opus").inc()
        self.runtime = RuntimeLink(
            self.services.runtime,
            self.session_id,
            runtime_pb2.CallStarted(
                caller=common_pb2.CallerInfo(caller_id=f"webrtc:{self.remote_ip}"),
                called_uri=f"webrtc:{self.dialog}",
                speech_endpoint=self.speech.endpoint,
                dialog=self.dialog,
            ),
            self.on_command,
            self._on_runtime_refused,
            metadata=tracing.metadata(self.trace),
        )
        self.runtime.start()
        log.info("browser call answered", remote=self.remote_ip, speech=self.speech.endpoint)

    # -- media -------------------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._receive(track))

    async def _receive(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=UPLINK_RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for out in resampler.resample(frame):  # type: ignore[arg-type]
                self._uplink(out.to_ndarray().tobytes())

    def _uplink(self, pcm: bytes) -> None:
        now = self.call_time_ms()
        at = (self._anchor_ms or 0) + self._uplink_samples * 1000 // UPLINK_RATE
        if self._anchor_ms is None or now - at > REANCHOR_MS:
            self._anchor_ms, self._uplink_samples, at = now, 0, now
        self._uplink_samples += len(pcm) // 2
        if self.speech is not None:
            self.speech.send(pcm, at)

    def on_playback(self, request_id: str, pcm: bytes, last: bool) -> None:
        if request_id not in self._playback_first_chunk:
            self._playback_first_chunk[request_id] = tracing.wall_ns()
        self.playout.add(request_id, pcm, last)

    def first_rtp(self, request_id: str) -> None:
        received = self._playback_first_chunk.get(request_id)
        if received is not None:
            tracing.record(tracer, "media.first_rtp", self.trace, received, request_id=request_id)

    def on_stop(self, request_id: str) -> None:
        dropped = self.playout.flush(request_id)
        self.services.metrics.barge_in_flushed.inc(dropped)

    def _speech_failed(self, code: str) -> None:
        # A browser call is short and re-placed with one click: no reopening (SIP calls do).
        self._spawn(self.end(ENDED.REASON_SPEECH_UNAVAILABLE, 41))

    # -- keys --------------------------------------------------------------------------------

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != "dtmf":
            log.info("data channel ignored", label=channel.label)
            return

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            digit = message.decode(errors="replace") if isinstance(message, bytes) else message
            if digit not in DIGITS:
                log.info("not a key; ignored", message=digit[:16])
                return
            self.keys.key(digit, KEY_MS, "webrtc")

    # -- commands from the runtime -----------------------------------------------------------

    def _to_runtime(self, **message: Any) -> None:
        if self.runtime is not None:
            self.runtime.send(**message)

    def on_command(self, command: runtime_pb2.CallCommand) -> None:
        kind = command.WhichOneof("command")
        if kind == "hangup":
            self._spawn(self._hangup_command(command))
        elif kind == "transfer":
            log.warning("transfer asked for a browser call; refused", session_id=self.session_id)
            self._to_runtime(
                command_result=runtime_pb2.CommandResult(
                    command_id=command.command_id,
                    success=False,
                    detail="a browser (WebRTC) call cannot be transferred",
                )
            )

    async def _hangup_command(self, command: runtime_pb2.CallCommand) -> None:
        with session_context(self.session_id):
            if not await self.playout.let_finish():
                log.warning("playout not finished before hanging up")
            self._to_runtime(
                command_result=runtime_pb2.CommandResult(
                    command_id=command.command_id, success=True
                )
            )
            await self.end(ENDED.REASON_BOT_HANGUP, command.hangup.reason_code or 16)

    def _on_runtime_refused(self, reason: str) -> None:
        log.warning("runtime refused the call; hanging up", reason=reason)
        self._spawn(self.end(ENDED.REASON_FAILED, 500))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- ending ------------------------------------------------------------------------------

    async def end(self, reason: Reason, code: int = 0) -> None:
        if self.ended:
            return
        self.ended = True
        self.end_reason = ENDED.Reason.Name(reason)
        with session_context(self.session_id):
            self.services.pacer.playouts.discard(self.playout)
            self.playout.flush()
            self.keys.flush()
            if self.runtime is not None:
                await self.runtime.end(reason, code)
            if self.speech is not None:
                await self.speech.close()
            await self.pc.close()
            for task in list(self._tasks):
                if task is not asyncio.current_task():
                    task.cancel()
            self.services.metrics.calls_ended.labels(
                self.end_reason.removeprefix("REASON_").lower()
            ).inc()
            log.info(
                "browser call ended",
                reason=self.end_reason,
                code=code,
                seconds=round(time.monotonic() - self._started, 1),
                uplink_dropped=self.speech.dropped if self.speech else 0,
                playback_dropped=self.outbound.dropped,
            )
            if self.span is not None:
                self.span.set_attribute("reason", self.end_reason)
                self.span.end()
            self._on_ended(self)
