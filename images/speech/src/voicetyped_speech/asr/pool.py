"""Recognition workers shared by every call of the process, fair and bounded.

Each worker thread owns one loaded model (models are not safe to share between threads).
Two classes of work:

- **finals** (including speculative finals, started when the caller pauses and kept if the pause
  turns out to be the end of the utterance): taken round-robin across calls, so one talkative
  call cannot starve the others. When ``max_waiting`` finals are queued, a new one is refused
  with :class:`Overloaded` (the service reports it to the runtime) instead of queueing without
  bound; a speculative final is simply not started then.
- **partials**: at most one waiting per call (a newer one replaces it: only the freshest
  hypothesis is worth computing), run only when no final waits. A partial that is running when
  a final arrives is asked to abort (:data:`~.base.AbortCheck`), so partials delay finals as
  little as the backend allows, unless it was promoted to a final
  (:meth:`RecognitionPool.promote`). Each partial shed so (``replaced`` while it waited,
  ``aborted`` for a final) is reported to ``on_shed``: under load, partials go first.

A submitted job can be cancelled: if it waits it is dropped, if it runs its abort check turns
true.

Every decode has a **deadline** (:class:`Deadline`: a budget from the moment a worker starts
it, longer for longer audio, and never under a few times what decodes take on this machine at
the moment, so a loaded machine slows calls down instead of cutting them off). Past it the
abort check turns true, the backend stops (whisper.cpp
between decoder steps) and the job's result is an empty transcription marked
``cut="deadline"``: the worker is free for the next job at once, and the caller of the job uses
the best hypothesis it has (:mod:`voicetyped_speech.streaming`). So one decode that goes long
holds up the other calls' finals by at most its budget.

Each worker warms its model up (one decode) before the pool reports ready. Thread-safe; the
awaiting side is asyncio.
"""

from __future__ import annotations

import asyncio
import atexit
import math
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Literal

from voicetyped_speech.asr.base import (
    SAMPLE_RATE,
    Aborted,
    Audio,
    DecodeOptions,
    Recognizer,
    Transcription,
)

Kind = Literal["final", "partial"]


class Overloaded(Exception):  # noqa: N818 - the signal's name in the contract (CODE_OVERLOADED)
    """Recognition cannot keep up: this audio was not queued."""


@dataclass(frozen=True)
class Deadline:
    """How long one decode may run: ``base_s`` plus ``per_audio_s`` for each second of audio,
    or ``factor`` times the typical decode (a moving average of the pool's recent ones) if that
    is longer (``base_s`` 0: no limit)."""

    base_s: float = 2.0
    per_audio_s: float = 0.1
    factor: float = 3.0

    def budget_s(self, audio_s: float, typical_s: float = 0.0) -> float:
        if self.base_s <= 0:
            return math.inf
        return max(self.base_s + self.per_audio_s * audio_s, self.factor * typical_s)


_TYPICAL_WEIGHT = 0.2  # of the newest decode in the moving average of decode times


@dataclass(frozen=True)
class DecodeStats:
    """What one finished decode cost; given to ``on_decode``."""

    kind: Kind
    audio_s: float
    compute_s: float
    waited_s: float
    cut: str = ""
    """Transcription.cut: what bounded the decode's text, "deadline" if it ran out of time."""


@dataclass(eq=False)
class Job:
    session: str
    audio: Audio
    kind: Kind
    options: DecodeOptions | None = None
    future: Future[Transcription] = field(default_factory=Future)
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    deadline: float = math.inf
    """perf_counter time the decode must be done by (set when a worker starts it)."""
    timed_out: bool = False
    threads: int | None = None
    """Compute threads the pool gave the decode when it started (None: the recogniser's)."""
    _pool: RecognitionPool | None = None

    def cancel(self) -> None:
        """Drop the job if it waits; ask it to stop if it runs. Its result is then never used."""
        if self._pool is not None:
            self._pool._cancel(self)

    async def result(self) -> Transcription | None:
        """The transcription, or None when the job was cancelled or aborted."""
        try:
            return await asyncio.wrap_future(self.future)
        except Aborted:
            return None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.future.cancelled() and not (task is not None and task.cancelling()):
                return None  # the job was cancelled or replaced, not the awaiting task
            raise


_open_pools: weakref.WeakSet[RecognitionPool] = weakref.WeakSet()


@atexit.register
def _close_open_pools() -> None:
    """A decode still running when the interpreter finalizes calls back into Python (its abort
    check) from a daemon thread, which aborts the process: stop them first."""
    for pool in list(_open_pools):
        pool.close()


