"""One call's ``SpeechGateway.StreamAudio``: caller audio up (16 kHz PCM), playback down.

Caller audio is queued for the stream without blocking the RTP path; the queue is bounded
(``max_queued`` chunks, 2 s at 20 ms): if the speech gateway stops reading, the oldest audio is
dropped and counted rather than memory growing.

The stream failing (an error, or the gateway ending it, while we did not close it: its replica
was deleted or restarted) is reported through ``on_failed``; the call then reopens the stream
through the speech Service or hangs up (:mod:`voicetyped_media.call.speech_restore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from voicetyped.service.logs import get_logger
from voicetyped.v1 import common_pb2, speech_pb2, speech_pb2_grpc

log = get_logger("voicetyped.media.speech")
_EOF: Any = getattr(grpc.aio, "EOF")  # noqa: B009 - missing from grpc-stubs

PlaybackSink = Callable[[str, bytes, bool], None]
StopSink = Callable[[str], None]


class SpeechUnavailable(Exception):  # noqa: N818 - a condition the caller answers with 503
    """No speech stream could be opened for the call."""


class SpeechAtCapacity(SpeechUnavailable):
    """The speech replica refused a new call (RESOURCE_EXHAUSTED): recognition is at capacity
    and it keeps its running calls' latency. The caller is answered 503 with Retry-After."""


async def open_new_call(
    new_stream: Callable[[], SpeechAudioStream], attempts: int
) -> SpeechAudioStream:
    """Open a new call's stream: if its replica is at capacity, try again up to ``attempts``
    times (the speech channel is round-robin: each attempt goes to the next replica). Raises
    :class:`SpeechAtCapacity` when every attempt was refused, :class:`SpeechUnavailable` for
    any other failure."""
    attempt = 1
    while True:
        stream = new_stream()
        try:
            await stream.open()
            return stream
        except SpeechAtCapacity as exc:
            if attempt >= attempts:
                raise
            log.info("speech replica at capacity; trying another", attempt=attempt, error=str(exc))
            attempt += 1


class SpeechAudioStream:
    """The media gateway's end of one call's ``StreamAudio`` (the runtime's end of the same
    call's speech is ``voicetyped_runtime.links.ConverseStream``)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        session_id: str,
        playback_rate: int,
        on_playback: PlaybackSink,
        on_stop: StopSink,
        *,
        language: str = "",
        resumed: bool = False,
        max_queued: int = 100,
        metadata: tuple[tuple[str, str], ...] = (),
        on_forwarded: Callable[[float], None] | None = None,
        on_failed: Callable[[str], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self._stub = speech_pb2_grpc.SpeechGatewayStub(channel)
        self._playback_rate = playback_rate
        self._on_playback = on_playback
        self._on_stop = on_stop
        self._language = language
        self._resumed = resumed
        self._queue: asyncio.Queue[speech_pb2.AudioUplink | None] = asyncio.Queue()
        self._max_queued = max_queued
        self._metadata = metadata
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._sequence = 0
        self._queued_at: deque[float] = deque()
        self._on_forwarded = on_forwarded
        self._on_failed = on_failed
        self._closing = False
        self.dropped = 0
        self.endpoint = ""
        self.failed: str | None = None

    async def open(self, timeout_s: float = 5.0, *, wait_for_ready: bool = False) -> str:
        """Open the stream; the speech replica's endpoint (AudioStreamReady). Raises
        :class:`SpeechAtCapacity` when the replica takes no new call (never for a ``resumed``
        stream), :class:`SpeechUnavailable` for other failures. With ``wait_for_ready`` the
        attempt waits (within ``timeout_s``) for the channel to connect
        rather than failing at once while it is reconnecting."""
        self._queue.put_nowait(
            speech_pb2.AudioUplink(
                start=speech_pb2.AudioStreamStart(
                    session_id=self.session_id,
                    input_format=common_pb2.AudioFormat(sample_rate_hz=16000, channels=1),
                    playback_format=common_pb2.AudioFormat(
                        sample_rate_hz=self._playback_rate, channels=1
                    ),
                    language=self._language,
                    resumed=self._resumed,
                )
            )
        )
        self._call = self._stub.StreamAudio(
            self._requests(), metadata=self._metadata or None, wait_for_ready=wait_for_ready
        )
        try:
            async with asyncio.timeout(timeout_s):
                first = await self._call.read()
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            self._call.cancel()
            if isinstance(exc, grpc.aio.AioRpcError):
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise SpeechAtCapacity(f"speech gateway: {exc.details()}") from None
                raise SpeechUnavailable(f"speech gateway: {exc.details()}") from None
            raise SpeechUnavailable("speech gateway: timed out") from None
        if first is _EOF or not first.HasField("ready"):
            self._call.cancel()
            raise SpeechUnavailable("speech gateway ended the stream before AudioStreamReady")
        self.endpoint = first.ready.endpoint
        self._reader = asyncio.get_running_loop().create_task(
            self._read(), name=f"speech-down-{self.session_id}"
        )
        return self.endpoint

    def send(self, pcm: bytes, start_ms: int) -> None:
        if self._call is None or self.failed is not None:
            return
        if self._queue.qsize() >= self._max_queued:
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                if self._queued_at:
                    self._queued_at.popleft()
                self.dropped += 1
        self._queue.put_nowait(
            speech_pb2.AudioUplink(
                audio=speech_pb2.AudioChunk(pcm=pcm, start_ms=start_ms, sequence=self._sequence)
            )
        )
        self._queued_at.append(time.monotonic())
        self._sequence += 1

    async def close(self) -> None:
        """Half-close (the call ended) and wait briefly for the gateway to finish."""
        self._closing = True
        self._queue.put_nowait(None)
        if self._reader is not None:
            try:
                async with asyncio.timeout(2.0):
                    await self._reader
            except TimeoutError:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
        if self._call is not None:
            self._call.cancel()

    async def _requests(self) -> AsyncIterator[speech_pb2.AudioUplink]:
        while (msg := await self._queue.get()) is not None:
            if self._queued_at and msg.HasField("audio"):
                # How long the audio waited inside the gateway before gRPC took it.
                waited = time.monotonic() - self._queued_at.popleft()
                if self._on_forwarded is not None:
                    self._on_forwarded(waited)
            yield msg

    async def _read(self) -> None:
        try:
            while (msg := await self._call.read()) is not _EOF:
                kind = msg.WhichOneof("msg")
                if kind == "playback":
                    p = msg.playback
                    self._on_playback(p.request_id, p.pcm, p.last)
                elif kind == "control" and (
                    msg.control.action == speech_pb2.PlaybackControl.ACTION_STOP
                ):
                    self._on_stop(msg.control.request_id)
        except grpc.aio.AioRpcError as exc:
            if not self._closing:
                self._fail(exc.code().name, exc.details() or "")
            return
        if not self._closing:
            self._fail("ENDED", "the speech gateway ended the stream")

    def _fail(self, code: str, detail: str) -> None:
        self.failed = code
        log.warning("speech stream failed", code=code, detail=detail)
        if self._on_failed is not None:
            self._on_failed(code)
