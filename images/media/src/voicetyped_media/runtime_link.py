"""One call's ``ConversationRuntime.StreamCall``: lifecycle and DTMF up, call control down.

The stream is the runtime's hold on the call. If it breaks while the call is up (runtime replica
restarted or replaced), it is reopened with ``CallStarted.reattach = true`` and the runtime
resumes the stored session; events meanwhile are kept (bounded) and sent on reconnect. A
runtime that refuses the call outright (no dialog, INVALID_ARGUMENT, NOT_FOUND on reattach) is
reported through ``on_refused`` and the call is hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from voicetyped.service.logs import get_logger
from voicetyped.v1 import runtime_pb2, runtime_pb2_grpc

log = get_logger("voicetyped.media.runtime")

CommandSink = Callable[[runtime_pb2.CallCommand], None]
RefusedSink = Callable[[str], None]
_FINAL = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
}


def _now() -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(time.time_ns())
    return ts


class RuntimeLink:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        session_id: str,
        started: runtime_pb2.CallStarted,
        on_command: CommandSink,
        on_refused: RefusedSink,
        *,
        reconnect_for_s: float = 30.0,
        max_backlog: int = 256,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.session_id = session_id
        self._stub = runtime_pb2_grpc.ConversationRuntimeStub(channel)
        self._started = started
        self._on_command = on_command
        self._on_refused = on_refused
        self._metadata = metadata
        self._reconnect_for_s = reconnect_for_s
        self._backlog: deque[runtime_pb2.CallEvent] = deque(maxlen=max_backlog)
        self._outbox: asyncio.Queue[runtime_pb2.CallEvent | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._ended = False
        self.attached = asyncio.Event()
        self.reattaches = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"runtime-{self.session_id}"
        )

    def send(self, **event: object) -> None:
        """Queue a CallEvent with one of its event fields, e.g. ``send(dtmf=...)``."""
        msg = runtime_pb2.CallEvent(session_id=self.session_id, occurred_at=_now(), **event)  # type: ignore[arg-type]
        if self._outbox is not None:
            self._outbox.put_nowait(msg)
        else:
            self._backlog.append(msg)

    def speech_moved(self, endpoint: str) -> None:
        """The call's speech stream was reopened on ``endpoint``: the runtime's Converse moves
        there, and a later reattach (a runtime restart) names it."""
        self._started.speech_endpoint = endpoint
        self.send(speech_moved=runtime_pb2.SpeechMoved(speech_endpoint=endpoint))

    async def end(
        self, reason: runtime_pb2.CallEnded.Reason.ValueType, code: int = 0, timeout_s: float = 2.0
    ) -> None:
        """Send CallEnded and close the stream (the runtime finishes the session)."""
        if self._ended:
            return
        self._ended = True
        self.send(ended=runtime_pb2.CallEnded(reason=reason, code=code))
        if self._outbox is not None:
            self._outbox.put_nowait(None)
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(self._task)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        reattach = False
        backoff = 0.1
        deadline: float | None = None
        while not self._ended:
            outbox: asyncio.Queue[runtime_pb2.CallEvent | None] = asyncio.Queue()
            started = runtime_pb2.CallStarted()
            started.CopyFrom(self._started)
            started.reattach = reattach
            outbox.put_nowait(runtime_pb2.CallEvent(session_id=self.session_id, started=started))
            while self._backlog:
                outbox.put_nowait(self._backlog.popleft())
            self._outbox = outbox
            try:
                call = self._stub.StreamCall(
                    self._events(outbox), wait_for_ready=True, metadata=self._metadata or None
                )
                async for command in call:
                    if not self.attached.is_set():
                        self.attached.set()
                    backoff, deadline = 0.1, None
                    self._on_command(command)
                if self._ended:
                    return
                log.info("runtime ended the call stream")
                return
            except grpc.aio.AioRpcError as exc:
                if self._ended:
                    return
                code = exc.code()
                if code in _FINAL:
                    self._on_refused(f"{code.name}: {exc.details()}")
                    return
                log.warning("runtime stream broken; reattaching", code=code.name)
            finally:
                self._outbox = None
                # Events that were queued but never sent go to the next stream.
                while not outbox.empty():
                    item = outbox.get_nowait()
                    if item is not None and not item.HasField("started"):
                        self._backlog.append(item)
                # grpc.aio leaves its request task waiting when the server ended the stream:
                # end our iterator so that task finishes (see voicetyped.service.streams).
                outbox.put_nowait(None)
            reattach = True
            self.reattaches += 1
            now = time.monotonic()
            deadline = deadline or now + self._reconnect_for_s
            if now > deadline:
                self._on_refused("runtime unreachable")
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _events(
        self, outbox: asyncio.Queue[runtime_pb2.CallEvent | None]
    ) -> AsyncIterator[runtime_pb2.CallEvent]:
        while (event := await outbox.get()) is not None:
            yield event
