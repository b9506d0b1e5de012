"""Paced playback: one 20 ms clock for every call of the process.

A per-call timer would wake the event loop 50 times a second per call; one clock ticks for all
of them and, on each tick, sends one frame per playing call (an encoded silence frame while the
bot is quiet, so NAT bindings and RTP inactivity timers on the caller's side stay alive; nothing
while the caller holds the call). Ticks are scheduled on absolute deadlines so the rate does not
drift; a tick that comes more than ``late_ms`` after its deadline is counted as late, and after
a stall of several frames the clock skips ahead instead of bursting.

Barge-in: :meth:`Playout.flush` drops the queued audio of a request at once, so sound stops
within the frame being sent.

A reply's first frame does not wait for the clock: when audio arrives for a call that is
sending silence, its first frame goes out at once in place of the next tick's silence frame
(that tick sends nothing for the call), so the RTP timestamps stay continuous and the packet is
at most one frame early, which the caller's jitter buffer absorbs. This takes the half-frame
average wait (~10 ms) out of every turn's latency.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

FRAME_S = 0.020
MAX_PLAYOUT_WAIT_S = 10.0  # the longest a hangup or transfer waits for queued audio to go out
# After the last packet of a prompt, before BYE/REFER: the caller's jitter buffer still holds
# up to a few frames, which a phone drops when the BYE arrives right behind them.
PLAYOUT_TAIL_S = 0.2


class FrameCodec(Protocol):
    @property
    def frame_samples(self) -> int: ...

    def silence(self) -> bytes: ...


class FrameSink(Protocol):
    """Where a playout's frames go: a call's RTP stream
    (:class:`~voicetyped_media.rtp.stream.MediaStream`), or a browser call's outbound track
    (:class:`~voicetyped_media.webrtc.outbound.OutboundTrack`)."""

    @property
    def codec(self) -> FrameCodec: ...

    def send_pcm(self, pcm: bytes) -> None: ...

    def send_payload(self, payload: bytes) -> None: ...

    def skip_frame(self) -> None: ...


@dataclass
class PacerStats:
    ticks: int = 0
    late_ticks: int = 0
    skipped_ticks: int = 0
    frames_sent: int = 0
    max_lateness_s: float = 0.0


class Playout:
    """One call's queue of 20 ms frames (PCM at the codec's rate) waiting to be sent."""

    def __init__(
        self,
        stream: FrameSink,
        on_played: Callable[[str], None] | None = None,
        on_started: Callable[[str], None] | None = None,
    ) -> None:
        self.stream = stream
        self._frames: deque[tuple[str, bytes]] = deque()
        self._pending: dict[str, bytearray] = {}
        self._frame_bytes = stream.codec.frame_samples * 2
        self._silence = stream.codec.silence()
        self._on_played = on_played
        self._on_started = on_started
        self.held = False
        self.playing = ""
        self._sent_early = False
        self._empty = asyncio.Event()
        self._empty.set()

    @property
    def queued_frames(self) -> int:
        return len(self._frames)

    async def drain(self, timeout_s: float) -> bool:
        """Until every frame queued so far has gone out (False: ``timeout_s`` passed first, or
        the call is held and nothing goes out). Before a BYE or a REFER: the runtime ends a
        call once the speech gateway has handed over its last prompt, which is still here."""
        if self.held:
            return not self._frames
        try:
            async with asyncio.timeout(timeout_s):
                await self._empty.wait()
        except TimeoutError:
            return False
        return True

    async def let_finish(self) -> bool:
        """The caller hears the end of the last prompt: the speech gateway reports a prompt
        played once it has handed its audio over, and part of it is still queued here (more
        when this process runs late). Bounded: a hangup is never held up for long. False: it
        did not finish in time."""
        queued_s = self.queued_frames * FRAME_S
        if not await self.drain(min(queued_s + 1.0, MAX_PLAYOUT_WAIT_S)):
            return False
        if queued_s > 0:
            await asyncio.sleep(PLAYOUT_TAIL_S)
        return True

    def add(self, request_id: str, pcm: bytes, last: bool) -> None:
        """Queue playback audio (any length); ``last`` ends the request."""
        idle = not self._frames and not self.playing  # sending silence until now
        buf = self._pending.setdefault(request_id, bytearray())
        buf += pcm
        fb = self._frame_bytes
        while len(buf) >= fb:
            self._frames.append((request_id, bytes(buf[:fb])))
            del buf[:fb]
        if last:
            if buf:
                self._frames.append((request_id, bytes(buf) + bytes(fb - len(buf))))
            del self._pending[request_id]
            self._frames.append((request_id, b""))  # end marker: reported when reached
        if self._frames:
            self._empty.clear()
        if idle and not self.held and not self._sent_early and self._frames:
            self._sent_early = self._send_next()

    def flush(self, request_id: str = "") -> int:
        """Drop queued audio of ``request_id`` (all when empty); returns the frames dropped."""
        before = len(self._frames)
        if request_id:
            self._frames = deque(f for f in self._frames if f[0] != request_id)
            self._pending.pop(request_id, None)
        else:
            self._frames.clear()
            self._pending.clear()
        if not self._frames:
            self._empty.set()
        return before - len(self._frames)

    def tick(self) -> bool:
        """Send this frame time's packet; True when a frame was sent."""
        if self.held:
            self.stream.skip_frame()
            return False
        if self._sent_early:  # this tick's frame already went out when the audio came
            self._sent_early = False
            return False
        if not self._send_next():
            self.stream.send_payload(self._silence)
        return True

    def _send_next(self) -> bool:
        """Send the next queued audio frame; False when there is none (reporting ends)."""
        while self._frames:
            request_id, pcm = self._frames.popleft()
            if pcm:
                if request_id != self.playing and self._on_started is not None:
                    self._on_started(request_id)  # its first audio is going out now
                self.playing = request_id
                self.stream.send_pcm(pcm)
                return True
            self.playing = ""
            if self._on_played is not None:
                self._on_played(request_id)
        self._empty.set()
        return False


@dataclass
class Pacer:
    late_ms: float = 20.0
    playouts: set[Playout] = field(default_factory=set)
    stats: PacerStats = field(default_factory=PacerStats)

    async def run(self) -> None:
        deadline = time.monotonic()
        while True:
            deadline += FRAME_S
            delay = deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            lateness = now - deadline
            self.stats.ticks += 1
            if lateness * 1000 > self.late_ms:
                self.stats.late_ticks += 1
            self.stats.max_lateness_s = max(self.stats.max_lateness_s, lateness)
            if lateness > 5 * FRAME_S:  # a stall: skip ahead rather than burst
                skipped = int(lateness / FRAME_S)
                self.stats.skipped_ticks += skipped
                deadline += skipped * FRAME_S
            for playout in list(self.playouts):
                if playout.tick():
                    self.stats.frames_sent += 1
