"""Clients of a speech gateway's two per-call streams, as the media gateway and the runtime use
them; for tests, benchmarks and tools that stand in for either side.

Every message received is kept with its arrival time (``time.perf_counter()``), so latencies can
be measured from the outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc
from voicetyped.v1 import common_pb2, speech_pb2, speech_pb2_grpc

FRAME_MS = 20
_M = TypeVar("_M")


@dataclass
class Received(Generic[_M]):
    at: float
    message: _M


@dataclass
class _Inbox(Generic[_M]):
    items: list[Received[_M]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, message: _M) -> None:
        self.items.append(Received(time.perf_counter(), message))
        self.changed.set()

    async def wait_for(
        self, predicate: Callable[[_M], bool], timeout_s: float, start: int = 0
    ) -> Received[_M]:
        """The first item from index ``start`` matching ``predicate`` (waits for it)."""
        async with asyncio.timeout(timeout_s):
            i = start
            while True:
                while i < len(self.items):
                    if predicate(self.items[i].message):
                        return self.items[i]
                    i += 1
                self.changed.clear()
                await self.changed.wait()


class MediaSide:
    """The media gateway's ``StreamAudio``: sends caller PCM (16 kHz), receives playback."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        session_id: str,
        playback_rate: int = 8000,
        *,
        resumed: bool = False,
    ) -> None:
        self.session_id = session_id
        self.playback_rate = playback_rate
        self.resumed = resumed
        """Open as a running call's stream moving here (AudioStreamStart.resumed)."""
        self._stub = speech_pb2_grpc.SpeechGatewayStub(channel)
        self._outbox: asyncio.Queue[speech_pb2.AudioUplink | None] = asyncio.Queue()
        self.downlink: _Inbox[speech_pb2.AudioDownlink] = _Inbox()
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._sequence = 0
        self.sent_ms = 0
        """Call time of the end of the audio sent so far."""

    async def open(self, timeout_s: float = 10.0) -> str:
        """Start the stream; returns the endpoint from AudioStreamReady."""
        self._outbox.put_nowait(
            speech_pb2.AudioUplink(
                start=speech_pb2.AudioStreamStart(
                    session_id=self.session_id,
                    input_format=common_pb2.AudioFormat(sample_rate_hz=16000, channels=1),
                    playback_format=common_pb2.AudioFormat(
                        sample_rate_hz=self.playback_rate, channels=1
                    ),
                    resumed=self.resumed,
                )
            )
        )
        self._call = self._stub.StreamAudio(self._requests())
        self._reader = asyncio.create_task(self._read())
        ready = asyncio.ensure_future(
            self.downlink.wait_for(lambda m: m.HasField("ready"), timeout_s)
        )
        await asyncio.wait({ready, self._reader}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():  # the stream ended first: raise its error
            ready.cancel()
            await self._reader
            raise RuntimeError("the audio stream ended before AudioStreamReady")
        return str(ready.result().message.ready.endpoint)

    def send(self, pcm: bytes) -> None:
        self._outbox.put_nowait(
            speech_pb2.AudioUplink(
                audio=speech_pb2.AudioChunk(pcm=pcm, start_ms=self.sent_ms, sequence=self._sequence)
            )
        )
        self._sequence += 1
        self.sent_ms += len(pcm) // 32

    async def stream(
        self,
        pcm: bytes,
        realtime: bool = True,
        on_frame: Callable[[int], None] | None = None,
    ) -> None:
        """Send ``pcm`` in 20 ms chunks, paced in real time unless ``realtime`` is False;
        ``on_frame(call_ms)`` after each chunk (for marking moments of the audio)."""
        step = 16 * FRAME_MS * 2
        started = time.perf_counter() - self.sent_ms / 1000
        for offset in range(0, len(pcm), step):
            self.send(pcm[offset : offset + step])
            if on_frame is not None:
                on_frame(self.sent_ms)
            if realtime:
                delay = started + self.sent_ms / 1000 - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif offset % (step * 50) == 0:
                await asyncio.sleep(0)

    def playback_pcm(self, request_id: str) -> bytes:
        return b"".join(
            r.message.playback.pcm
            for r in self.downlink.items
            if r.message.HasField("playback") and r.message.playback.request_id == request_id
        )

    async def close(self) -> None:
        """Half-close (the call ended) and wait for the gateway to end the stream."""
        self._outbox.put_nowait(None)
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await asyncio.wait_for(self._reader, 30)

    def cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()

    async def _requests(self) -> AsyncIterator[speech_pb2.AudioUplink]:
        while (msg := await self._outbox.get()) is not None:
            yield msg

    async def _read(self) -> None:
        async for msg in self._call:
            self.downlink.add(msg)


class RuntimeSide:
    """The runtime's ``Converse``: sends SpeakRequests and cancels, receives updates."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        session_id: str,
        partials: bool = False,
        language: str = "",
    ) -> None:
        self.session_id = session_id
        self._stub = speech_pb2_grpc.SpeechGatewayStub(channel)
        self._outbox: asyncio.Queue[speech_pb2.SpeechCommand | None] = asyncio.Queue()
        self._outbox.put_nowait(
            speech_pb2.SpeechCommand(
                start=speech_pb2.ConverseStart(
                    session_id=session_id, partials=partials, language=language
                )
            )
        )
        self.updates: _Inbox[speech_pb2.SpeechUpdate] = _Inbox()
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self.error: grpc.aio.AioRpcError | None = None

    def open(self) -> None:
        self._call = self._stub.Converse(self._requests())
        self._reader = asyncio.create_task(self._read())

    def speak(self, request_id: str, text: str, voice: str = "", barge_in: bool = True) -> float:
        """Queue a SpeakRequest; returns the time it was queued."""
        policy = speech_pb2.SpeakRequest
        self._outbox.put_nowait(
            speech_pb2.SpeechCommand(
                speak=speech_pb2.SpeakRequest(
                    request_id=request_id,
                    text=text,
                    voice=voice,
                    barge_in=policy.BARGE_IN_ALLOW if barge_in else policy.BARGE_IN_DENY,
                )
            )
        )
        return time.perf_counter()

    def cancel(self, request_id: str = "") -> float:
        self._outbox.put_nowait(
            speech_pb2.SpeechCommand(cancel=speech_pb2.CancelSpeech(request_id=request_id))
        )
        return time.perf_counter()

    def expect(self, context: speech_pb2.RecognitionContext) -> None:
        """What the caller is expected to say next (the runtime sends it on state entry)."""
        self._outbox.put_nowait(speech_pb2.SpeechCommand(context=context))

    def finals(self) -> list[Received[speech_pb2.SpeechUpdate]]:
        kind = speech_pb2.TranscriptEvent.KIND_FINAL
        return [
            r
            for r in self.updates.items
            if r.message.HasField("transcript") and r.message.transcript.kind == kind
        ]

    async def wait_closed(self, timeout_s: float = 30.0) -> None:
        """Until the gateway ends the stream (the call ended)."""
        if self._reader is not None:
            await asyncio.wait_for(self._reader, timeout_s)
        self._outbox.put_nowait(None)  # lets the request generator finish too

    async def close(self) -> None:
        self._outbox.put_nowait(None)
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _requests(self) -> AsyncIterator[speech_pb2.SpeechCommand]:
        while (msg := await self._outbox.get()) is not None:
            yield msg

    async def _read(self) -> None:
        try:
            async for msg in self._call:
                self.updates.add(msg)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.error = exc
