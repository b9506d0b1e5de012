"""Recognition workers shared by every call of the process, fair and bounded.

Each worker thread owns one loaded model (models are not safe to share between
threads). Finals come before partials; among calls, work is taken round-robin
so one talkative call cannot starve the others. A call keeps at most one
partial waiting (a newer one replaces it: only the freshest hypothesis is
worth computing). When finals queue up beyond ``max_waiting`` the pool
refuses with :class:`Overloaded`, which the service reports to the runtime,
instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from voicetyped_speech.asr.base import Audio, Recognizer, Transcription


class Overloaded(Exception):  # noqa: N818 - the signal's name in the contract (CODE_OVERLOADED)
    """Recognition cannot keep up: this audio was not queued."""


@dataclass
class _Job:
    session: str
    audio: Audio
    future: Future[Transcription] = field(default_factory=Future)


class RecognitionPool:
    def __init__(
        self, factory: Callable[[], Recognizer], workers: int = 1, max_waiting: int = 8
    ) -> None:
        self._cond = threading.Condition()
        self._finals: OrderedDict[str, deque[_Job]] = OrderedDict()
        self._partials: OrderedDict[str, _Job] = OrderedDict()
        self._waiting_finals = 0
        self._max_waiting = max_waiting
        self._closed = False
        self._threads: list[threading.Thread] = []
        ready: list[BaseException | None] = []
        for i in range(workers):
            t = threading.Thread(
                target=self._run, args=(factory, ready), name=f"asr-{i}", daemon=True
            )
            t.start()
            self._threads.append(t)
        with self._cond:
            self._cond.wait_for(lambda: len(ready) == workers)
        errors = [e for e in ready if e is not None]
        if errors:
            self.close()
            raise errors[0]

    @property
    def queue_depth(self) -> int:
        with self._cond:
            return self._waiting_finals + len(self._partials)

    async def final(self, session: str, audio: Audio) -> Transcription:
        with self._cond:
            if self._waiting_finals >= self._max_waiting:
                raise Overloaded(f"{self._waiting_finals} finals already waiting")
            job = _Job(session, audio)
            self._finals.setdefault(session, deque()).append(job)
            self._waiting_finals += 1
            self._cond.notify()
        return await asyncio.wrap_future(job.future)

    async def partial(self, session: str, audio: Audio) -> Transcription | None:
        """A hypothesis for the audio so far, or None when a newer request replaced this one."""
        with self._cond:
            old = self._partials.pop(session, None)
            job = _Job(session, audio)
            self._partials[session] = job
            self._cond.notify()
        if old is not None:
            old.future.cancel()
        try:
            return await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            if job.future.cancelled():
                return None
            raise

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=5)

    def _next(self) -> _Job | None:
        with self._cond:
            self._cond.wait_for(lambda: self._closed or bool(self._finals) or bool(self._partials))
            if self._closed:
                return None
            if self._finals:
                session, jobs = next(iter(self._finals.items()))
                job = jobs.popleft()
                self._waiting_finals -= 1
                del self._finals[session]
                if jobs:  # round-robin: this call goes to the back
                    self._finals[session] = jobs
                return job
            _, job = self._partials.popitem(last=False)
            return job

    def _run(self, factory: Callable[[], Recognizer], ready: list[BaseException | None]) -> None:
        try:
            recognizer = factory()
        except BaseException as exc:
            with self._cond:
                ready.append(exc)
                self._cond.notify_all()
            return
        with self._cond:
            ready.append(None)
            self._cond.notify_all()
        while (job := self._next()) is not None:
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                job.future.set_result(recognizer.transcribe(job.audio))
            except BaseException as exc:
                job.future.set_exception(exc)
