"""The calls of this runtime replica: creating, resuming, leasing and handing them over."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
from voicetyped.recognition import RecognitionContext
from voicetyped.service.logs import get_logger
from voicetyped.session import CallSession
from voicetyped.session_proto import caller_from_proto
from voicetyped.v1 import runtime_pb2
from voicetyped_specs.dialog.compiled import DialogError

from voicetyped_runtime import engine_io as e
from voicetyped_runtime.call import ActorSettings, CallActor, wall_ms
from voicetyped_runtime.config import RuntimeSettings
from voicetyped_runtime.console.feed import CallFeeds
from voicetyped_runtime.console.watch import CallWatch
from voicetyped_runtime.dialogs import DialogRegistry, DialogVersion
from voicetyped_runtime.integration_client import IntegrationClient
from voicetyped_runtime.links import ConverseStream, MediaLink, command_for
from voicetyped_runtime.state import CallState
from voicetyped_runtime.store.base import SessionStore, StoreError

log = get_logger("voicetyped.runtime.calls")

DIALOG_KEY_PREFIX = "dialog:"
DIALOG_RETENTION_S = 30 * 24 * 3600


class AttachError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LivePorts:
    """A call's effects, sent to the real gateways."""

    def __init__(
        self,
        media: MediaLink,
        integration: IntegrationClient,
        llm: Any | None,
    ) -> None:
        self.media = media
        self.speech: ConverseStream | None = None
        self.integration = integration
        self.llm = llm

    def speak(self, effect: e.Speak) -> None:
        if self.speech is not None:
            self.speech.speak(effect)

    def cancel_speech(self, effect: e.CancelSpeech) -> None:
        if self.speech is not None:
            self.speech.cancel(effect)

    def expect(self, context: RecognitionContext) -> None:
        if self.speech is not None:
            self.speech.expect(context)

    def command(self, effect: e.TransferCall | e.HangupCall) -> None:
        self.media.send(command_for(effect))

    async def execute_hook(self, session_id: str, effect: e.ExecuteHook) -> e.BackendAnswer:
        return await self.integration.execute(session_id, effect)

    async def ask_llm(self, effect: e.AskLlm) -> e.LlmAnswer:
        if self.llm is None:
            return e.LlmAnswer(effect.key, False, error_code="unconfigured", error_message="no LLM")
        answer: e.LlmAnswer = await self.llm.ask(
            effect.key, effect.request, max(effect.deadline_ms / 1000 - time.time(), 0.001)
        )
        return answer

    async def close(self) -> None:
        self.media.close()
        if self.speech is not None:
            await self.speech.close()


@dataclass
class _Call:
    actor: CallActor
    media: MediaLink
    speech: ConverseStream
    watchdog: asyncio.Task[None] | None = None
    lost: bool = False


