"""Per-call links to the media gateway (StreamCall) and the speech gateway (Converse)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import grpc
from voicetyped.recognition import RecognitionContext, context_to_proto
from voicetyped.service.grpc_client import create_channel
from voicetyped.service.logs import get_logger
from voicetyped.service.streams import RequestFeed
from voicetyped.v1 import runtime_pb2, session_pb2, speech_pb2, speech_pb2_grpc
from voicetyped_specs.dialog.model import BargeIn

from voicetyped_runtime import engine_io as e

log = get_logger("voicetyped.runtime.links")

_BARGE_IN = {
    BargeIn.ALLOW: speech_pb2.SpeakRequest.BARGE_IN_ALLOW,
    BargeIn.DENY: speech_pb2.SpeakRequest.BARGE_IN_DENY,
    BargeIn.IMMEDIATE: speech_pb2.SpeakRequest.BARGE_IN_IMMEDIATE,
}


class MediaLink:
    """Commands for the media gateway, buffered while its stream is away (a restart)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[runtime_pb2.CallCommand | None] = asyncio.Queue()
        self.attached = asyncio.Event()
        self.generation = 0

    def send(self, command: runtime_pb2.CallCommand) -> None:
        self._queue.put_nowait(command)

    def close(self) -> None:
        self._queue.put_nowait(None)

    def attach(self) -> int:
        self.generation += 1
        self.attached.set()
        return self.generation

    def detach(self, generation: int) -> None:
        if generation == self.generation:
            self.attached.clear()

    async def commands(self, generation: int) -> AsyncIterator[runtime_pb2.CallCommand]:
        """Commands for stream ``generation``; ends with the call or a newer stream."""
        while generation == self.generation:
            command = await self._queue.get()
            if command is None:
                self._queue.put_nowait(None)  # let any other reader see the end too
                return
            if generation != self.generation:
                self._queue.put_nowait(command)  # not ours to deliver any more
                return
            yield command


def command_for(effect: e.TransferCall | e.HangupCall) -> runtime_pb2.CallCommand:
    if isinstance(effect, e.TransferCall):
        return runtime_pb2.CallCommand(
            command_id=effect.command_id, transfer=session_pb2.Transfer(target_uri=effect.target)
        )
    return runtime_pb2.CallCommand(
        command_id=effect.command_id, hangup=session_pb2.Hangup(reason_code=effect.reason_code)
    )


