"""A SIP phone for tests and ``voicetyped call``: real SIP (aiosipua UAC) and RTP (our stream),
G.711 u-law, RFC 4733 DTMF. It sends audio in real time (silence when it has nothing to say,
as a handset does) and keeps every audio frame it hears with its arrival time, so the moment
the bot's voice starts can be measured from the outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from aiosipua import SipRequest, SipUAC, SipUAS, parse_sdp
from voicetyped_media.call.media_call import sip_session_id
from voicetyped_media.codecs.codec import open_codec
from voicetyped_media.rtp.ports import PortPool
from voicetyped_media.rtp.stream import MediaStream
from voicetyped_media.sdp import CodecChoice
from voicetyped_media.sip.transport import GuardedUdpTransport

FRAME_S = 0.020
TELEPHONE_EVENT = 101
_EVENTS = {d: i for i, d in enumerate("0123456789*#ABCD")}


@dataclass
class Heard:
    """One frame of the bot's audio (16 kHz) and when it arrived."""

    pcm: bytes
    arrived: float
    loud: bool


@dataclass
class PhoneCall:
    phone: Phone
    stream: MediaStream
    port: int
    call_id: str
    heard: list[Heard] = field(default_factory=list)
    outbox: deque[bytes] = field(default_factory=deque)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    remote_hangup: bool = False
    hangup_reason: str = ""
    """The far end's BYE ``Reason`` header (RFC 3326), when it hung up with one."""
    _sender: asyncio.Task[None] | None = None
    _ts_events: int = 0
    _pending_event: tuple[str, int] | None = None

    def hear(self, pcm: bytes, start_ms: int) -> None:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        loud = bool(samples.size) and float(np.sqrt(np.mean(samples * samples))) > 150.0
        self.heard.append(Heard(pcm, time.perf_counter(), loud))

    def say(self, pcm8k: bytes) -> float:
        """Queue 8 kHz PCM to be spoken in real time; returns when it will have been sent."""
        step = 320
        frames = [pcm8k[i : i + step] for i in range(0, len(pcm8k), step)]
        if frames and len(frames[-1]) < step:
            frames[-1] += bytes(step - len(frames[-1]))
        self.outbox.extend(frames)
        return time.perf_counter() + len(self.outbox) * FRAME_S

    def saying(self) -> bool:
        return bool(self.outbox)

    async def until_said(self) -> float:
        """Wait until everything queued has been sent; the time the last frame went out."""
        if self.outbox and not self.ended.is_set():
            self.drained.clear()
            ended = asyncio.ensure_future(self.ended.wait())
            drained = asyncio.ensure_future(self.drained.wait())
            await asyncio.wait({ended, drained}, return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
            drained.cancel()
        return time.perf_counter()

    def press(self, digit: str, duration_ms: int = 160) -> None:
        """Send a key press (RFC 4733) in place of audio, paced like audio."""
        self._pending_event = (digit.upper(), duration_ms)

    async def _send_loop(self) -> None:
        silence = self.stream.codec.silence()
        deadline = time.perf_counter()
        while not self.ended.is_set():
            deadline += FRAME_S
            await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
            if self._pending_event is not None:
                digit, duration = self._pending_event
                self._pending_event = None
                await self._send_event(digit, duration)
                deadline = time.perf_counter()
                continue
            if self.outbox:
                self.stream.send_pcm(self.outbox.popleft())
                if not self.outbox:
                    self.drained.set()
            else:
                self.stream.send_payload(silence)

    async def _send_event(self, digit: str, duration_ms: int) -> None:
        code = _EVENTS[digit]
        stream = self.stream
        ts = stream._ts  # the event's RTP timestamp: the frame time it starts at
        steps = max(1, duration_ms // 20)
        for i in range(1, steps + 4):
            end = i > steps
            duration = min(i, steps) * 160
            payload = struct.pack("!BBH", code, (0x80 if end else 0) | 10, duration)
            stream.send_raw(TELEPHONE_EVENT, payload, ts, marker=i == 1)
            if not end:
                await asyncio.sleep(FRAME_S)
        stream.skip_frames(steps)

    async def hang_up(self) -> None:
        if not self.ended.is_set():
            self.phone.uac.send_bye(self.phone.call.dialog, self.phone.remote)
        await self.close()

    async def close(self) -> None:
        self.ended.set()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        await self.stream.close()
        self.phone.ports.release(self.port)


class Phone:
    """One SIP endpoint on 127.0.0.1 placing one call at a time."""

    def __init__(
        self, host: str = "127.0.0.1", rtp_ports: tuple[int, int] = (44000, 44999)
    ) -> None:
        self.host = host
        self.ports = PortPool(host, *rtp_ports, quarantine_s=0.5)
        self.transport = GuardedUdpTransport(local_addr=(host, 0))
        self.uac = SipUAC(self.transport)
        self.uas = SipUAS(self.transport, uac=self.uac)
        self.current: PhoneCall | None = None
        self.remote: tuple[str, int] = ("127.0.0.1", 5060)
        self.uas.on_bye = self._bye
        self._byes: dict[str, str] = {}
        """Call-ID -> Reason of BYEs received (one may come before :meth:`dial` returns)."""

    async def start(self) -> None:
        await self.uas.start()
        udp = self.transport._udp_transport
        assert udp is not None
        self.transport.local_addr = (self.host, int(udp.get_extra_info("sockname")[1]))

    def _bye(self, call: object, request: SipRequest) -> None:
        self._byes[request.call_id or ""] = request.get_header("Reason") or ""
        current = self.current
        if current is not None and current.call_id == request.call_id:
            self._ended_by_far_end(current)

    def _ended_by_far_end(self, call: PhoneCall) -> None:
        call.remote_hangup = True
        call.hangup_reason = self._byes.get(call.call_id, "")
        call.ended.set()

    async def dial(self, uri: str, timeout_s: float = 15.0) -> PhoneCall:
        host_port = uri.split("@", 1)[-1].split(";", 1)[0]
        host, _, port_text = host_port.partition(":")
        self.remote = (host, int(port_text or 5060))
        port, rtp, rtcp = self.ports.acquire()
        offer = (
            f"v=0\r\no=phone 1 1 IN IP4 {self.host}\r\ns=-\r\nc=IN IP4 {self.host}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 {TELEPHONE_EVENT}\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=rtpmap:{TELEPHONE_EVENT} telephone-event/8000\r\na=fmtp:{TELEPHONE_EVENT} 0-16\r\n"
            "a=ptime:20\r\na=sendrecv\r\n"
        )
        self.call = self.uac.send_invite(
            f"sip:caller@{self.host}:{self.transport.local_addr[1]}",
            uri,
            self.remote,
            sdp_offer=parse_sdp(offer),
            extra_headers={"P-Asserted-Identity": "<sip:+15550100@127.0.0.1>"},
        )
        await self.call.wait_answered(timeout_s)
        answer = self.call.sdp_answer
        assert answer is not None and answer.rtp_address is not None
        codec = open_codec(CodecChoice("PCMU", 0, 8000))
        holder: list[PhoneCall] = []
        stream = MediaStream(
            codec,
            answer.rtp_address,
            TELEPHONE_EVENT,
            lambda pcm, ms: holder[0].hear(pcm, ms) if holder else None,
            lambda digit, ms: None,
            lambda: 0,
            batch_ms=20,
        )
        await stream.start(rtp, rtcp)
        call = PhoneCall(self, stream, port, self.call.call_id)
        holder.append(call)
        call._sender = asyncio.get_running_loop().create_task(call._send_loop())
        self.current = call
        if call.call_id in self._byes:  # hung up (refused) while the media was set up
            self._ended_by_far_end(call)
        return call

    @property
    def session_id(self) -> str:
        """The gateway's session id for the call placed last (from its Call-ID and To-tag)."""
        return sip_session_id(self.call.call_id, self.call.dialog.remote_tag)

    async def close(self) -> None:
        if self.current is not None and not self.current.ended.is_set():
            await self.current.hang_up()
        await self.uas.stop()