class CallManager:
    def __init__(
        self,
        settings: RuntimeSettings,
        store: SessionStore,
        registry: DialogRegistry,
        feeds: CallFeeds | None = None,
    ) -> None:
        self.settings = settings
        self.feeds = feeds
        """The live console's (None: the console is off)."""
        self.store = store
        self.registry = registry
        self.integration = IntegrationClient(settings.integration_target)
        self._http = httpx.AsyncClient()
        self._llm_clients: dict[str, Any] = {}
        self._calls: dict[str, _Call] = {}
        self._releases: set[asyncio.Future[None]] = set()
        self._idle = asyncio.Event()
        self._archived_dialogs: set[str] = set()
        self.accepting = True
        self._actor_settings = ActorSettings(session_ttl_s=settings.session_ttl_s)

    async def close(self) -> None:
        await self.integration.close()
        await self._http.aclose()

    # -- calls arriving from the media gateway --

    async def attach(self, msg: runtime_pb2.CallEvent) -> tuple[CallActor, MediaLink]:
        sid = msg.session_id
        started = msg.started
        if not sid:
            raise AttachError(grpc.StatusCode.INVALID_ARGUMENT, "CallEvent.session_id is empty")
        call = self._calls.get(sid)
        if call is not None:
            return call.actor, call.media
        if not self.accepting:
            raise AttachError(grpc.StatusCode.UNAVAILABLE, "runtime replica is shutting down")
        if not await self._claim(sid):
            raise AttachError(
                grpc.StatusCode.UNAVAILABLE, f"session {sid} is driven by another replica"
            )
        try:
            document = await self.store.load(sid)
            if document is not None:
                state = CallState.model_validate_json(document)
                if started.speech_endpoint:
                    state.speech_endpoint = started.speech_endpoint
                version = await self._version_for(state)
                call = self._start(state, version, resume=True)
            elif started.reattach:
                raise AttachError(
                    grpc.StatusCode.NOT_FOUND, f"session {sid} is not stored (expired?)"
                )
            else:
                version = self._pick_dialog(started.dialog)
                call = self._start(self._new_state(msg, version), version, resume=False)
                await self._remember_dialog(version)
        except BaseException:
            await self._release(sid)
            raise
        return call.actor, call.media

    def _pick_dialog(self, name: str) -> DialogVersion:
        version = self.registry.current(name) if name else self.registry.default()
        if version is None:
            names = self.registry.names()
            if name:
                problem = f"no dialog {name!r}"
            elif names:
                problem = f"the call names no dialog and {len(names)} are loaded (name one)"
            else:
                problem = "no dialog is loaded"
            raise AttachError(
                grpc.StatusCode.NOT_FOUND, f"{problem}; loaded: {', '.join(names) or 'none'}"
            )
        return version

    def _new_state(self, msg: runtime_pb2.CallEvent, version: DialogVersion) -> CallState:
        now = wall_ms()
        started = msg.started
        return CallState(
            session=CallSession(
                session_id=msg.session_id,
                caller=caller_from_proto(started.caller),
                state=version.compiled.initial,
            ),
            dialog=version.name,
            dialog_hash=version.content_hash,
            called_uri=started.called_uri,
            speech_endpoint=started.speech_endpoint,
            started_ms=now,
            state_entered_ms=now,
            vars=json.loads(json.dumps(version.compiled.spec.vars)),
        )

    def deliver(self, session_id: str, msg: runtime_pb2.CallEvent) -> None:
        call = self._calls.get(session_id)
        if call is None:
            return
        kind = msg.WhichOneof("event")
        if kind == "dtmf":
            call.actor.post(e.Dtmf(msg.dtmf.dtmf.digit, msg.dtmf.dtmf.duration_ms))
        elif kind == "ended":
            reason = (
                runtime_pb2.CallEnded.Reason.Name(msg.ended.reason).removeprefix("REASON_").lower()
            )
            call.actor.post(e.CallerHangup(reason))
        elif kind == "command_result" and not msg.command_result.success:
            result = msg.command_result
            call.actor.post(e.CommandFailed(result.command_id, result.detail, result.sip_status))
        elif kind in ("held", "resumed"):
            log.info(f"call {kind}", session_id=session_id)
        elif kind == "speech_moved":
            # The media gateway reopened the call's audio stream (its speech replica failed).
            call.actor.state.speech_endpoint = msg.speech_moved.speech_endpoint
            call.speech.move(msg.speech_moved.speech_endpoint)

    def media_detached(self, session_id: str, generation: int) -> None:
        call = self._calls.get(session_id)
        if call is None:
            return
        call.media.detach(generation)
        self._watch_media(call)

    # -- lifecycle --

    def _start(self, state: CallState, version: DialogVersion, resume: bool) -> _Call:
        media = MediaLink()
        ports = LivePorts(media, self.integration, self._llm_for(version))
        watch = None
        if self.feeds is not None:
            mask_callers = self.settings.console.mask_callers
            watch = CallWatch(self.feeds, state, version.content_hash, mask_callers)
        actor = CallActor(state, version, ports, self.store, self._actor_settings, watch=watch)
        settings = version.compiled.spec.settings
        speech = ConverseStream(
            state.session_id,
            state.speech_endpoint,
            settings.partials,
            actor.post,
            language=settings.language,
            observe=watch.speech if watch is not None else None,
        )
        ports.speech = speech
        speech.start()
        call = _Call(actor, media, speech)
        self._calls[state.session_id] = call
        task = actor.start(resume)
        sid = state.session_id
        task.add_done_callback(lambda _t: self._done(sid))
        if resume:
            self._watch_media(call)
        return call

    def _done(self, session_id: str) -> None:
        call = self._calls.get(session_id)
        if call is None:
            return
        if call.watchdog is not None:
            call.watchdog.cancel()
        call.media.close()
        if not call.media.attached.is_set() and not call.actor.handed_over:
            # The call ended while its media stream was away (our restart): keep the final
            # commands (the hangup) for the media gateway to collect when it reattaches.
            asyncio.get_running_loop().call_later(
                self.settings.media_reattach_s, self._forget, session_id
            )
        else:
            self._forget(session_id)
        if call.actor.handed_over and not call.lost:
            release = asyncio.ensure_future(self._release(session_id))
            self._releases.add(release)
            release.add_done_callback(self._releases.discard)

    def _forget(self, session_id: str) -> None:
        call = self._calls.get(session_id)
        if call is not None and call.actor.task is not None and call.actor.task.done():
            del self._calls[session_id]
        if not self._live():
            self._idle.set()

    def _watch_media(self, call: _Call) -> None:
        """A call whose media stream is gone ends if the stream does not come back in time."""
        if call.actor.task is not None and call.actor.task.done():
            return
        if call.watchdog is not None and not call.watchdog.done():
            return

        async def watch() -> None:
            try:
                await asyncio.wait_for(call.media.attached.wait(), self.settings.media_reattach_s)
            except TimeoutError:
                log.warning(
                    "media stream did not come back; ending call", session_id=call.actor.session_id
                )
                call.actor.post(e.CallerHangup("media stream lost"))

        call.watchdog = asyncio.create_task(watch())

    async def resume_all(self) -> int:
        """Pick up stored calls that no live replica drives (after our own restart, say)."""
        resumed = 0
        for sid in await self.store.list_live():
            if sid in self._calls or not await self._claim(sid):
                continue
            document = await self.store.load(sid)
            if document is None:
                await self._release(sid)
                continue
            try:
                state = CallState.model_validate_json(document)
                version = await self._version_for(state)
            except (ValueError, AttachError) as exc:
                log.error("stored session cannot be resumed", session_id=sid, error=str(exc))
                await self._release(sid)
                continue
            self._start(state, version, resume=True)
            resumed += 1
        if resumed:
            log.info("resumed stored calls", count=resumed)
        return resumed

    def _live(self) -> list[_Call]:
        return [c for c in self._calls.values() if c.actor.task and not c.actor.task.done()]

    async def renew_leases(self) -> None:
        for call in self._live():
            sid = call.actor.session_id
            try:
                held = await self.store.claim(sid, self.settings.replica_id, self.settings.lease_s)
            except StoreError as exc:
                log.error("lease renewal failed", session_id=sid, error=str(exc))
                continue
            if not held:
                log.error("session lease lost to another replica; stopping here", session_id=sid)
                call.lost = True
                if call.actor.task is not None:
                    call.actor.task.cancel()

    async def run_lease_renewal(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            await self.renew_leases()

    async def drain(self, remaining_s: float) -> None:
        """Stop taking calls; let live ones finish, then hand the rest over (state kept)."""
        self.accepting = False
        if self._live():
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), max(remaining_s - 1.0, 0))
        tasks = [c.actor.task for c in self._live() if c.actor.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            log.info("handing over live calls", count=len(tasks))
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0)  # let the done callbacks schedule the lease releases
            if self._releases:
                await asyncio.wait(set(self._releases), timeout=2)

    # -- helpers --

    async def _claim(self, session_id: str) -> bool:
        try:
            return await self.store.claim(
                session_id, self.settings.replica_id, self.settings.lease_s
            )
        except StoreError as exc:
            raise AttachError(
                grpc.StatusCode.UNAVAILABLE, f"session store unavailable: {exc}"
            ) from None

    async def _release(self, session_id: str) -> None:
        with contextlib.suppress(StoreError):
            await self.store.release(session_id, self.settings.replica_id)

    async def _remember_dialog(self, version: DialogVersion) -> None:
        if version.content_hash in self._archived_dialogs:
            return
        document = json.dumps(version.compiled.document).encode()
        try:
            await self.store.archive(
                DIALOG_KEY_PREFIX + version.content_hash, document, DIALOG_RETENTION_S
            )
            self._archived_dialogs.add(version.content_hash)
        except StoreError as exc:
            log.warning("dialog version not stored", error=str(exc))

    async def _version_for(self, state: CallState) -> DialogVersion:
        """The exact dialog version the call started with."""
        version = self.registry.version(state.dialog_hash)
        if version is not None:
            return version
        stored = await self.store.load_archived(DIALOG_KEY_PREFIX + state.dialog_hash)
        if stored is not None:
            try:
                return await self.registry.adopt(json.loads(stored), f"store:{state.dialog_hash}")
            except DialogError as exc:
                log.error("stored dialog version invalid", error=str(exc))
        current = self.registry.current(state.dialog)
        if current is not None and state.fsm_state in current.compiled.states:
            log.warning(
                "dialog version of the call is gone; continuing with the current one",
                session_id=state.session_id,
                wanted=state.dialog_hash,
                using=current.content_hash,
            )
            return current
        raise AttachError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"dialog {state.dialog} version {state.dialog_hash} unavailable",
        )

    def _llm_for(self, version: DialogVersion) -> Any | None:
        settings = version.compiled.spec.settings.llm
        if settings is None:
            return None
        client = self._llm_clients.get(version.content_hash)
        if client is None:
            from voicetyped_runtime.llm import LlmClient

            try:
                client = LlmClient(settings, self._http)
            except (OSError, ValueError) as exc:
                # The llm actions of this dialog then fail fast into its error path.
                log.error("LLM client unusable", dialog=version.name, error=str(exc))
                return None
            self._llm_clients[version.content_hash] = client
        return client

    # -- views for the admin API --

    def live(self) -> list[CallState]:
        return [c.actor.state for c in self._live()]

    async def get(self, session_id: str) -> CallState | None:
        call = self._calls.get(session_id)
        if call is not None and call.actor.task is not None and not call.actor.task.done():
            return call.actor.state
        document = await self.store.load(session_id)
        return CallState.model_validate_json(document) if document else None

    def dialog_dir(self) -> Path | None:
        return self.settings.dialogs_dir
