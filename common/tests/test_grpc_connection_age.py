"""A server's maximum connection age moves its clients to a new connection (so they resolve
the target again and find replicas added since) without cutting a stream that is running."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from voicetyped.service.config import ServiceSettings
from voicetyped.service.grpc_client import create_channel
from voicetyped.service.grpc_server import GrpcServer

if TYPE_CHECKING:
    Ctx = grpc.aio.ServicerContext[bytes, bytes]

SERVICE = "test.Connections"
AGE_S = 0.5
TICKS = 25  # one every 0.1 s: the stream outlives the connection's age five times over


async def _peer(request: bytes, context: Ctx) -> bytes:
    """The client's address and port as this server sees it: a new port is a new connection."""
    return context.peer().encode()


async def _ticks(request: bytes, context: Ctx) -> AsyncIterator[bytes]:
    for i in range(TICKS):
        await asyncio.sleep(0.1)
        yield str(i).encode()


def _register(server: grpc.aio.Server) -> None:
    handlers: dict[str, Any] = {
        "Peer": grpc.unary_unary_rpc_method_handler(_peer),
        "Ticks": grpc.unary_stream_rpc_method_handler(_ticks),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


async def _serving(max_age_s: float) -> GrpcServer:
    server = GrpcServer("127.0.0.1", 0, max_connection_age_s=max_age_s)
    _register(server.server)
    await server.start()
    return server


def _same(data: bytes) -> bytes:
    return data


async def _peer_of(channel: grpc.aio.Channel) -> str:
    call = channel.unary_unary(
        f"/{SERVICE}/Peer", request_serializer=_same, response_deserializer=_same
    )
    reply: bytes = await call(b"", timeout=5)
    return reply.decode()


def _ticks_of(channel: grpc.aio.Channel) -> Any:
    stream = channel.unary_stream(
        f"/{SERVICE}/Ticks", request_serializer=_same, response_deserializer=_same
    )
    return stream(b"", timeout=10)


async def test_clients_move_to_a_new_connection_and_running_streams_continue() -> None:
    server = await _serving(AGE_S)
    channel = create_channel(f"127.0.0.1:{server.port}")
    try:
        first = await _peer_of(channel)
        ticks = _ticks_of(channel)
        got = [m async for m in ticks]
        assert got == [str(i).encode() for i in range(TICKS)]  # never cut by the GOAWAY
        assert await ticks.code() == grpc.StatusCode.OK
        # The connection was asked to go after ~AGE_S: the next call arrives on a new one.
        deadline = time.monotonic() + 5
        now = await _peer_of(channel)
        while now == first and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            now = await _peer_of(channel)
        assert now != first, "the client kept its first connection past the maximum age"
    finally:
        await channel.close(None)
        await server.stop(0)


async def test_without_a_maximum_age_the_connection_is_kept() -> None:
    server = await _serving(0)
    channel = create_channel(f"127.0.0.1:{server.port}")
    try:
        first = await _peer_of(channel)
        ticks = _ticks_of(channel)
        assert len([m async for m in ticks]) == TICKS  # 2.5 s, five ages of the other test
        assert await _peer_of(channel) == first
    finally:
        await channel.close(None)
        await server.stop(0)


@pytest.mark.parametrize("age", [-1, 86_401])
def test_the_age_setting_is_bounded(age: float) -> None:
    with pytest.raises(ValueError, match="grpc_max_connection_age_s"):
        ServiceSettings(grpc_max_connection_age_s=age)


def test_services_move_clients_every_30_s_by_default() -> None:
    assert ServiceSettings().grpc_max_connection_age_s == 30.0
