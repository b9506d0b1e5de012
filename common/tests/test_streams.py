"""RequestFeed against a real grpc.aio server whose streams end on the server side."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from voicetyped.service.streams import RequestFeed
from voicetyped.v1 import speech_pb2, speech_pb2_grpc


class EndsAfterOne(speech_pb2_grpc.SpeechGatewayServicer):
    """Reads the start and one command, answers, then ends the stream (status OK)."""

    def __init__(self) -> None:
        self.received: list[speech_pb2.SpeechCommand] = []

    async def StreamAudio(  # noqa: N802 - the gRPC method name
        self, request_iterator: AsyncIterator[speech_pb2.AudioUplink], context: Any
    ) -> AsyncIterator[speech_pb2.AudioDownlink]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of this test")
        yield speech_pb2.AudioDownlink()  # pragma: no cover - abort raises

    async def Converse(  # noqa: N802 - the gRPC method name
        self, request_iterator: AsyncIterator[speech_pb2.SpeechCommand], context: Any
    ) -> AsyncIterator[speech_pb2.SpeechUpdate]:
        async for command in request_iterator:
            self.received.append(command)
            if command.HasField("speak"):
                break
        yield speech_pb2.SpeechUpdate()


def speak(request_id: str) -> speech_pb2.SpeechCommand:
    return speech_pb2.SpeechCommand(speak=speech_pb2.SpeakRequest(request_id=request_id))


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, EndsAfterOne]]:
    srv = grpc.aio.server()
    servicer = EndsAfterOne()
    speech_pb2_grpc.add_SpeechGatewayServicer_to_server(servicer, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    yield f"127.0.0.1:{port}", servicer
    await srv.stop(None)


async def test_closed_feed_leaves_the_queue_to_the_next_stream(
    server: tuple[str, EndsAfterOne],
) -> None:
    address, servicer = server
    loop = asyncio.get_running_loop()
    problems: list[str] = []
    loop.set_exception_handler(lambda _, ctx: problems.append(str(ctx.get("message"))))
    queue: asyncio.Queue[speech_pb2.SpeechCommand] = asyncio.Queue()
    start = speech_pb2.SpeechCommand(start=speech_pb2.ConverseStart(session_id="s"))
    async with grpc.aio.insecure_channel(address) as channel:
        stub = speech_pb2_grpc.SpeechGatewayStub(channel)
        for n in range(3):
            queue.put_nowait(speak(f"r{n}"))
            feed = RequestFeed(queue, [start])
            call = stub.Converse(feed)
            async with asyncio.timeout(5):  # a stolen command leaves the server waiting
                replies = [reply async for reply in call]
            assert len(replies) == 1
            assert await call.code() == grpc.StatusCode.OK
            feed.close()
            await asyncio.sleep(0.05)  # grpc's request task sees the end
        queue.put_nowait(speak("left"))
        await asyncio.sleep(0.05)
    # Every stream got its own command; none was taken by the request task of an ended stream.
    spoken = [c.speak.request_id for c in servicer.received if c.HasField("speak")]
    assert spoken == ["r0", "r1", "r2"]
    assert queue.qsize() == 1 and queue.get_nowait().speak.request_id == "left"
    del call, feed
    gc.collect()
    await asyncio.sleep(0)
    assert problems == []  # no "Task was destroyed but it is pending", no aclose() errors


async def test_feed_yields_first_then_queue_then_stops_on_close() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    queue.put_nowait(2)
    feed = RequestFeed(queue, [0, 1])
    assert [await anext(feed) for _ in range(3)] == [0, 1, 2]
    waiting = asyncio.ensure_future(anext(feed))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    feed.close()
    with pytest.raises(StopAsyncIteration):
        await waiting
    queue.put_nowait(3)
    with pytest.raises(StopAsyncIteration):
        await anext(feed)
    assert queue.get_nowait() == 3  # closing took nothing
