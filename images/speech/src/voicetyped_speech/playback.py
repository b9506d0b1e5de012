"""Playback of one call: SpeakRequests in order, synthesized, paced to the media gateway.

The media gateway plays what it receives in real time (20 ms RTP frames) and flushes its buffer
on a ``PlaybackControl`` STOP. This side keeps the audio it has handed over at most ``lead_ms``
ahead of what has played, so:

- barge-in is immediate: a cancel drops the request's queued downlink audio and sends STOP at
  once (same event loop turn); even a media gateway that ignored the STOP would play at most
  ``lead_ms`` more;
- it knows when a prompt has finished playing (the runtime arms its no-input timer then), and
  how much of it was heard when cancelled (``played_ms``).

Requests play one after another, gaplessly: each request's first audio is synthesized (or taken
from the prompt cache) while the previous one plays. A request that cannot be synthesized is
reported (:class:`SynthesisFailed`) and counts as cancelled, so the runtime is never left waiting
for a prompt that will not play.

Barge-in by the caller (:meth:`Player.barge_in`, called when speech starts over an
``immediate`` prompt, or when :mod:`.barge_in` confirms speech over an ``allow`` one) stops the
current and queued requests if none of them denies it, which is the runtime engine's own rule,
so both sides agree without a round trip. :meth:`Player.barge_in_mode` says how what plays now
may be interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Literal

from voicetyped.service.logs import get_logger

from voicetyped_speech.barge_in import BargeInMode
from voicetyped_speech.tts import Synthesizer, TTSError

log = get_logger("voicetyped.speech.playback")

PlaybackKind = Literal["started", "finished", "cancelled"]


@dataclass(frozen=True)
class PlaybackUpdate:
    kind: PlaybackKind
    request_id: str
    at_ms: int
    played_ms: int


@dataclass(frozen=True)
class SynthesisFailed:
    request_id: str
    message: str


PlayerEvent = PlaybackUpdate | SynthesisFailed


@dataclass(frozen=True)
class AudioOut:
    """One chunk for the media gateway."""

    request_id: str
    pcm: bytes
    sequence: int
    last: bool


@dataclass(frozen=True)
class StopOut:
    """Stop playing ``request_id`` (all when empty) and drop its buffered audio."""

    request_id: str


DownlinkItem = AudioOut | StopOut


class Downlink:
    """What goes down the media gateway's stream, in order. Control overtakes nothing but
    removes the audio it stops. Bounded: if the stream stops draining, the oldest audio goes."""

    def __init__(self, max_audio: int = 500) -> None:
        self._items: deque[DownlinkItem] = deque()
        self._ready = asyncio.Event()
        self._max_audio = max_audio
        self._audio = 0
        self._closed = False
        self.dropped = 0

    def put(self, item: DownlinkItem) -> None:
        if self._closed:
            return
        if isinstance(item, AudioOut):
            self._audio += 1
            while self._audio > self._max_audio:
                self._drop_oldest_audio()
        self._items.append(item)
        self._ready.set()

    def stop(self, request_id: str) -> None:
        """Remove queued audio of ``request_id`` (all when empty) and queue a STOP."""
        kept: deque[DownlinkItem] = deque()
        for item in self._items:
            if isinstance(item, AudioOut) and (not request_id or item.request_id == request_id):
                self._audio -= 1
            else:
                kept.append(item)
        self._items = kept
        self.put(StopOut(request_id))

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def get(self) -> DownlinkItem | None:
        """The next item; None once closed and empty."""
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if isinstance(item, AudioOut):
            self._audio -= 1
        return item

    def _drop_oldest_audio(self) -> None:
        for i, item in enumerate(self._items):
            if isinstance(item, AudioOut):
                del self._items[i]
                self._audio -= 1
                self.dropped += 1
                return
        self._audio = 0


_END = object()


@dataclass(eq=False)
class _Request:
    request_id: str
    barge_in: BargeInMode
    stream: AsyncGenerator[bytes, None]
    frames: asyncio.Queue[bytes | object] = field(default_factory=lambda: asyncio.Queue(25))
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    prefetch: asyncio.Task[None] | None = None
    error: str | None = None
    sent_ms: int = 0
    started: bool = False
    asked_ns: int = 0
    done: bool = False  # played to the end (set before its "finished" goes out)


class Player:
    """Plays one call's SpeakRequests; see the module doc. Runs :meth:`run` as a task."""

    def __init__(
        self,
        session_id: str,
        synth: Synthesizer,
        sample_rate: int,
        downlink: Downlink,
        emit: Callable[[PlayerEvent], None],
        call_time_ms: Callable[[], int],
        *,
        voice_default: str,
        lead_ms: int = 100,
        on_first_audio: Callable[[str, int], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self._synth = synth
        self._rate = sample_rate
        self._downlink = downlink
        self._emit = emit
        self._call_time_ms = call_time_ms
        self._voice_default = voice_default
        self._on_first_audio = on_first_audio
        self._lead_s = lead_ms / 1000
        self._frame_s = synth.frame_ms / 1000
        self._queue: deque[_Request] = deque()
        self._wake = asyncio.Event()
        self._current: _Request | None = None
        self._playout_end = 0.0  # perf_counter time when everything sent will have played
        self._closed = False

    # -- commands ----------------------------------------------------------------------------

    def speak(self, request_id: str, text: str, voice: str, barge_in: BargeInMode | bool) -> None:
        """Queue a prompt (``barge_in``: True is ``allow``, False ``deny``). Problems (unknown
        voice, duplicate id) are reported as events."""
        if self._closed:
            return
        if isinstance(barge_in, bool):
            barge_in = BargeInMode.ALLOW if barge_in else BargeInMode.DENY
        try:
            stream = self._synth.synthesize(
                text, voice or self._voice_default, self._rate, request_id
            )
        except (TTSError, LookupError, ValueError, OSError) as exc:
            self._fail(request_id, str(exc))
            return
        req = _Request(request_id, barge_in, stream, asked_ns=time.time_ns())
        req.prefetch = asyncio.get_running_loop().create_task(
            self._prefetch(req), name=f"tts-prefetch-{self.session_id}-{request_id}"
        )
        self._queue.append(req)
        self._wake.set()

    def cancel(self, request_id: str = "") -> list[str]:
        """Stop ``request_id`` (every request when empty); returns the ids stopped."""
        stopped: list[str] = []
        current = self._current
        if current is not None and (not request_id or current.request_id == request_id):
            self._stop(current)
            stopped.append(current.request_id)
        for req in list(self._queue):
            if not request_id or req.request_id == request_id:
                self._queue.remove(req)
                self._stop(req)
                stopped.append(req.request_id)
        return stopped

    def barge_in(self) -> list[str]:
        """The caller barged in: stop everything if nothing denies barge-in."""
        pending = self._pending()
        if not pending or any(r.barge_in == BargeInMode.DENY for r in pending):
            return []
        return self.cancel("")

    def barge_in_mode(self) -> BargeInMode | None:
        """How the prompts playing or queued now may be interrupted (None: there are none):
        ``deny`` if one of them denies it, else the mode of the one playing (the first)."""
        pending = self._pending()
        if not pending:
            return None
        if any(r.barge_in == BargeInMode.DENY for r in pending):
            return BargeInMode.DENY
        return pending[0].barge_in

    def _pending(self) -> list[_Request]:
        current = self._current
        playing = current is not None and not (current.done or current.cancelled.is_set())
        return [*([current] if playing and current is not None else []), *self._queue]

    @property
    def active(self) -> bool:
        return self._current is not None or bool(self._queue)

    async def aclose(self) -> None:
        self._closed = True
        self.cancel("")
        self._wake.set()

    # -- the play loop -----------------------------------------------------------------------

    async def run(self) -> None:
        while not self._closed:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            req = self._queue.popleft()
            self._current = req
            try:
                await self._play(req)
            finally:
                self._current = None
                if req.prefetch is not None and not req.prefetch.done():
                    req.prefetch.cancel()

    async def _play(self, req: _Request) -> None:
        seq = 0
        pending: bytes | None = None
        while True:
            item = await self._next_frame(req)
            if req.cancelled.is_set():
                return
            if item is _END or isinstance(item, BaseException):
                break
            assert isinstance(item, bytes)
            if pending is not None:
                if not await self._send(req, pending, seq, last=False):
                    return
                seq += 1
            pending = item
        if req.error is not None:
            self._fail_current(req)
            return
        if pending is not None and not await self._send(req, pending, seq, last=True):
            return
        # Done sending: finished once the media gateway has played it all.
        await self._wait(req, self._playout_end - time.perf_counter())
        if req.cancelled.is_set():
            return
        if not req.started:  # empty text: nothing to hear, but the runtime waits for the end
            self._announce_start(req)
        req.done = True
        self._emit(PlaybackUpdate("finished", req.request_id, self._call_time_ms(), req.sent_ms))

    async def _next_frame(self, req: _Request) -> bytes | object:
        get = asyncio.ensure_future(req.frames.get())
        cancelled = asyncio.ensure_future(req.cancelled.wait())
        try:
            await asyncio.wait({get, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
            if not get.done():
                get.cancel()
        if get.done() and not get.cancelled():
            return get.result()
        return _END

    async def _send(self, req: _Request, pcm: bytes, seq: int, *, last: bool) -> bool:
        """Pace and hand over one frame; False when cancelled meanwhile."""
        now = time.perf_counter()
        if self._playout_end < now:
            self._playout_end = now  # the media gateway ran dry (or this is the first audio)
        await self._wait(req, self._playout_end - now - self._lead_s)
        if req.cancelled.is_set():
            return False
        if not req.started:
            self._announce_start(req)
        self._downlink.put(AudioOut(req.request_id, pcm, seq, last))
        duration = len(pcm) / 2 / self._rate
        self._playout_end = max(self._playout_end, time.perf_counter()) + duration
        req.sent_ms += round(duration * 1000)
        return True

    def _announce_start(self, req: _Request) -> None:
        req.started = True
        if self._on_first_audio is not None:
            self._on_first_audio(req.request_id, req.asked_ns)
        delay_ms = max(0, round((self._playout_end - time.perf_counter()) * 1000))
        self._emit(PlaybackUpdate("started", req.request_id, self._call_time_ms() + delay_ms, 0))

    async def _wait(self, req: _Request, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await req.cancelled.wait()

    async def _prefetch(self, req: _Request) -> None:
        try:
            async with contextlib.aclosing(req.stream) as stream:
                async for frame in stream:
                    await req.frames.put(frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # SynthesisError / SynthesisBusyError: report, do not crash
            req.error = str(exc) or type(exc).__name__
        await req.frames.put(_END)

    # -- stopping ----------------------------------------------------------------------------

    def _stop(self, req: _Request) -> None:
        if req.cancelled.is_set():
            return
        req.cancelled.set()
        self._synth.cancel(req.request_id)
        if req.prefetch is not None and not req.prefetch.done():
            req.prefetch.cancel()
        now = time.perf_counter()
        played = req.sent_ms
        if req is self._current:
            self._downlink.stop(req.request_id)
            unplayed_ms = max(0, round((self._playout_end - now) * 1000))
            played = max(0, req.sent_ms - unplayed_ms)
            self._playout_end = now  # the media gateway flushes what it holds
        self._emit(PlaybackUpdate("cancelled", req.request_id, self._call_time_ms(), played))

    def _fail(self, request_id: str, message: str) -> None:
        log.warning("synthesis failed", request_id=request_id, error=message)
        self._emit(SynthesisFailed(request_id, message))
        self._emit(PlaybackUpdate("cancelled", request_id, self._call_time_ms(), 0))

    def _fail_current(self, req: _Request) -> None:
        req.cancelled.set()
        if req.started:
            self._downlink.stop(req.request_id)
        self._fail(req.request_id, req.error or "synthesis failed")