class RecognitionPool:
    def __init__(
        self,
        factory: Callable[[], Recognizer],
        workers: int = 1,
        max_waiting: int = 8,
        on_decode: Callable[[DecodeStats], None] | None = None,
        deadline: Deadline = Deadline(),
        on_shed: Callable[[str], None] | None = None,
        shared_threads: int = 0,
        on_abandon: Callable[[str, float], None] | None = None,
    ) -> None:
        if workers < 1 or max_waiting < 1:
            raise ValueError("workers and max_waiting must be >= 1")
        if shared_threads < 0:
            raise ValueError("shared_threads must be >= 0 (0: each decode its recogniser's own)")
        self.shared_threads = shared_threads
        """Compute threads the running decodes share (0: not shared); see :meth:`_next`."""
        self._deadline = deadline
        self._typical_s = 0.0  # moving average of decode times (written by the workers)
        self._cond = threading.Condition()
        self._finals: OrderedDict[str, deque[Job]] = OrderedDict()
        self._partials: OrderedDict[str, Job] = OrderedDict()
        self._running: set[Job] = set()
        self._waiting_finals = 0
        self._max_waiting = max_waiting
        self._on_decode = on_decode
        self._on_shed = on_shed
        self._on_abandon = on_abandon
        """Called (kind, compute seconds) for a decode stopped while it ran: cancelled by its
        owner (a speculative final when the caller went on) or a partial giving way."""
        self._closed = False
        self._threads: list[threading.Thread] = []
        self.workers = workers
        ready: list[BaseException | None] = []
        for i in range(workers):
            t = threading.Thread(
                target=self._run, args=(factory, ready), name=f"asr-{i}", daemon=True
            )
            t.start()
            self._threads.append(t)
        _open_pools.add(self)
        with self._cond:
            self._cond.wait_for(lambda: len(ready) == workers)
        errors = [e for e in ready if e is not None]
        if errors:
            self.close()
            raise errors[0]

    @property
    def queue_depth(self) -> int:
        """Jobs waiting for a worker (finals and partials)."""
        with self._cond:
            return self._waiting_finals + len(self._partials)

    @property
    def waiting_finals(self) -> int:
        with self._cond:
            return self._waiting_finals

    @property
    def busy_workers(self) -> int:
        with self._cond:
            return len(self._running)

    def submit(
        self, session: str, audio: Audio, kind: Kind, options: DecodeOptions | None = None
    ) -> Job:
        """Queue a job. A final raises :class:`Overloaded` when ``max_waiting`` finals wait; a
        partial replaces the call's waiting partial (which then results in None)."""
        job = Job(session, audio, kind, options, _pool=self)
        old: Job | None = None
        with self._cond:
            if self._closed:
                raise RuntimeError("the recognition pool is closed")
            if kind == "final":
                if self._waiting_finals >= self._max_waiting:
                    raise Overloaded(f"{self._waiting_finals} finals already waiting")
                self._finals.setdefault(session, deque()).append(job)
                self._waiting_finals += 1
            else:
                old = self._partials.pop(session, None)
                self._partials[session] = job
            self._cond.notify()
        if old is not None:
            old.cancelled = True
            old.future.cancel()
            self._shed("replaced")
        return job

    def promote(self, job: Job) -> bool:
        """Make a partial a final (it will not be aborted for other finals): when a partial
        turns out to cover a whole utterance, its result is the final. False when the job is
        finished, cancelled, or no room is left for another waiting final."""
        with self._cond:
            if job.kind == "final" or job.cancelled or job.future.done():
                return job.kind == "final" and not job.cancelled
            if self._partials.get(job.session) is job:
                if self._waiting_finals >= self._max_waiting:
                    return False
                del self._partials[job.session]
                self._finals.setdefault(job.session, deque()).append(job)
                self._waiting_finals += 1
            elif job not in self._running:
                return False
            job.kind = "final"
            return True

    def can_accept_final(self) -> bool:
        with self._cond:
            return self._waiting_finals < self._max_waiting

    async def final(
        self, session: str, audio: Audio, options: DecodeOptions | None = None
    ) -> Transcription:
        job = self.submit(session, audio, "final", options)
        try:
            result = await job.result()
        except asyncio.CancelledError:
            job.cancel()
            raise
        assert result is not None  # finals are only cancelled by their owner
        return result

    async def partial(
        self, session: str, audio: Audio, options: DecodeOptions | None = None
    ) -> Transcription | None:
        """A hypothesis for the audio so far, or None when a newer request replaced this one or
        a final overtook it."""
        job = self.submit(session, audio, "partial", options)
        try:
            return await job.result()
        except asyncio.CancelledError:
            job.cancel()
            raise

    def close(self) -> None:
        with self._cond:
            self._closed = True
            waiting = [j for jobs in self._finals.values() for j in jobs]
            waiting += self._partials.values()
            self._finals.clear()
            self._partials.clear()
            self._waiting_finals = 0
            for job in self._running:
                job.cancelled = True
            self._cond.notify_all()
        for job in waiting:
            job.cancelled = True
            job.future.cancel()
        for t in self._threads:
            t.join(timeout=5)

    # -- internals ---------------------------------------------------------------------------

    def _cancel(self, job: Job) -> None:
        with self._cond:
            job.cancelled = True
            if job.kind == "final":
                jobs = self._finals.get(job.session)
                if jobs is not None and job in jobs:
                    jobs.remove(job)
                    self._waiting_finals -= 1
                    if not jobs:
                        del self._finals[job.session]
            elif self._partials.get(job.session) is job:
                del self._partials[job.session]
        job.future.cancel()  # no effect once running: the abort check sees job.cancelled

    def _next(self) -> Job | None:
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
            else:
                _, job = self._partials.popitem(last=False)
            self._running.add(job)
            if self.shared_threads:
                # A decode alone gets every thread; beside others, its share: on a loaded
                # machine whisper.cpp's spinning threads would otherwise outnumber the cores
                # (bench/asr_capacity.py). Fixed for the decode once it starts.
                job.threads = max(1, self.shared_threads // len(self._running))
            return job

    def _should_abort(self, job: Job) -> bool:
        # Read without the lock: a stale answer only delays the abort to the next check.
        if job.cancelled or self._closed or (job.kind == "partial" and self._waiting_finals > 0):
            return True
        if time.perf_counter() > job.deadline:
            job.timed_out = True
        return job.timed_out

    def _decode(self, recognizer: Recognizer, job: Job) -> Transcription:
        started = time.perf_counter()
        budget = self._deadline.budget_s(len(job.audio) / SAMPLE_RATE, self._typical_s)
        job.deadline = started + budget
        options = job.options
        if job.threads is not None:
            options = replace(options or DecodeOptions(), threads=job.threads)
        try:
            result = recognizer.transcribe(job.audio, partial(self._should_abort, job), options)
        except Aborted:
            if self._closed:
                raise
            if job.timed_out and not job.cancelled:
                return Transcription("", 0.0, time.perf_counter() - started, cut="deadline")
            if not job.cancelled and job.kind == "partial":
                self._shed("aborted")  # it gave way to a final
            if self._on_abandon is not None:
                self._on_abandon(job.kind, time.perf_counter() - started)
            raise
        self._observe(result.compute_s)
        return result

    def _shed(self, reason: str) -> None:
        if self._on_shed is not None:
            self._on_shed(reason)

    def _observe(self, compute_s: float) -> None:
        # A race between two workers loses one sample of a moving average: harmless.
        typical = self._typical_s
        self._typical_s = (
            compute_s if typical == 0 else typical + _TYPICAL_WEIGHT * (compute_s - typical)
        )

    def _run(self, factory: Callable[[], Recognizer], ready: list[BaseException | None]) -> None:
        try:
            recognizer = factory()
            started = time.perf_counter()
            recognizer.warm_up()
            self._observe(time.perf_counter() - started)
        except BaseException as exc:
            with self._cond:
                ready.append(exc)
                self._cond.notify_all()
            return
        with self._cond:
            ready.append(None)
            self._cond.notify_all()
        while (job := self._next()) is not None:
            outcome: Transcription | BaseException | None = None
            waited = 0.0
            try:
                if job.future.set_running_or_notify_cancel():
                    waited = time.perf_counter() - job.submitted
                    try:
                        outcome = self._decode(recognizer, job)
                    except BaseException as exc:
                        outcome = exc
            finally:
                # Leave the running set before the result is handed back: its owner may start
                # the next decode at once, which must see this worker free (its thread share).
                with self._cond:
                    self._running.discard(job)
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            elif outcome is not None:
                job.future.set_result(outcome)
                if self._on_decode is not None:
                    self._on_decode(
                        DecodeStats(
                            job.kind,
                            len(job.audio) / SAMPLE_RATE,
                            outcome.compute_s,
                            waited,
                            outcome.cut,
                        )
                    )
