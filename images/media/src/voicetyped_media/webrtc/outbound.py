"""The bot's audio to the browser: an aiortc audio track fed by the process's playout clock.

The call's :class:`~voicetyped_media.rtp.pacer.Playout` (the same one SIP calls use: 20 ms
frames, barge-in flush, playout drain before a hangup, the first-frame span) hands each tick's
frame here instead of to an RTP stream; aiortc's sender takes it from a bounded queue, encodes
it as Opus (48 kHz) and sends it (SRTP). Between prompts the clock sends silence, so the browser's
stream never stalls. If aiortc stops taking frames (ICE not connected yet), the oldest go.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
from dataclasses import dataclass

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

RATE = 16_000
"""The bot's audio as the speech gateway synthesises it (its playback rates are 8 and 16 kHz);
aiortc's Opus encoder takes it to 48 kHz."""
FRAME_SAMPLES = 320  # 20 ms
MAX_QUEUED_FRAMES = 10  # 200 ms: beyond, the oldest frames are dropped
TIME_BASE = fractions.Fraction(1, RATE)


@dataclass(frozen=True)
class Pcm48k:
    """The playout's view of the track's "codec": 20 ms of 16 kHz s16 mono PCM per frame."""

    frame_samples: int = FRAME_SAMPLES

    def silence(self) -> bytes:
        return bytes(self.frame_samples * 2)


class OutboundTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.codec = Pcm48k()
        self._frames: asyncio.Queue[bytes] = asyncio.Queue(MAX_QUEUED_FRAMES)
        self._pts = 0
        self.dropped = 0

    # -- the playout's sink ------------------------------------------------------------------

    def send_pcm(self, pcm: bytes) -> None:
        if self._frames.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._frames.get_nowait()
                self.dropped += 1
        self._frames.put_nowait(pcm)

    def send_payload(self, payload: bytes) -> None:
        self.send_pcm(payload)  # the "codec" is PCM: its silence frame is PCM too

    def skip_frame(self) -> None:
        """(Hold: a browser call is never held.)"""

    # -- aiortc's side -----------------------------------------------------------------------

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        pcm = await self._frames.get()
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm)
        frame.sample_rate = RATE
        frame.time_base = TIME_BASE
        frame.pts = self._pts
        self._pts += FRAME_SAMPLES
        return frame
