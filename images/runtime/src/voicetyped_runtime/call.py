"""One call's actor: an asyncio task that feeds the engine and carries out its effects.

Each call has its own task, inbox and state; nothing mutable is shared between
calls, and an exception ends only its own call (with a hangup), never the
process. After every engine step the state is saved *before* the effects run,
so a backend call is always on record (with its idempotency key) before it is
sent, and a restarted runtime resends it with the same key instead of running
it blindly a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ParamSpec, Protocol

from opentelemetry import context as otel_context
from voicetyped.recognition import RecognitionContext
from voicetyped.service import tracing
from voicetyped.service.logs import get_logger, session_context

from voicetyped_runtime import engine_io as e
from voicetyped_runtime.console.watch import CallWatch
from voicetyped_runtime.dialogs import DialogVersion
from voicetyped_runtime.recognition import recognition_context
from voicetyped_runtime.state import CallState
from voicetyped_runtime.store.base import SessionStore, StoreError

log = get_logger("voicetyped.runtime.call")
P = ParamSpec("P")
tracer = tracing.tracer("voicetyped.runtime")

INBOX_LIMIT = 1000
_TRACED = (e.Transcript, e.Dtmf, e.BackendAnswer)
"""Inputs whose handling is a stage of a turn (traced as runtime.decision)."""
# Intent matching is numpy work: two threads use both cores without oversubscribing
# them (the default pool would run up to six encoders, each wanting BLAS threads).
_INTENT_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="intent")
PENDING_GRACE_S = 10.0  # after the call ends, how long in-flight backend calls may finish


def wall_ms() -> int:
    return int(time.time() * 1000)


class CallPorts(Protocol):
    """Where a call's effects go: the speech and media gateways, backends, the LLM."""

    def speak(self, effect: e.Speak) -> None: ...

    def cancel_speech(self, effect: e.CancelSpeech) -> None: ...

    def expect(self, context: RecognitionContext) -> None: ...

    def command(self, effect: e.TransferCall | e.HangupCall) -> None: ...

    async def execute_hook(self, session_id: str, effect: e.ExecuteHook) -> e.BackendAnswer: ...

    async def ask_llm(self, effect: e.AskLlm) -> e.LlmAnswer: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ActorSettings:
    session_ttl_s: float = 1800.0
    archive_retention_s: float = 7 * 24 * 3600


