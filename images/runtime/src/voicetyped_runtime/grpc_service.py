"""ConversationRuntime over gRPC: one StreamCall per call from the media gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
from voicetyped.service import tracing
from voicetyped.service.app import GrpcRegistration
from voicetyped.service.logs import get_logger, session_context
from voicetyped.service.streams import open_stream
from voicetyped.v1 import runtime_pb2, runtime_pb2_grpc

from voicetyped_runtime.calls import AttachError, CallManager

log = get_logger("voicetyped.runtime.grpc")

SERVICE_NAME = "voicetyped.v1.ConversationRuntime"


class ConversationRuntimeServicer(runtime_pb2_grpc.ConversationRuntimeServicer):
    def __init__(self, calls: CallManager) -> None:
        self.calls = calls

    async def StreamCall(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[runtime_pb2.CallEvent],
        context: grpc.aio.ServicerContext[runtime_pb2.CallEvent, runtime_pb2.CallCommand],
    ) -> AsyncIterator[runtime_pb2.CallCommand]:
        opened = await open_stream(request_iterator, context, "event", "started")
        if opened is None:
            return
        first, requests = opened
        sid = first.session_id
        with session_context(sid):
            try:
                actor, media = await self.calls.attach(first)
            except AttachError as exc:
                log.warning("call refused", code=exc.code.name, reason=exc.message)
                await context.abort(exc.code, exc.message)
            actor.trace = tracing.from_metadata(context.invocation_metadata())
            generation = media.attach()
            log.info(
                "media stream attached", reattach=first.started.reattach, generation=generation
            )
            reader = asyncio.create_task(self._read(sid, requests))
            try:
                async for command in media.commands(generation):
                    yield command
                if actor.handed_over:
                    # Drained with the call still up: its state is stored for another replica.
                    # An error status (not OK, which reads as "the runtime ended the call")
                    # makes the media gateway reattach, through the Service, elsewhere.
                    log.info("call handed over; media stream told to reattach")
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE, "call handed over: reattach to another replica"
                    )
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                self.calls.media_detached(sid, generation)

    async def _read(self, sid: str, requests: AsyncIterator[runtime_pb2.CallEvent]) -> None:
        with session_context(sid):
            try:
                async for msg in requests:
                    self.calls.deliver(sid, msg)
            except grpc.aio.AioRpcError:
                pass  # the media side went away; the watchdog decides what happens to the call


def register(calls: CallManager) -> GrpcRegistration:
    def add(server: grpc.aio.Server) -> list[str]:
        runtime_pb2_grpc.add_ConversationRuntimeServicer_to_server(
            ConversationRuntimeServicer(calls), server
        )
        return [SERVICE_NAME]

    return add
