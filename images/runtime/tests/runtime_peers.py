"""The runtime's gRPC peers for its end-to-end tests, speaking the voicetyped.v1 contracts.

- :class:`SpeechPeer` serves ``SpeechGateway.Converse`` like a speech gateway:
  it records SpeakRequests, reports each as played after ``play_s``, and lets
  a test inject the caller's speech (VAD + transcripts).
- :class:`IntegrationPeer` serves ``IntegrationGateway.Execute``: it records
  every request (idempotency keys) and answers from a test-set function,
  optionally after a delay.
- :class:`MediaPeer` is the media gateway's side of ``StreamCall``.

They sit where the real speech and integration gateways will be (their own
issues); the runtime process under test is the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from voicetyped.v1 import (
    common_pb2,
    integration_pb2,
    integration_pb2_grpc,
    runtime_pb2,
    runtime_pb2_grpc,
    speech_pb2,
    speech_pb2_grpc,
)
from voicetyped_testkit.processes import ServiceProcess, free_port


@dataclass
class Spoken:
    session_id: str
    request_id: str
    text: str
    at: float


class SpeechPeer(speech_pb2_grpc.SpeechGatewayServicer):
    def __init__(self, play_s: float = 0.05) -> None:
        self.play_s = play_s
        self.spoken: list[Spoken] = []
        self.cancelled: list[str] = []
        self.contexts: list[tuple[str, speech_pb2.RecognitionContext]] = []
        self.streams: dict[str, asyncio.Queue[speech_pb2.SpeechUpdate]] = {}
        self.opened: list[str] = []
        self.languages: dict[str, str] = {}
        """Session -> the recognition language its (last) ConverseStart named."""
        self.server = grpc.aio.server()
        speech_pb2_grpc.add_SpeechGatewayServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def Converse(  # noqa: N802
        self, request_iterator: AsyncIterator[speech_pb2.SpeechCommand], context: Any
    ) -> AsyncIterator[speech_pb2.SpeechUpdate]:
        requests = aiter(request_iterator)
        first = await anext(requests)
        sid = first.start.session_id
        self.opened.append(sid)
        self.languages[sid] = first.start.language
        out: asyncio.Queue[speech_pb2.SpeechUpdate] = asyncio.Queue()
        self.streams[sid] = out

        async def read() -> None:
            async for cmd in requests:
                if cmd.HasField("speak"):
                    self.spoken.append(
                        Spoken(sid, cmd.speak.request_id, cmd.speak.text, time.time())
                    )
                    asyncio.get_running_loop().call_later(
                        self.play_s, out.put_nowait, _played(cmd.speak.request_id)
                    )
                elif cmd.HasField("cancel"):
                    self.cancelled.append(cmd.cancel.request_id)
                elif cmd.HasField("context"):
                    self.contexts.append((sid, cmd.context))

        reader = asyncio.create_task(read())
        try:
            while True:
                yield await out.get()
        finally:
            reader.cancel()

    def say(self, session_id: str, text: str, utterance_id: str) -> None:
        """The caller says ``text``: speech start, end, final transcript."""
        out = self.streams[session_id]
        vad = speech_pb2.VadEvent
        out.put_nowait(
            speech_pb2.SpeechUpdate(vad=vad(kind=vad.KIND_SPEECH_START, utterance_id=utterance_id))
        )
        out.put_nowait(
            speech_pb2.SpeechUpdate(vad=vad(kind=vad.KIND_SPEECH_END, utterance_id=utterance_id))
        )
        out.put_nowait(
            speech_pb2.SpeechUpdate(
                transcript=speech_pb2.TranscriptEvent(
                    kind=speech_pb2.TranscriptEvent.KIND_FINAL,
                    utterance_id=utterance_id,
                    speech=common_pb2.SpeechEvent(
                        transcript=text,
                        confidence=0.9,
                        timing=common_pb2.SpeechTiming(start_ms=0, end_ms=1),
                    ),
                )
            )
        )

    def texts(self, session_id: str) -> list[str]:
        return [s.text for s in self.spoken if s.session_id == session_id]

    def expected_states(self, session_id: str) -> list[str]:
        """The dialog states whose recognition context this call's streams received."""
        return [c.state for sid, c in self.contexts if sid == session_id]


def _played(request_id: str) -> speech_pb2.SpeechUpdate:
    return speech_pb2.SpeechUpdate(
        playback=speech_pb2.PlaybackEvent(
            kind=speech_pb2.PlaybackEvent.KIND_FINISHED, request_id=request_id
        )
    )


@dataclass
class Executed:
    key: str
    service: str
    method: str
    payload: dict[str, Any]
    at: float


