"""How loaded this replica's recognition is, and when it takes no new calls.

Speech decoding is the ceiling of a deployment (media carries ~150 calls per core; a 2-core
speech replica ~8 before turn latency climbs). A call admitted beyond that does not fail by
itself: every call's finals wait longer. So a replica refuses **new** audio streams (the media
gateway answers the INVITE with 503) once it is *saturated*, and keeps serving the calls it
has. Saturated means any of:

- **queue full**: the pool refuses finals already (``asr.max_waiting`` wait);
- **queue**: at least ``queue_threshold`` finals waited for a worker at every sample of the
  last ``sustain_s`` (a backlog that does not clear; a burst that clears does not count);
- **load**: the finals' decode time over the last ``window_s``, per worker, is at least
  ``load_threshold`` (0.8: finals keep the workers 80 % busy; partials are not counted, they
  are shed first and fill idle time by design, so busy workers alone say little);
- **streams**: ``max_streams`` calls are open (an optional fixed ceiling).

A stream that *resumes* a call (the call's replica went away and the media gateway reopens its
stream here) is not a new call and is always taken: refusing it would hang up a running call.

The figures are exported (:class:`~voicetyped_speech.metrics.SpeechMetrics`):
``voicetyped_speech_load`` (the load above: the autoscaling signal, docs/autoscaling.md),
``voicetyped_speech_asr_busy_ratio`` (workers decoding anything, partials included, averaged over
the window), ``voicetyped_speech_saturated`` (0/1) and
``voicetyped_speech_streams_refused_total{reason}``.

Readiness does not follow saturation: a not-ready pod leaves the Service's endpoints, which
does not move the media gateway's established gRPC connection (it stays on the pod), but does
stop stream restores of running calls from reaching it and, with every replica saturated, empties
the Service so that even restores fail; and readiness probes run every few seconds while load
changes faster. Refusing at ``StreamAudio`` is immediate and exact (per new call).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Reason = Literal["queue_full", "queue", "load", "max_streams"]


@dataclass(frozen=True)
class CapacityRule:
    max_streams: int = 0
    """Calls at once (0: no fixed ceiling, the load decides)."""
    load_threshold: float = 0.8
    """Finals' decode seconds per worker-second over ``window_s`` (0: not used)."""
    queue_threshold: int = 2
    """Finals waiting at every sample of ``sustain_s`` (0: not used)."""
    window_s: float = 5.0
    sustain_s: float = 2.0

    def __post_init__(self) -> None:
        if self.max_streams < 0 or self.load_threshold < 0 or self.queue_threshold < 0:
            raise ValueError("max_streams, load_threshold and queue_threshold must be >= 0")
        if self.window_s <= 0 or self.sustain_s <= 0:
            raise ValueError("window_s and sustain_s must be > 0")


@dataclass(frozen=True)
class Reading:
    load: float
    """Finals' decode seconds per worker-second over the window."""
    busy_ratio: float
    """Mean fraction of workers decoding (anything) over the window's samples."""
    saturated: Reason | None
    """Why the pool takes no new calls (None: it does)."""


class LoadMonitor:
    """Samples of the pool (from the event loop) and finished decodes (from the workers),
    turned into a :class:`Reading`. ``clock`` is injectable for tests."""

    def __init__(
        self, rule: CapacityRule, workers: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.rule = rule
        self.workers = workers
        self._clock = clock
        self._lock = threading.Lock()
        self._finals: deque[tuple[float, float]] = deque()  # (finished at, compute seconds)
        self._samples: deque[tuple[float, int, int]] = deque()  # (at, waiting finals, busy)
        self._since = clock()

    def decoded(self, kind: str, compute_s: float) -> None:
        """A decode finished (any thread). Only finals count towards the load."""
        if kind != "final":
            return
        with self._lock:
            self._finals.append((self._clock(), compute_s))

    def sample(self, waiting_finals: int, busy_workers: int) -> None:
        """The pool's state now (call it every fraction of a second, from one task)."""
        now = self._clock()
        with self._lock:
            self._samples.append((now, waiting_finals, busy_workers))
            self._trim(now)

    def reading(self, streams: int = 0, queue_full: bool = False) -> Reading:
        """The load now, and whether a new call is refused with ``streams`` calls open and the
        pool refusing finals (``queue_full``) or not. The load is over the whole window from
        the start, so a replica that just started under-reads rather than refuses early."""
        now = self._clock()
        r = self.rule
        with self._lock:
            self._trim(now)
            load = sum(c for _, c in self._finals) / (r.window_s * self.workers)
            busy = (
                sum(b for _, _, b in self._samples) / (len(self._samples) * self.workers)
                if self._samples
                else 0.0
            )
            queued = self._queue_sustained(now)
        reason: Reason | None = None
        if queue_full:
            reason = "queue_full"
        elif queued:
            reason = "queue"
        elif r.load_threshold and load >= r.load_threshold:
            reason = "load"
        elif r.max_streams and streams >= r.max_streams:
            reason = "max_streams"
        return Reading(load, busy, reason)

    def _queue_sustained(self, now: float) -> bool:
        r = self.rule
        if not r.queue_threshold or now - self._since < r.sustain_s:
            return False
        recent = [w for at, w, _ in self._samples if at >= now - r.sustain_s]
        return bool(recent) and min(recent) >= r.queue_threshold

    def _trim(self, now: float) -> None:
        horizon = now - self.rule.window_s
        while self._finals and self._finals[0][0] < horizon:
            self._finals.popleft()
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