class ConverseStream:
    """The runtime's ``Converse`` stream to the speech replica holding one call's audio (the
    media gateway's end is ``voicetyped_media.speech_audio.SpeechAudioStream``).

    When the stream breaks it is reopened to the same replica with backoff (a blip); commands
    wait across reconnects. When the media gateway reopens the call's audio stream on another
    replica (``CallEvent.speech_moved``: the first one failed), :meth:`move` switches there at
    once and the old replica is never dialled again; the prompts that had not finished playing
    (their audio went with the old replica) are asked of the new one again, from their start.
    A stream the replica ended (the call's audio stream ended there) is not redialled: only a
    move or the call's end follows. Updates are translated to engine inputs for ``deliver``.
    """

    def __init__(
        self,
        session_id: str,
        endpoint: str,
        partials: bool,
        deliver: Callable[[e.Input], None],
        language: str = "",
        observe: Callable[[speech_pb2.SpeechUpdate], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self.endpoint = endpoint
        self.partials = partials
        self.language = language
        """The call's recognition language (its dialog's settings.language)."""
        self._deliver = deliver
        self._observe = observe
        """Sees every update first (the live console: partials, VAD and playback times)."""
        self._outbox: asyncio.Queue[speech_pb2.SpeechCommand] = asyncio.Queue()
        self._unfinished: dict[str, speech_pb2.SpeechCommand] = {}  # request id -> its speak
        self._context: speech_pb2.SpeechCommand | None = None  # the dialog state's, resent
        self._moved = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._heard = False  # the current stream has delivered something
        self.moves = 0

    def start(self) -> None:
        if self.endpoint and self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"speech-link-{self.session_id}")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def move(self, endpoint: str) -> None:
        """The call's audio stream is now on ``endpoint``: converse there (also when it is
        the same replica: its stream there is a new one)."""
        log.info("speech stream moved", endpoint=endpoint, previous=self.endpoint)
        self.endpoint = endpoint
        self.moves += 1
        # A fresh queue: the old stream's request feed may still take from the old one.
        self._outbox = asyncio.Queue()
        for command in self._unfinished.values():
            self._outbox.put_nowait(command)
        self._moved.set()
        if self._task is None:
            self.start()

    def speak(self, effect: e.Speak) -> None:
        command = speech_pb2.SpeechCommand(
            speak=speech_pb2.SpeakRequest(
                request_id=effect.request_id,
                text=effect.text,
                voice=effect.voice,
                barge_in=_BARGE_IN[effect.barge_in],
            )
        )
        self._unfinished[effect.request_id] = command
        self._outbox.put_nowait(command)

    def expect(self, context: RecognitionContext) -> None:
        """What the caller is expected to say now (the dialog entered a state); every stream
        this call opens later (a reconnect, a move) starts with it too."""
        self._context = speech_pb2.SpeechCommand(context=context_to_proto(context))
        self._outbox.put_nowait(self._context)

    def cancel(self, effect: e.CancelSpeech) -> None:
        for request_id in effect.request_ids or ("",):
            if request_id:
                self._unfinished.pop(request_id, None)
            else:
                self._unfinished.clear()
            self._outbox.put_nowait(
                speech_pb2.SpeechCommand(cancel=speech_pb2.CancelSpeech(request_id=request_id))
            )

    async def _run(self) -> None:
        backoff = 0.2
        while not self._closed:
            self._moved.clear()
            attempt = asyncio.create_task(self._converse(self.endpoint))
            moved = asyncio.create_task(self._moved.wait())
            try:
                await asyncio.wait({attempt, moved}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (attempt, moved):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if self._moved.is_set():
                backoff = 0.2
                continue
            ended = attempt.result()
            if self._heard:
                backoff, self._heard = 0.2, False
            with contextlib.suppress(TimeoutError):
                # Ended by the replica: wait for a move (or the call's end); broken: retry.
                await asyncio.wait_for(self._moved.wait(), None if ended else backoff)
            backoff = 0.2 if ended else min(backoff * 2, 5.0)

    async def _converse(self, endpoint: str) -> bool:
        """One Converse stream to ``endpoint``: True when the replica ended it, False when it
        broke."""
        start = speech_pb2.SpeechCommand(
            start=speech_pb2.ConverseStart(
                session_id=self.session_id, partials=self.partials, language=self.language
            )
        )
        first = [start] if self._context is None else [start, self._context]
        feed = RequestFeed(self._outbox, first)  # commands wait here across reconnects
        try:
            async with create_channel(endpoint) as channel:
                stub = speech_pb2_grpc.SpeechGatewayStub(channel)
                async for update in stub.Converse(feed):
                    self._update(update)
            return True
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "speech stream broken; reconnecting", endpoint=endpoint, code=exc.code().name
            )
            return False
        finally:
            feed.close()

    def _update(self, update: speech_pb2.SpeechUpdate) -> None:
        self._heard = True
        if self._observe is not None:
            try:
                self._observe(update)
            except Exception:
                log.exception("console watch failed")
        inp = _input_for(update)
        if isinstance(inp, e.PlaybackDone):
            self._unfinished.pop(inp.request_id, None)
        if inp is not None:
            self._deliver(inp)
        elif update.HasField("error"):
            error = update.error
            self._unfinished.pop(error.request_id, None)
            # A language the model cannot recognise: the dialog and the deployment disagree.
            unsupported = error.code == speech_pb2.SpeechError.CODE_LANGUAGE_UNSUPPORTED
            (log.error if unsupported else log.warning)(
                "speech gateway error",
                code=speech_pb2.SpeechError.Code.Name(error.code),
                detail=error.message,
            )


def _input_for(update: speech_pb2.SpeechUpdate) -> e.Input | None:
    kind = update.WhichOneof("msg")
    if kind == "vad":
        if update.vad.kind == speech_pb2.VadEvent.KIND_SPEECH_START:
            return e.SpeechStarted(update.vad.utterance_id)
        if update.vad.kind == speech_pb2.VadEvent.KIND_SPEECH_END:
            return e.SpeechEnded(update.vad.utterance_id)
    elif kind == "transcript":
        t = update.transcript
        return e.Transcript(
            utterance_id=t.utterance_id,
            text=t.speech.transcript,
            final=t.kind == speech_pb2.TranscriptEvent.KIND_FINAL,
            confidence=t.speech.confidence,
            start_ms=t.speech.timing.start_ms,
            end_ms=t.speech.timing.end_ms,
        )
    elif kind == "playback":
        p = update.playback
        if p.kind in (
            speech_pb2.PlaybackEvent.KIND_FINISHED,
            speech_pb2.PlaybackEvent.KIND_CANCELLED,
        ):
            return e.PlaybackDone(
                p.request_id, cancelled=p.kind == speech_pb2.PlaybackEvent.KIND_CANCELLED
            )
    return None
