"""A browser-like WebRTC caller in Python (aiortc): what the media gateway's tests and the
WebRTC turn-latency benchmark place calls with, beside the real Chromium.

    peer = WebRtcPeer()
    answer = await peer.call("http://127.0.0.1:8081")      # token, offer, answer, ICE
    peer.say(pcm16k)                                        # spoken into the call, real time
    await peer.heard_after(t)                               # first loud frame of the reply

The peer sends silence (20 ms Opus frames, paced in real time) between what it says, records
the bot's audio (16 kHz mono) with the wall time each frame arrived, and sends key presses on
the ``dtmf`` data channel as the call page does.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from voicetyped_testkit.processes import eventually

RATE = 48_000
FRAME = 960
LOUD = 500  # peak of a 20 ms frame of the bot's voice (silence is 0, Opus noise < 50)


def http_json(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """(status, decoded JSON body) of a request; errors are returned, not raised (blocking)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Mouth(MediaStreamTrack):
    """The caller's microphone: queued speech, else silence, 20 ms frames in real time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending: deque[bytes] = deque()
        self._start: float | None = None
        self._pts = 0
        self.stopped_at: float | None = None
        """Wall time (time.time()) the last frame of what was said went out."""
        self.done = asyncio.Event()
        """Set while nothing is left to say."""

    def say(self, pcm16k: bytes) -> None:
        samples = np.frombuffer(pcm16k, dtype="<i2")
        up = np.repeat(samples, 3)  # 16 -> 48 kHz (speech; Opus band-limits it anyway)
        raw = up.astype("<i2").tobytes()
        step = FRAME * 2
        for i in range(0, len(raw), step):
            self._pending.append(raw[i : i + step].ljust(step, b"\0"))
        self.stopped_at = None
        self.done.clear()

    @property
    def speaking(self) -> bool:
        return bool(self._pending)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._pts / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        if self._pending:
            pcm = self._pending.popleft()
            if not self._pending:
                self.stopped_at = time.time() + FRAME / RATE
                self.done.set()
        else:
            pcm = bytes(FRAME * 2)
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(pcm)
        frame.sample_rate = RATE
        frame.time_base = fractions.Fraction(1, RATE)
        frame.pts = self._pts
        self._pts += FRAME
        return frame


@dataclass
class Heard:
    at: float  # wall time it arrived
    loud: bool
    pcm: bytes  # 16 kHz mono s16


@dataclass
class WebRtcPeer:
    offer_audio: bool = True
    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    mouth: Mouth = field(default_factory=Mouth)
    heard: list[Heard] = field(default_factory=list)
    session_id: str = ""
    dtmf: RTCDataChannel | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def offer(self) -> str:
        """Our offer SDP, every host candidate in it (as a browser after gathering)."""
        self.dtmf = self.pc.createDataChannel("dtmf")
        if self.offer_audio:
            self.pc.addTrack(self.mouth)
        self.pc.on("track", self._on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def token(self, base_url: str, access: str | None = None) -> str:
        headers = {"Authorization": f"Bearer {access}"} if access else {}
        status, body = await asyncio.to_thread(
            http_json, "POST", f"{base_url}/v1/webrtc/tokens", None, headers
        )
        assert status == 200, (status, body)
        return str(body["token"])

    async def place(self, base_url: str, token: str, sdp: str) -> tuple[int, Any]:
        """POST the offer; on 200 the answer is applied (ICE and DTLS start)."""
        status, body = await asyncio.to_thread(
            http_json,
            "POST",
            f"{base_url}/v1/webrtc/calls",
            {"token": token, "sdp": sdp, "type": "offer"},
        )
        if status == 200:
            self.session_id = body["session_id"]
            await self.pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "answer"))
        return status, body

    async def call(self, base_url: str, access: str | None = None) -> None:
        """Token, offer, answer, then wait until connected."""
        status, body = await self.place(
            base_url, await self.token(base_url, access), await self.offer()
        )
        assert status == 200, (status, body)
        await self.connected()

    async def connected(self, timeout_s: float = 15.0) -> None:
        await eventually(
            lambda: (
                self.pc.connectionState == "connected"
                and self.dtmf is not None
                and self.dtmf.readyState == "open"
            ),
            timeout_s,
            "the call connected (ICE, DTLS, the dtmf data channel)",
        )

    def say(self, pcm16k: bytes) -> None:
        self.mouth.say(pcm16k)

    async def said(self) -> float:
        """Once what was said has all gone out: the wall time its last frame went."""
        await self.mouth.done.wait()
        assert self.mouth.stopped_at is not None
        return self.mouth.stopped_at

    def press(self, digit: str) -> None:
        assert self.dtmf is not None, "no call placed"
        self.dtmf.send(digit)

    @property
    def hung_up(self) -> bool:
        """The gateway closed the call (a bot hangup)."""
        return bool(self.pc.connectionState in ("closed", "failed"))

    def first_loud_after(self, since: float) -> float | None:
        return next((h.at for h in self.heard if h.loud and h.at > since), None)

    def quiet_after(self, since: float, hold_s: float = 0.6) -> float | None:
        """The start of the first ``hold_s`` without the bot's voice after loud audio that
        followed ``since``."""
        loud_seen, quiet_from = False, None
        for h in self.heard:
            if h.at <= since:
                continue
            if h.loud:
                loud_seen, quiet_from = True, None
            elif loud_seen:
                quiet_from = quiet_from or h.at
                if h.at - quiet_from >= hold_s:
                    return quiet_from
        return None

    def pcm_between(self, start: float, end: float) -> bytes:
        return b"".join(h.pcm for h in self.heard if start <= h.at <= end)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.ensure_future(self._listen(track)))

    async def _listen(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            at = time.time()
            for out in resampler.resample(frame):  # type: ignore[arg-type]
                pcm = out.to_ndarray().tobytes()
                peak = int(np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32)).max(initial=0))
                self.heard.append(Heard(at, peak > LOUD, pcm))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.pc.close()
