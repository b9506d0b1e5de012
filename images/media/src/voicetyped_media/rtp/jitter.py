"""Receive-side reordering and loss concealment for one RTP audio stream.

Design (documented fixed delay, none when packets arrive in order): frames are released in
sequence order as soon as they are next; a missing frame is waited for until ``window`` later
frames have arrived (3 frames = at most 60 ms of added delay, only while a packet is missing),
then declared lost and concealed. A packet older than what was released is late: dropped and
counted. :meth:`flush` releases everything held (BYE, SSRC change, hold) so no audio at the
end of a stream is lost (aiortp's buffer keeps its last frames).

The buffer works on sequence numbers (RFC 3550 16-bit, with wrap-around); RFC 4733 packets
share that space and are marked with :meth:`skip` so they do not read as loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Deliver = Callable[[bytes | None, int], None]
"""``(payload or None for a lost frame, rtp timestamp)``."""


def _seq_diff(a: int, b: int) -> int:
    """a - b in 16-bit sequence space, in [-32768, 32767]."""
    return ((a - b + 32768) & 0xFFFF) - 32768


@dataclass
class JitterStats:
    received: int = 0
    lost: int = 0
    late: int = 0
    duplicates: int = 0


class ReorderBuffer:
    def __init__(self, deliver: Deliver, timestamp_step: int, window: int = 3) -> None:
        self._deliver = deliver
        self._step = self._step_default = timestamp_step
        self._last_ts: int | None = None
        self._window = window
        self._next: int | None = None  # the sequence number to release next
        self._next_ts = 0
        self._held: dict[int, tuple[bytes | None, int]] = {}  # seq -> (payload | None=skip, ts)
        self.stats = JitterStats()

    def reset(self) -> None:
        """Forget the stream (a new SSRC); call :meth:`flush` first to keep its audio."""
        self._next = None
        self._last_ts = None
        self._held.clear()

    def skip(self, seq: int) -> None:
        """``seq`` carried no audio (telephone-event, comfort noise)."""
        self._put(seq, None, None)

    def add(self, seq: int, timestamp: int, payload: bytes) -> None:
        self.stats.received += 1
        self._put(seq, payload, timestamp)

    def _put(self, seq: int, payload: bytes | None, timestamp: int | None) -> None:
        if self._next is None:
            self._next = seq
            self._next_ts = timestamp if timestamp is not None else 0
        ahead = _seq_diff(seq, self._next)
        if ahead < 0:
            if payload is not None:
                self.stats.late += 1
            return
        if seq in self._held:
            self.stats.duplicates += 1
            return
        if ahead > 1000:  # a jump (sender restarted its numbering): start over from here
            self.flush()
            self._next = seq
            self._next_ts = timestamp if timestamp is not None else self._next_ts
        self._held[seq] = (payload, timestamp if timestamp is not None else -1)
        self._release(force=False)

    def _release(self, force: bool) -> None:
        while self._held:
            assert self._next is not None
            item = self._held.pop(self._next, None)
            if item is None:
                if not force and len(self._held) < self._window:
                    return
                # Missing and given up on: conceal one frame.
                self.stats.lost += 1
                self._last_ts = None
                self._deliver(None, self._next_ts)
                self._next_ts = (self._next_ts + self._step) & 0xFFFFFFFF
            else:
                payload, ts = item
                if payload is not None:
                    if self._last_ts is not None:
                        # Learn the caller's packetization from consecutive frames.
                        advance = (ts - self._last_ts) & 0xFFFFFFFF
                        if 0 < advance <= 4 * self._step_default:
                            self._step = advance
                    self._last_ts = ts
                    self._deliver(payload, ts)
                    self._next_ts = (ts + self._step) & 0xFFFFFFFF
                else:
                    self._last_ts = None
            self._next = (self._next + 1) & 0xFFFF

    def flush(self) -> None:
        """Release everything held, concealing the gaps between."""
        if self._next is not None:
            self._release(force=True)