@dataclass
class IntegrationPeer(integration_pb2_grpc.IntegrationGatewayServicer):
    answer: Callable[[Executed], dict[str, Any]] = lambda ex: {"status": "shipped"}
    delay_s: float = 0.0
    received: list[Executed] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = grpc.aio.server()
        integration_pb2_grpc.add_IntegrationGatewayServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def Execute(  # noqa: N802
        self, request: integration_pb2.ActionRequest, context: Any
    ) -> integration_pb2.ActionResult:
        executed = Executed(
            request.idempotency_key,
            request.service,
            request.method,
            json.loads(request.payload_json),
            time.time(),
        )
        self.received.append(executed)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return integration_pb2.ActionResult(
            idempotency_key=request.idempotency_key,
            outcome=integration_pb2.ActionResult.OUTCOME_SUCCESS,
            response_json=json.dumps(self.answer(executed)),
            http_status=200,
            attempts=1,
        )


class MediaPeer:
    """One call's StreamCall, as the media gateway opens it."""

    def __init__(
        self, target: str, session_id: str, speech_endpoint: str, dialog: str = ""
    ) -> None:
        self.target = target
        self.session_id = session_id
        self.speech_endpoint = speech_endpoint
        self.dialog = dialog
        self.commands: list[runtime_pb2.CallCommand] = []
        self._outbox: asyncio.Queue[runtime_pb2.CallEvent | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.error: grpc.aio.AioRpcError | None = None
        self.ended = asyncio.Event()

    def open(self, reattach: bool = False) -> None:
        self._outbox = asyncio.Queue()
        self.ended.clear()
        self.error = None
        self._task = asyncio.create_task(self._run(reattach))

    async def _run(self, reattach: bool) -> None:
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = runtime_pb2_grpc.ConversationRuntimeStub(channel)
            call = stub.StreamCall(self._events(reattach), wait_for_ready=True)
            try:
                async for command in call:
                    self.commands.append(command)
            except grpc.aio.AioRpcError as exc:
                self.error = exc
            finally:
                self.ended.set()

    async def _events(self, reattach: bool) -> AsyncIterator[runtime_pb2.CallEvent]:
        yield runtime_pb2.CallEvent(
            session_id=self.session_id,
            started=runtime_pb2.CallStarted(
                caller=common_pb2.CallerInfo(caller_id="+15550100"),
                called_uri="sip:orders@voicetyped.test",
                speech_endpoint=self.speech_endpoint,
                reattach=reattach,
                dialog=self.dialog,
            ),
        )
        while (event := await self._outbox.get()) is not None:
            yield event

    def dtmf(self, digit: str) -> None:
        self._outbox.put_nowait(
            runtime_pb2.CallEvent(
                session_id=self.session_id,
                dtmf=runtime_pb2.DtmfReceived(
                    dtmf=common_pb2.DtmfEvent(digit=digit, duration_ms=100),
                    source=runtime_pb2.DtmfReceived.SOURCE_RFC4733,
                ),
            )
        )

    def speech_moved(self, endpoint: str) -> None:
        """The call's audio stream was reopened on the speech replica at ``endpoint``."""
        self._outbox.put_nowait(
            runtime_pb2.CallEvent(
                session_id=self.session_id,
                speech_moved=runtime_pb2.SpeechMoved(speech_endpoint=endpoint),
            )
        )

    def hang_up(self) -> None:
        self._outbox.put_nowait(
            runtime_pb2.CallEvent(
                session_id=self.session_id,
                ended=runtime_pb2.CallEnded(reason=runtime_pb2.CallEnded.REASON_CALLER_HANGUP),
            )
        )

    async def close(self) -> None:
        self._outbox.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@dataclass
class Replica:
    """A runtime process (the real one) with its ports, set up as the tests run it."""

    process: ServiceProcess
    grpc_port: int
    http_port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def runtime_replica(
    name: str,
    store_url: str,
    dialog: str,
    integration: IntegrationPeer,
    tmp_path: Path,
    env: dict[str, str] | None = None,
) -> Replica:
    """``python -m voicetyped_runtime`` serving ``dialog`` (YAML) from ``tmp_path/<name>-dialogs``,
    its store at ``store_url``, on free loopback ports, a 3 s shutdown grace, ``env`` added;
    logs to ``tmp_path/<name>.log``."""
    dialogs = tmp_path / f"{name}-dialogs"
    dialogs.mkdir()
    (dialogs / "dialog.yaml").write_text(dialog)
    grpc_port, http_port = free_port(), free_port()
    environment = {
        **os.environ,
        "VOICETYPED_STORE_URL": store_url,
        "VOICETYPED_DIALOGS_DIR": str(dialogs),
        "VOICETYPED_INTEGRATION_TARGET": integration.endpoint,
        "VOICETYPED_REPLICA_ID": name,
        "VOICETYPED_GRPC_HOST": "127.0.0.1",
        "VOICETYPED_GRPC_PORT": str(grpc_port),
        "VOICETYPED_HTTP_HOST": "127.0.0.1",
        "VOICETYPED_HTTP_PORT": str(http_port),
        "VOICETYPED_SHUTDOWN_GRACE_S": "3",
        **(env or {}),
    }
    process = ServiceProcess("voicetyped_runtime", environment, tmp_path / f"{name}.log")
    return Replica(process, grpc_port, http_port)
