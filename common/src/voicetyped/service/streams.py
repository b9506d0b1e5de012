"""Helpers for the per-call bidirectional gRPC streams every service serves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

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
