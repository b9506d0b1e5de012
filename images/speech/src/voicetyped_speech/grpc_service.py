"""SpeechGateway over gRPC: StreamAudio (media gateway) and Converse (runtime), per call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from voicetyped.service import tracing
from voicetyped.service.app import GrpcRegistration
from voicetyped.service.logs import get_logger, session_context
from voicetyped.service.streams import open_stream
from voicetyped.v1 import speech_pb2, speech_pb2_grpc

from voicetyped_speech.barge_in import BargeInMode
from voicetyped_speech.calls import CallRegistry, SpeechCall
from voicetyped_speech.playback import AudioOut
from voicetyped_speech.tts import SUPPORTED_RATES

log = get_logger("voicetyped.speech.grpc")

SERVICE_NAME = "voicetyped.v1.SpeechGateway"
INPUT_RATE = 16000

_BARGE_IN = {
    speech_pb2.SpeakRequest.BARGE_IN_UNSPECIFIED: BargeInMode.ALLOW,
    speech_pb2.SpeakRequest.BARGE_IN_ALLOW: BargeInMode.ALLOW,
    speech_pb2.SpeakRequest.BARGE_IN_DENY: BargeInMode.DENY,
    speech_pb2.SpeakRequest.BARGE_IN_IMMEDIATE: BargeInMode.IMMEDIATE,
}
"""SpeakRequest.barge_in -> the player's mode (unknown values: the default, allow)."""

CallFactory = Callable[[speech_pb2.AudioStreamStart, tracing.Context], SpeechCall]
Admission = Callable[[speech_pb2.AudioStreamStart], tuple[grpc.StatusCode, str] | None]
"""Whether a new audio stream is taken: None, or the status and message it is refused with."""
_Context = grpc.aio.ServicerContext[Any, Any]


class SpeechGatewayServicer(speech_pb2_grpc.SpeechGatewayServicer):
    def __init__(
        self,
        calls: CallRegistry,
        new_call: CallFactory,
        endpoint: Callable[[], str],
        converse_wait_s: float,
        admit: Admission,
    ) -> None:
        self.calls = calls
        self._new_call = new_call
        self._endpoint = endpoint
        self._converse_wait_s = converse_wait_s
        self._admit = admit

    async def StreamAudio(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[speech_pb2.AudioUplink], context: _Context
    ) -> AsyncIterator[speech_pb2.AudioDownlink]:
        opened = await open_stream(request_iterator, context, "msg", "start")
        if opened is None:
            return
        first, requests = opened
        start = first.start
        problem = _check_start(start)
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        refused = self._admit(start)
        if refused is not None:
            await context.abort(*refused)
        with session_context(start.session_id):
            call = self._new_call(start, tracing.from_metadata(context.invocation_metadata()))
            await self.calls.add(call)
            log.info("audio stream opened", playback_rate=start.playback_format.sample_rate_hz)
            reader = asyncio.create_task(self._read_audio(call, requests))
            try:
                yield speech_pb2.AudioDownlink(
                    ready=speech_pb2.AudioStreamReady(endpoint=self._endpoint())
                )
                while (item := await call.downlink.get()) is not None:
                    if isinstance(item, AudioOut):
                        yield speech_pb2.AudioDownlink(
                            playback=speech_pb2.PlaybackAudio(
                                request_id=item.request_id,
                                pcm=item.pcm,
                                sequence=item.sequence,
                                last=item.last,
                            )
                        )
                    else:
                        yield speech_pb2.AudioDownlink(
                            control=speech_pb2.PlaybackControl(
                                action=speech_pb2.PlaybackControl.ACTION_STOP,
                                request_id=item.request_id,
                            )
                        )
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                await call.close()
                await self.calls.remove(call)
                log.info("audio stream closed")

    async def _read_audio(
        self, call: SpeechCall, requests: AsyncIterator[speech_pb2.AudioUplink]
    ) -> None:
        with session_context(call.session_id):
            try:
                async for msg in requests:
                    if msg.WhichOneof("msg") == "audio":
                        call.push_audio(msg.audio.pcm, msg.audio.start_ms)
            except grpc.aio.AioRpcError:
                pass  # the media gateway went away: the call ends below
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("audio stream failed")
            await call.finish()

    async def Converse(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[speech_pb2.SpeechCommand], context: _Context
    ) -> AsyncIterator[speech_pb2.SpeechUpdate]:
        opened = await open_stream(request_iterator, context, "msg", "start")
        if opened is None:
            return
        first, requests = opened
        sid = first.start.session_id
        with session_context(sid):
            call = await self.calls.wait_for(sid, self._converse_wait_s)
            if call is None:
                await context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"no audio stream for session {sid!r} on this speech replica",
                )
            assert call is not None
            sub = call.subscribe(first.start.partials, first.start.language)
            log.info("runtime attached", partials=first.start.partials)
            reader = asyncio.create_task(self._read_commands(call, requests))
            try:
                async for update in call.updates(sub):
                    yield update
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                call.unsubscribe(sub)

    async def _read_commands(
        self, call: SpeechCall, requests: AsyncIterator[speech_pb2.SpeechCommand]
    ) -> None:
        with session_context(call.session_id):
            try:
                async for cmd in requests:
                    kind = cmd.WhichOneof("msg")
                    if kind == "speak":
                        s = cmd.speak
                        mode = _BARGE_IN.get(s.barge_in, BargeInMode.ALLOW)
                        call.player.speak(s.request_id, s.text, s.voice, barge_in=mode)
                    elif kind == "cancel":
                        call.player.cancel(cmd.cancel.request_id)
                    elif kind == "context":
                        call.expect(cmd.context)
            except grpc.aio.AioRpcError:
                pass  # the runtime went away; it reconnects


def _check_start(start: speech_pb2.AudioStreamStart) -> str | None:
    if not start.session_id:
        return "AudioStreamStart.session_id is empty"
    fmt = start.input_format
    if fmt.sample_rate_hz != INPUT_RATE or fmt.channels not in (0, 1):
        return (
            f"AudioStreamStart.input_format must be {INPUT_RATE} Hz mono, not "
            f"{fmt.sample_rate_hz} Hz x {fmt.channels}"
        )
    out = start.playback_format
    if out.sample_rate_hz not in SUPPORTED_RATES or out.channels not in (0, 1):
        rates = " or ".join(str(r) for r in SUPPORTED_RATES)
        return (
            f"AudioStreamStart.playback_format must be {rates} Hz mono, not "
            f"{out.sample_rate_hz} Hz x {out.channels}"
        )
    return None


def register(servicer: SpeechGatewayServicer) -> GrpcRegistration:
    def add(server: grpc.aio.Server) -> list[str]:
        speech_pb2_grpc.add_SpeechGatewayServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    return add
