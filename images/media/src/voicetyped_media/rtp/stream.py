"""One call's RTP audio stream: receive (reorder, decode, conceal, resample to 16 kHz, stamp
with call time), send (encode, RTP header, timestamps), RTCP reports both ways, RFC 4733 events.

Built from aiortp's pieces (packet parsing, RTCP packets, receiver statistics, telephone-event
parsing, codecs) around our own socket handling: aiortp's transport answers unauthenticated STUN
binding requests on the RTP port (it is written for ICE); a SIP trunk's media port must not, so
STUN is dropped here.

With SRTP (:class:`~voicetyped_media.rtp.srtp.SrtpSession`) the receiver unprotects each packet
before anything reads it (one that fails authentication is dropped and never latches symmetric
RTP) and the sender protects each packet last; codecs, jitter buffer and pacing are unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortp import clock
from aiortp.dtmf import DtmfReceiver
from aiortp.packet import (
    RtcpPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
    is_rtcp,
)
from aiortp.plc import PcmConcealer
from aiortp.stats import StreamStatistics

from voicetyped_media.codecs.codec import AudioCodec
from voicetyped_media.codecs.resample import Resampler
from voicetyped_media.rtp.jitter import ReorderBuffer
from voicetyped_media.rtp.srtp import SrtpSession

OUTPUT_RATE = 16000
_STUN_MAGIC = b"\x21\x12\xa4\x42"
_CN_PAYLOAD_TYPE = 13
AudioSink = Callable[[bytes, int], None]
"""``(16 kHz s16le PCM, call time in ms of its first sample)``."""
DtmfSink = Callable[[str, int], None]
"""``(digit, duration in ms)``."""


@dataclass
class StreamCounters:
    packets_received: int = 0
    packets_sent: int = 0
    stun_dropped: int = 0
    unknown_payload: int = 0
    concealed: int = 0
    ssrc_changes: int = 0


@dataclass(frozen=True)
class StreamReport:
    """Quality figures of the call so far (for logs and metrics at the end)."""

    packets_received: int
    packets_lost: int
    late: int
    concealed: int
    jitter_ms: float
    remote_fraction_lost: float | None
    remote_jitter_ms: float | None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, handler: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._handler = handler

    def datagram_received(self, data: bytes, addr: tuple[str, int] | Any) -> None:
        self._handler(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable from a peer that went away: nothing to do


class MediaStream:
    def __init__(
        self,
        codec: AudioCodec,
        remote: tuple[str, int],
        telephone_event: int | None,
        on_audio: AudioSink,
        on_dtmf: DtmfSink,
        call_time_ms: Callable[[], int],
        *,
        symmetric: bool = True,
        rtcp_interval_s: float = 5.0,
        batch_ms: int = 40,
        srtp: SrtpSession | None = None,
    ) -> None:
        self.codec = codec
        self.remote = remote
        self.remote_rtcp = (remote[0], remote[1] + 1)
        self.telephone_event = telephone_event
        self._on_audio = on_audio
        self._on_dtmf = on_dtmf
        self._call_time_ms = call_time_ms
        self._symmetric = symmetric
        self.srtp = srtp
        self._latched = False
        self._rtcp_interval = rtcp_interval_s
        self.counters = StreamCounters()
        self._reorder = ReorderBuffer(self._deliver, codec.timestamp_step)
        self._frame_samples = codec.frame_samples
        self._resample = Resampler(codec.pcm_rate, OUTPUT_RATE)
        self._concealer = PcmConcealer(codec.pcm_rate)
        self._dtmf = DtmfReceiver(self._rfc4733)
        self._stats: StreamStatistics | None = None
        self._remote_ssrc: int | None = None
        self._last_rr: RtcpReceiverInfo | None = None
        self._last_sr_ntp: int | None = None
        self._last_sr_at = 0.0
        # Uplink call time: anchored at the first frame, advanced by output samples.
        self._anchor_ts: int | None = None
        self._anchor_ms = 0
        self._out_samples = 0
        self._expected_ts: int | None = None
        self._batch_ms = batch_ms
        self._batch: list[bytes] = []
        self._batch_samples = 0
        # Sending
        self.ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._marker = True
        self.octets_sent = 0
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._rtcp_task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self, rtp_sock: socket.socket, rtcp_sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._rtp, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self._on_rtp_datagram), sock=rtp_sock
        )
        self._rtcp, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self._on_rtcp_datagram), sock=rtcp_sock
        )
        self._rtcp_task = loop.create_task(self._rtcp_loop(), name="rtcp")

    # -- receiving ---------------------------------------------------------------------------

    def _on_rtp_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) >= 20 and data[4:8] == _STUN_MAGIC:
            self.counters.stun_dropped += 1
            return
        if is_rtcp(data):
            self._on_rtcp_datagram(data, addr)
            return
        if self.srtp is not None:
            clear = self.srtp.unprotect(data)
            if clear is None:
                return  # not authentic, or a replay
            data = clear
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            return
        if self._symmetric and not self._latched:
            # RFC 4961 symmetric RTP: send where the peer's media comes from (NAT).
            self._latched = True
            self.remote = addr
            self.remote_rtcp = (addr[0], addr[1] + 1)
        self.counters.packets_received += 1
        if packet.ssrc != self._remote_ssrc:
            if self._remote_ssrc is not None:
                self.counters.ssrc_changes += 1
                self._reorder.flush()
                self._reorder.reset()
            self._remote_ssrc = packet.ssrc
            self._stats = StreamStatistics(clockrate=self.codec.clock_rate)
        assert self._stats is not None
        self._stats.add(packet)
        pt = packet.payload_type
        if pt == self.codec.payload_type:
            self._reorder.add(packet.sequence_number, packet.timestamp, packet.payload)
        elif pt == self.telephone_event:
            self._reorder.skip(packet.sequence_number)
            with contextlib.suppress(ValueError):
                self._dtmf.handle_packet(packet)
        elif pt == _CN_PAYLOAD_TYPE:
            self._reorder.skip(packet.sequence_number)
        else:
            self.counters.unknown_payload += 1

    def _rfc4733(self, digit: str, duration: int) -> None:
        if digit != "?":
            self._on_dtmf(digit, duration * 1000 // self.codec.clock_rate)

    def _deliver(self, payload: bytes | None, timestamp: int) -> None:
        codec = self.codec
        if payload is None:
            samples = self._frame_samples  # as long as the frames the caller sends
            pcm = codec.conceal(samples)
            if pcm is None:
                pcm = self._concealer.conceal(samples)
            self.counters.concealed += 1
        else:
            try:
                pcm = codec.decode(payload)
            except Exception:  # a corrupt payload from the network: conceal instead
                pcm = self._concealer.conceal(codec.frame_samples)
                self.counters.concealed += 1
            else:
                self._concealer.update(pcm)
                self._frame_samples = len(pcm) // 2 or self._frame_samples
        self._emit(pcm, timestamp)

    def _emit(self, pcm: bytes, timestamp: int) -> None:
        # The RTP clock advance of this frame (the caller's packetization may not be 20 ms).
        step = len(pcm) // 2 * self.codec.clock_rate // self.codec.pcm_rate
        if self._anchor_ts is None or self._expected_ts != timestamp:
            self._send_batch()
            # First audio, or a gap in the sender's clock (silence suppression, hold): anchor
            # the call time of this frame from the RTP timestamps, or the clock when unknown.
            if self._anchor_ts is None:
                self._anchor_ms = self._call_time_ms()
            else:
                gap = (
                    ((timestamp - (self._expected_ts or 0)) & 0xFFFFFFFF)
                    * 1000
                    // self.codec.clock_rate
                )
                now = self._call_time_ms()
                here = self._anchor_ms + self._out_samples * 1000 // OUTPUT_RATE
                self._anchor_ms = (
                    here + gap if 0 < gap < 10_000 and here + gap <= now + 500 else now
                )
            self._anchor_ts = timestamp
            self._out_samples = 0
        self._expected_ts = (timestamp + step) & 0xFFFFFFFF
        # Frames are passed on in batches of ``batch_ms``: each resampling call and each gRPC
        # message has a fixed cost (~25 us and ~30-60 us), so 40 ms halves it per call, at
        # 20 ms of added delay before the VAD.
        self._batch.append(pcm)
        self._batch_samples += len(pcm) // 2
        if self._batch_samples * 1000 >= self._batch_ms * self.codec.pcm_rate:
            self._send_batch()

    def _send_batch(self) -> None:
        if not self._batch:
            return
        pcm = b"".join(self._batch) if len(self._batch) > 1 else self._batch[0]
        self._batch.clear()
        self._batch_samples = 0
        out = self._resample(pcm)
        if out:
            start_ms = self._anchor_ms + self._out_samples * 1000 // OUTPUT_RATE
            self._out_samples += len(out) // 2
            self._on_audio(out, start_ms)

    def flush(self) -> None:
        """Deliver every frame still held (the stream ends or pauses)."""
        self._reorder.flush()
        self._send_batch()

    # -- sending -----------------------------------------------------------------------------

    def send_pcm(self, pcm: bytes) -> None:
        """Encode and send one 20 ms frame at the codec's PCM rate."""
        self.send_payload(self.codec.encode(pcm))

    def send_payload(self, payload: bytes) -> None:
        if self._rtp is None or self._closed:
            return
        header = struct.pack(
            "!BBHII",
            0x80,
            (0x80 if self._marker else 0) | self.codec.payload_type,
            self._seq,
            self._ts,
            self.ssrc,
        )
        self._marker = False
        self._send_rtp(header + payload)
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + self.codec.timestamp_step) & 0xFFFFFFFF
        self.counters.packets_sent += 1
        self.octets_sent += len(payload)

    def send_raw(self, payload_type: int, payload: bytes, timestamp: int, marker: bool) -> None:
        """A packet of another payload type (RFC 4733 events) in this stream's sequence."""
        if self._rtp is None or self._closed:
            return
        header = struct.pack(
            "!BBHII", 0x80, (0x80 if marker else 0) | payload_type, self._seq, timestamp, self.ssrc
        )
        self._send_rtp(header + payload)
        self._seq = (self._seq + 1) & 0xFFFF
        self.counters.packets_sent += 1

    def _send_rtp(self, packet: bytes) -> None:
        assert self._rtp is not None
        self._rtp.sendto(
            self.srtp.protect(packet) if self.srtp is not None else packet, self.remote
        )

    def skip_frames(self, count: int) -> None:
        """Advance the audio clock over ``count`` frames that carried something else."""
        self._ts = (self._ts + count * self.codec.timestamp_step) & 0xFFFFFFFF
        self._marker = True

    def skip_frame(self) -> None:
        """A frame time passed without sending (hold): the clock still advances and the next
        packet starts a talk spurt (marker bit, RFC 3551 §4.1)."""
        self._ts = (self._ts + self.codec.timestamp_step) & 0xFFFFFFFF
        self._marker = True

    # -- RTCP --------------------------------------------------------------------------------

    def _on_rtcp_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.srtp is not None:
            clear = self.srtp.unprotect_rtcp(data)
            if clear is None:
                return
            data = clear
        try:
            packets = RtcpPacket.parse(data)
        except ValueError:
            return
        for packet in packets:
            if isinstance(packet, RtcpSrPacket):
                self._last_sr_ntp = packet.sender_info.ntp_timestamp
                self._last_sr_at = time.monotonic()
                self._take_reports(packet.reports)
            elif isinstance(packet, RtcpRrPacket):
                self._take_reports(packet.reports)

    def _take_reports(self, reports: list[RtcpReceiverInfo]) -> None:
        for report in reports:
            if report.ssrc == self.ssrc:
                self._last_rr = report

    def _report_block(self) -> RtcpReceiverInfo | None:
        if self._stats is None or self._remote_ssrc is None:
            return None
        s = self._stats
        lsr = dlsr = 0
        if self._last_sr_ntp is not None:
            lsr = (self._last_sr_ntp >> 16) & 0xFFFFFFFF
            dlsr = int((time.monotonic() - self._last_sr_at) * 65536) & 0xFFFFFFFF
        return RtcpReceiverInfo(
            ssrc=self._remote_ssrc,
            fraction_lost=s.fraction_lost,
            packets_lost=s.packets_lost,
            highest_sequence=s.cycles + (s.max_seq or 0),
            jitter=s.jitter,
            lsr=lsr,
            dlsr=dlsr,
        )

    def send_rtcp(self) -> None:
        if self._rtcp is None or self._closed:
            return
        block = self._report_block()
        reports = [block] if block is not None else []
        packet: RtcpSrPacket | RtcpRrPacket
        if self.counters.packets_sent:
            packet = RtcpSrPacket(
                ssrc=self.ssrc,
                sender_info=RtcpSenderInfo(
                    ntp_timestamp=clock.current_ntp_time(),
                    rtp_timestamp=self._ts,
                    packet_count=self.counters.packets_sent,
                    octet_count=self.octets_sent,
                ),
                reports=reports,
            )
        elif reports:
            packet = RtcpRrPacket(ssrc=self.ssrc, reports=reports)
        else:
            return
        data = bytes(packet)
        self._rtcp.sendto(
            self.srtp.protect_rtcp(data) if self.srtp is not None else data, self.remote_rtcp
        )

    async def _rtcp_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._rtcp_interval * (0.5 + random.random()))  # RFC 3550 §6.2
            self.send_rtcp()

    def report(self) -> StreamReport:
        s = self._stats
        rr = self._last_rr
        return StreamReport(
            packets_received=self.counters.packets_received,
            packets_lost=self._reorder.stats.lost,
            late=self._reorder.stats.late,
            concealed=self.counters.concealed,
            jitter_ms=(s.jitter * 1000 / self.codec.clock_rate) if s is not None else 0.0,
            remote_fraction_lost=(rr.fraction_lost / 256) if rr is not None else None,
            remote_jitter_ms=(rr.jitter * 1000 / self.codec.clock_rate) if rr is not None else None,
        )

    def _finish_uplink(self) -> None:
        """Deliver what is held, including the resampler's tail (the stream ends)."""
        self.flush()
        tail = self._resample(b"", last=True)
        if tail and self._anchor_ts is not None:
            self._on_audio(tail, self._anchor_ms + self._out_samples * 1000 // OUTPUT_RATE)
            self._out_samples += len(tail) // 2

    async def close(self) -> None:
        if self._closed:
            return
        self._finish_uplink()
        self.send_rtcp()
        self._closed = True
        if self._rtcp_task is not None:
            self._rtcp_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rtcp_task
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        await asyncio.sleep(0)  # asyncio closes the sockets on the next loop iteration
