"""When the bot's voice starts, and whether it started while the caller was only pausing.

The bot's voice **starts** at a loud frame arriving at the caller after at least
:data:`HOLD_S` without one (the gaps between a prompt's words are shorter); a prompt still
playing is not a new start. The turn latency ends at the first start after the caller's last
speech sample (:func:`voicetyped_dev.caller.script.listen`), so a reply that began early, in a
pause, and still plays when the caller finishes is not taken for the reply to the whole turn
(a reply that follows it within :data:`HOLD_S` cannot be told apart from it: no start, the turn
goes unanswered).

A **false cutoff** is the bot's voice starting in a pause the caller makes mid-turn (one of a
step's pauses, :mod:`.pauses`) or after it while the caller goes on, up to their last speech
sample: a start between a pause's beginning and the next pause's (or the end of the caller's
speech) is counted against that pause.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from voicetyped_dev.caller.pauses import SAMPLE_RATE, PauseSpan
from voicetyped_dev.caller.phone import Heard

HOLD_S = 0.3
"""Quiet before a loud frame for it to be a start (as in barge-in's "the bot stopped")."""
FRAME_SAMPLES = 160
"""8 kHz samples per 20 ms RTP frame the caller sends."""


@dataclass(frozen=True)
class TimedPause:
    """A pause of a step on the caller's clock (``time.perf_counter()``)."""

    start: float
    end: float
    ms: int
    where: str


@dataclass(frozen=True)
class Cutoff:
    """The bot started speaking ``into_ms`` after the beginning of pause ``pause``."""

    pause: int
    pause_ms: int
    into_ms: int
    where: str

    @property
    def in_pause(self) -> bool:
        """The bot started within the pause (not after the caller went on)."""
        return self.into_ms <= self.pause_ms

    def describe(self) -> str:
        pause = f"the {self.pause_ms} ms pause {self.where}"
        if self.in_pause:
            return f"false cutoff: the bot spoke {self.into_ms} ms into {pause}"
        late = self.into_ms - self.pause_ms
        return (
            f"false cutoff: the bot spoke {late} ms after the caller went on from {pause}, "
            "before they had finished"
        )


def is_start(frames: Sequence[Heard], i: int, hold_s: float = HOLD_S) -> bool:
    """Frame ``i`` is loud and no loud frame arrived in the ``hold_s`` before it."""
    frame = frames[i]
    if not frame.loud:
        return False
    j = i - 1
    while j >= 0 and frames[j].arrived > frame.arrived - hold_s:
        if frames[j].loud:
            return False
        j -= 1
    return True


def first_start(
    frames: Sequence[Heard], after: float, hold_s: float = HOLD_S, begin: int = 0
) -> int | None:
    """Index of the first frame arriving after ``after`` where the bot's voice starts (frames
    are in arrival order); looking from index ``begin`` on."""
    i = max(begin, bisect.bisect_right(frames, after, key=lambda f: f.arrived))
    for k in range(i, len(frames)):
        if is_start(frames, k, hold_s):
            return k
    return None


def starts(
    frames: Sequence[Heard], after: float, until: float, hold_s: float = HOLD_S
) -> list[float]:
    """Arrival times of the bot's voice starting in ``(after, until]``."""
    first = bisect.bisect_right(frames, after, key=lambda f: f.arrived)
    last = bisect.bisect_right(frames, until, key=lambda f: f.arrived)
    return [frames[k].arrived for k in range(first, last) if is_start(frames, k, hold_s)]


def timeline(
    spans: Sequence[PauseSpan], samples: int, stopped: float
) -> tuple[list[TimedPause], float]:
    """The pauses of ``samples`` of caller audio on the caller's clock, and when its last sample
    went out. The audio left in 20 ms frames, the last of them (padded) at ``stopped``."""
    frames = -(-samples // FRAME_SAMPLES)
    zero = stopped - frames * FRAME_SAMPLES / SAMPLE_RATE  # when sample 0 began

    def at(sample: int) -> float:
        return zero + sample / SAMPLE_RATE

    timed = [TimedPause(at(s.start), at(s.end), s.ms, s.where) for s in spans]
    return timed, at(samples)


def find_cutoffs(
    frames: Sequence[Heard], pauses: Sequence[TimedPause], last_speech: float
) -> list[Cutoff]:
    """Each pause the bot's voice started in (or after it, before the caller's next pause or
    last speech sample): at most one per pause, the first start."""
    found = []
    for i, pause in enumerate(pauses):
        until = pauses[i + 1].start if i + 1 < len(pauses) else last_speech
        began = starts(frames, pause.start, until)
        if began:
            into = round((began[0] - pause.start) * 1000)
            found.append(Cutoff(i, pause.ms, into, pause.where))
    return found