class CallActor:
    def __init__(
        self,
        state: CallState,
        version: DialogVersion,
        ports: CallPorts,
        store: SessionStore,
        settings: ActorSettings = ActorSettings(),
        clock: Callable[[], int] = wall_ms,
        watch: CallWatch | None = None,
    ) -> None:
        self.state = state
        self.watch = watch
        """The live console's view of this call (None: the console is off)."""
        self.version = version
        self.ports = ports
        self.store = store
        self.settings = settings
        self.clock = clock
        self.inbox: asyncio.Queue[e.Input] = asyncio.Queue(INBOX_LIMIT)
        self.trace: tracing.Context | None = None
        """The call's trace (from the media gateway's stream): stages are recorded under it."""
        self._posted: dict[int, int] = {}  # id(input) -> wall ns it arrived
        self._requests: set[asyncio.Task[None]] = set()
        self.task: asyncio.Task[None] | None = None
        self.handed_over = False
        self._expecting: tuple[str, int] | None = None  # (state, entered at) of the context sent

    @property
    def session_id(self) -> str:
        return self.state.session_id

    @property
    def _log_transcripts(self) -> bool:
        """The dialog opted in (settings.log_transcripts) and debug lines are being written."""
        return self.version.compiled.spec.settings.log_transcripts and log.isEnabledFor(
            logging.DEBUG
        )

    def post(self, item: e.Input) -> None:
        """Deliver an input; a flooded inbox drops it with a warning (bounded memory)."""
        try:
            self.inbox.put_nowait(item)
            if isinstance(item, _TRACED):
                self._posted[id(item)] = tracing.wall_ns()
        except asyncio.QueueFull:
            log.warning(
                "call inbox full; input dropped",
                session_id=self.session_id,
                input=type(item).__name__,
            )

    def start(self, resume: bool) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self.run(resume), name=f"call-{self.session_id}")
        return self.task

    async def run(self, resume: bool) -> None:
        with session_context(self.session_id, dialog=self.version.name):
            try:
                if resume:
                    await self._resume()
                else:
                    log.info("call started", state=self.state.fsm_state)
                    effects = self.version.engine.start(self.state, self.clock())
                    await self._apply(effects)
                    if self.watch is not None:
                        self._watched(self.watch.stepped, self.state, e.Tick(), effects, None)
                await self._loop()
            except asyncio.CancelledError:
                await self._hand_over()
                raise
            except Exception:
                log.exception("call failed; hanging up")
                await self._fail()
            await self._finish()

    # -- the loop --

    async def _loop(self) -> None:
        engine = self.version.engine
        while not self.state.ended:
            deadline = engine.next_deadline(self.state)
            timeout = None if deadline is None else max(deadline - self.clock(), 0) / 1000
            try:
                item: e.Input = await asyncio.wait_for(self.inbox.get(), timeout)
            except TimeoutError:
                item = e.Tick()
            posted = self._posted.pop(id(item), None)
            if isinstance(item, e.Transcript) and item.final and self._log_transcripts:
                log.debug(
                    "final transcript",
                    utterance_id=item.utterance_id,
                    text=item.text,
                    confidence=round(item.confidence, 3),
                    state=self.state.fsm_state,
                )
            if isinstance(item, e.Transcript) and item.final and self.version.matcher is not None:
                item = await self._with_intent(item)
            before = self.state.fsm_state
            if self.watch is not None:
                self._watched(self.watch.input, item)
            effects = engine.step(self.state, item, self.clock())
            if not isinstance(item, e.Tick):
                effects += engine.step(self.state, e.Tick(), self.clock())
            await self._apply(effects)
            if self.watch is not None:
                self._watched(self.watch.stepped, self.state, item, effects, posted)
            if posted is not None:
                # Input arrived -> (intent, engine step, state saved) -> effects sent.
                tracing.record(
                    tracer,
                    "runtime.decision",
                    self.trace,
                    posted,
                    input=type(item).__name__,
                    state_from=before,
                    state_to=self.state.fsm_state,
                    speaks=sum(isinstance(x, e.Speak) for x in effects),
                )

    async def _with_intent(self, item: e.Transcript) -> e.Transcript:
        pending = self.state.turn_in_progress
        text = " ".join([*(pending.texts if pending else []), item.text]).strip()
        matcher = self.version.matcher
        assert matcher is not None
        loop = asyncio.get_running_loop()
        match = await loop.run_in_executor(_INTENT_POOL, matcher.match, text)
        return e.Transcript(
            item.utterance_id,
            item.text,
            item.final,
            item.confidence,
            item.start_ms,
            item.end_ms,
            match.intent or "",
            match.score,
        )

    async def _apply(self, effects: list[e.Effect]) -> None:
        await self._save()
        self._expect(effects)
        for effect in effects:
            match effect:
                case e.Speak():
                    self.ports.speak(effect)
                case e.CancelSpeech():
                    self.ports.cancel_speech(effect)
                case e.TransferCall() | e.HangupCall():
                    self.ports.command(effect)
                case e.ExecuteHook():
                    self._spawn(self._hook(effect))
                case e.AskLlm():
                    self._spawn(self._llm(effect))
                case e.SessionEnded():
                    log.info("call ended", reason=effect.reason, state=self.state.fsm_state)
                case e.Warn():
                    log.warning(effect.message, **effect.detail)

    @staticmethod
    def _watched(show: Callable[P, None], *args: P.args, **kwargs: P.kwargs) -> None:
        """Tell the console what happened (a :attr:`watch` method); its failure is logged,
        never the call's."""
        try:
            show(*args, **kwargs)
        except Exception:
            log.exception("console watch failed", what=show.__name__)

    def _expect(self, effects: list[e.Effect]) -> None:
        """On entering a state (also the first step after a resume), tell the speech gateway
        what the caller is expected to say, with the prompts just played as the question."""
        entered = (self.state.fsm_state, self.state.state_entered_ms)
        if self.state.ended or entered == self._expecting:
            return
        self._expecting = entered
        heard = [x.text for x in effects if isinstance(x, e.Speak)]
        self.ports.expect(
            recognition_context(self.version.compiled, entered[0], self.state.vars, heard)
        )

    # -- requests that answer later --

    def _spawn(self, coro: asyncio.Future[None] | object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _hook(self, effect: e.ExecuteHook) -> None:
        started = time.perf_counter()
        started_ns = tracing.wall_ns()
        token = otel_context.attach(self.trace) if self.trace is not None else None
        try:
            answer = await self.ports.execute_hook(self.session_id, effect)
        except Exception as exc:  # a port must answer; never leave the dialog waiting
            log.exception("call hook failed", key=effect.key)
            answer = e.BackendAnswer(effect.key, False, None, "internal", type(exc).__name__)
        finally:
            if token is not None:
                otel_context.detach(token)
        tracing.record(
            tracer,
            "runtime.backend",
            self.trace,
            started_ns,
            service=effect.service,
            method=effect.method,
            ok=answer.ok,
            error_code=answer.error_code or None,
        )
        took_ms = (time.perf_counter() - started) * 1000
        log.info(
            "call hook answered",
            key=effect.key,
            service=effect.service,
            method=effect.method,
            ok=answer.ok,
            error_code=answer.error_code,
            took_ms=round(took_ms, 1),
        )
        if self.watch is not None:
            self._watched(self.watch.backend_answered, effect, answer, took_ms)
        self.post(answer)

    async def _llm(self, effect: e.AskLlm) -> None:
        try:
            answer = await self.ports.ask_llm(effect)
        except Exception as exc:
            log.exception("LLM request failed", key=effect.key)
            answer = e.LlmAnswer(
                effect.key, False, error_code="internal", error_message=type(exc).__name__
            )
        self.post(answer)

    # -- persistence and lifecycle --

    def document(self) -> bytes:
        return self.state.model_dump_json().encode()

    async def _save(self) -> None:
        try:
            await self.store.save(self.session_id, self.document(), self.settings.session_ttl_s)
        except StoreError as exc:
            log.error("session not saved; the call goes on without durability", error=str(exc))

    async def _resume(self) -> None:
        """Continue a stored call: settle what was in flight, then let due timers fire."""
        log.info("call resumed", state=self.state.fsm_state, pending=len(self.state.pending))
        engine = self.version.engine
        effects: list[e.Effect] = []
        # Prompts that were playing when the runtime stopped have finished by now.
        for playback in list(self.state.playing):
            effects += engine.step(self.state, e.PlaybackDone(playback.request_id), self.clock())
        effects += engine.step(self.state, e.Tick(), self.clock())
        await self._apply(effects)
        if self.watch is not None:
            self._watched(self.watch.stepped, self.state, e.Tick(), effects, None)
        # Backend and LLM requests still unanswered are sent again with the same keys.
        for pending in list(self.state.pending.values()):
            if pending.kind == "call_hook":
                self._spawn(
                    self._hook(
                        e.ExecuteHook(
                            pending.key,
                            str(pending.action_index),
                            pending.service,
                            pending.method,
                            dict(pending.payload),
                            pending.deadline_ms,
                        )
                    )
                )
            else:
                self._spawn(
                    self._llm(e.AskLlm(pending.key, dict(pending.llm), pending.deadline_ms))
                )

    async def _fail(self) -> None:
        if not self.state.ended:
            self.ports.command(e.HangupCall(self.state.next_id("c"), e.TEMPORARY_FAILURE))
            self.state.ended = True
            self.state.end_reason = "runtime error"

    async def _finish(self) -> None:
        if self._requests:
            # The call is over but a backend call it made may still be under way: let it
            # complete (at-least-once), within a bound.
            await asyncio.wait(set(self._requests), timeout=PENDING_GRACE_S)
        settings = self.version.compiled.spec.settings
        archived = False
        try:
            if settings.persist_transcripts:
                await self.store.archive(
                    self.session_id, self.document(), settings.transcript_retention_s
                )
                archived = True
            await self.store.delete(self.session_id)
        except StoreError as exc:
            log.error("ended session not removed; it expires with its TTL", error=str(exc))
        # The console keeps the call's events exactly as long as the store keeps its data.
        retention = settings.transcript_retention_s
        if self.watch is not None:
            self._watched(self.watch.finished, self.state, archived, retention)
        await self.ports.close()

    async def _hand_over(self) -> None:
        """Stop driving the call but keep it stored, for another replica (or our restart)."""
        self.handed_over = True
        if self.watch is not None:
            self._watched(self.watch.handed_over)
        for task in list(self._requests):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.shield(self._save())
        with contextlib.suppress(Exception):
            await self.ports.close()
