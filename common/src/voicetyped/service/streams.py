"""Helpers for the per-call bidirectional gRPC streams every service serves."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


async def open_stream(
    request_iterator: AsyncIterator[M],
    context: grpc.aio.ServicerContext[Any, Any],
    oneof: str,
    first: str,
) -> tuple[M, AsyncIterator[M]] | None:
    """The stream's first message, which must set ``first`` in its ``oneof``, and the iterator of
    the rest; None when the client closed the stream without sending anything. Any other first
    message aborts the call with INVALID_ARGUMENT, naming what was expected."""
    requests = aiter(request_iterator)
    try:
        message = await anext(requests)
    except StopAsyncIteration:
        return None
    if message.WhichOneof(oneof) != first:
        expected = type(getattr(message, first)).__name__
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the first {type(message).__name__} of a stream must be {expected}",
        )
    return message, requests


T = TypeVar("T")


class RequestFeed(Generic[T]):
    """The requests of one client-streaming gRPC call: ``first``, then items of ``queue`` (which
    may outlive the call and feed the stream that replaces it) until :meth:`close`.

    grpc.aio consumes a request iterator in a task of its own and cancels that task only when
    the client cancels the call. When the server ends the stream, or it breaks, the task goes on
    waiting on the iterator -- it would take the next message from the shared queue and write
    it to the dead call, and it is destroyed pending when collected. Call :meth:`close` once the
    call is over: iteration ends without taking anything more. An async iterator class, not an
    async generator, so nothing needs finalizing either.
    """

    def __init__(self, queue: asyncio.Queue[T], first: Iterable[T] = ()) -> None:
        self._queue = queue
        self._first = deque(first)
        self._closed = asyncio.Event()

    def close(self) -> None:
        self._closed.set()

    def __aiter__(self) -> RequestFeed[T]:
        return self

    async def __anext__(self) -> T:
        if self._first:
            return self._first.popleft()
        if self._closed.is_set():
            raise StopAsyncIteration
        if not self._queue.empty():
            return self._queue.get_nowait()
        get = asyncio.ensure_future(self._queue.get())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            done, _ = await asyncio.wait({get, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not get.done():
                get.cancel()  # an unfinished Queue.get takes nothing when cancelled
        if get not in done:
            raise StopAsyncIteration
        return get.result()  # taken just as the call closed: in flight, like any write
