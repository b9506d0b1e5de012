"""Per-turn latency stages as the runtime sees them, for the console's chart.

The same stages ``voicetyped call`` prints (voicetyped_dev.caller.stages), measured here from
what reaches the runtime instead of from trace spans:

- ``end_of_speech``: the caller's last speech (the VAD end's call time) -> the VAD end reached
  the runtime (its hangover). Call time is the speech gateway's clock: its offset to ours is
  learnt from the playback events it stamps with the call time of sending (finished,
  cancelled), the least delayed one;
- ``final``: the VAD end arrived -> the final transcript arrived;
- ``decision``: the transcript (or key) arrived -> the engine stepped, the state was saved and
  the effects were sent;
- ``tts``: the reply's SpeakRequest sent -> the speech gateway reported it playing.

``playout`` and ``network`` happen after the speech gateway, at the media gateway and the
caller: the runtime never sees them (the console says so).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

KEEP = 16  # utterances and replies remembered at once (bounded)


@dataclass
class _Utterance:
    vad_end_at_ms: int | None = None
    vad_end_ns: int | None = None


@dataclass
class _Reply:
    stages: dict[str, float]
    sent_ns: int
    trigger: str


@dataclass
class TurnClock:
    utterances: OrderedDict[str, _Utterance] = field(default_factory=OrderedDict)
    finals: OrderedDict[str, tuple[int, int | None]] = field(default_factory=OrderedDict)
    """utterance id -> (arrival ns, VAD end arrival ns)."""
    replies: OrderedDict[str, _Reply] = field(default_factory=OrderedDict)
    offset_ms: float | None = None
    """Our wall clock minus the speech gateway's call time (ms), when known."""

    def call_time_sample(self, at_ms: int, now_ns: int) -> None:
        """An update stamped with the call time it was sent at arrived at ``now_ns``."""
        offset = now_ns / 1e6 - at_ms
        if self.offset_ms is None or offset < self.offset_ms:
            self.offset_ms = offset

    @staticmethod
    def _bound(d: OrderedDict[str, Any]) -> None:
        while len(d) > KEEP:
            d.popitem(last=False)

    def vad_end(self, utterance_id: str, at_ms: int, now_ns: int) -> None:
        self.utterances[utterance_id] = _Utterance(at_ms, now_ns)
        self._bound(self.utterances)

    def final(self, utterance_id: str, now_ns: int) -> None:
        u = self.utterances.get(utterance_id)
        self.finals[utterance_id] = (now_ns, None if u is None else u.vad_end_ns)
        self._bound(self.finals)

    def decided(
        self,
        utterance_id: str | None,
        trigger: str,
        arrived_ns: int,
        sent_ns: int,
        speak_ids: list[str],
    ) -> None:
        """A caller turn (``utterance_id``; None for a key) was decided; its reply is the first
        of ``speak_ids`` (none: no reply to time)."""
        if not speak_ids:
            return
        stages: dict[str, float] = {}
        if utterance_id is not None:
            u = self.utterances.get(utterance_id)
            final = self.finals.get(utterance_id)
            if u is not None and u.vad_end_ns is not None and self.offset_ms is not None:
                declared = u.vad_end_ns / 1e6 - self.offset_ms  # in call time
                stages["end_of_speech"] = max(declared - (u.vad_end_at_ms or 0), 0)
            if final is not None and final[1] is not None:
                stages["final"] = max(final[0] - final[1], 0) / 1e6
        stages["decision"] = max(sent_ns - arrived_ns, 0) / 1e6
        self.replies[speak_ids[0]] = _Reply(stages, sent_ns, trigger)
        self._bound(self.replies)

    def playback_started(self, request_id: str, now_ns: int) -> tuple[str, dict[str, float]] | None:
        """The stages of the turn whose reply ``request_id`` is, now complete."""
        reply = self.replies.pop(request_id, None)
        if reply is None:
            return None
        stages = {**reply.stages, "tts": max(now_ns - reply.sent_ns, 0) / 1e6}
        return reply.trigger, {k: round(v, 1) for k, v in stages.items()}
