"""Where a turn's time went, from the call's OpenTelemetry spans (JSON lines written by the
services under ``voicetyped up``; see ``voicetyped.service.tracing``).

A turn runs from the caller's last speech sample (or key press) to the first loud RTP frame of
the reply at the caller. The spans split it into:

- ``end_of_speech``: caller stopped -> the speech gateway's VAD declared the end (its hangover);
- ``final``: -> the final transcript was ready;
- ``decision``: -> the runtime had the transcript (or digit), matched intents, stepped the FSM,
  saved the state and sent its effects;
- ``tts``: -> the speech gateway had the SpeakRequest and the reply's first audio frame;
- ``playout``: -> the media gateway sent that audio's first RTP packet;
- ``network``: -> the caller received it.

``backend`` (a call hook answered meanwhile) is reported beside them when there was one.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicetyped_dev.caller.script import WALL_OFFSET, CallLog


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    start: float  # wall seconds
    end: float
    attributes: dict[str, Any]


def load_spans(trace_dir: Path) -> list[Span]:
    spans = []
    for path in sorted(trace_dir.glob("*.jsonl")):
        for line in path.read_text("utf-8", errors="replace").splitlines():
            try:
                raw = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written
            spans.append(
                Span(
                    raw["service"],
                    raw["name"],
                    raw["trace_id"],
                    raw["start_ns"] / 1e9,
                    raw["end_ns"] / 1e9,
                    raw.get("attributes") or {},
                )
            )
    return sorted(spans, key=lambda s: s.start)


def _first(spans: list[Span], name: str, after: float, slack: float = 0.05) -> Span | None:
    return next((s for s in spans if s.name == name and s.start >= after - slack), None)


def turn_stages(
    spans: list[Span], stopped: float, heard: float, trace_id: str | None = None
) -> dict[str, float] | None:
    """The stages (seconds) of the turn from ``stopped`` to ``heard`` (wall seconds), or None
    when the spans do not cover it (tracing off)."""
    mine = [s for s in spans if trace_id is None or s.trace_id == trace_id]
    window = [s for s in mine if stopped - 1.0 <= s.start <= heard + 0.5]
    eos = next(
        (s for s in window if s.name == "speech.end_of_speech" and s.end >= stopped - 0.05), None
    )
    start = stopped
    stages: dict[str, float] = {}
    decision_after = stopped
    if eos is not None:
        final = next(
            (
                s
                for s in window
                if s.name == "speech.final"
                and s.attributes.get("utterance_id") == eos.attributes.get("utterance_id")
            ),
            None,
        )
        stages["end_of_speech"] = eos.end - start
        start = eos.end
        if final is not None:
            stages["final"] = final.end - start
            start = final.end
        decision_after = start
    decision = _first(window, "runtime.decision", decision_after)
    if decision is None:
        return None
    stages["decision"] = decision.end - start
    tts = _first(window, "speech.tts", decision.end)
    if tts is None:
        return stages
    stages["tts"] = tts.end - decision.end
    rtp = next(
        (
            s
            for s in window
            if s.name == "media.first_rtp"
            and s.attributes.get("request_id") == tts.attributes.get("request_id")
        ),
        None,
    )
    if rtp is not None:
        stages["playout"] = rtp.end - tts.end
        stages["network"] = heard - rtp.end
    backend = _first(window, "runtime.backend", stopped)
    if backend is not None and backend.start <= heard:
        stages["backend"] = backend.end - backend.start
    return stages


def call_trace(spans: list[Span], call_id: str) -> str | None:
    """The trace of the call with SIP Call-ID ``call_id`` (the media gateway's root span)."""
    return _root_trace(spans, "sip.call_id", call_id)


def session_trace(spans: list[Span], session_id: str) -> str | None:
    """The trace of the call with this session id (a browser call's ``webrtc-...``)."""
    return _root_trace(spans, "session_id", session_id)


def _root_trace(spans: list[Span], attribute: str, value: str) -> str | None:
    root = next(
        (s for s in spans if s.name == "call" and s.attributes.get(attribute) == value), None
    )
    return root.trace_id if root is not None else None


def attach_stages(log: CallLog, trace_dir: Path) -> None:
    """Fill in each turn's stages from the spans of its call."""
    spans = load_spans(trace_dir)
    trace_id = call_trace(spans, log.call_id)
    if trace_id is None:
        return
    for turn in log.turns[1:]:
        if turn.bot is not None and turn.latency_s is not None:
            stopped = turn.stopped + WALL_OFFSET
            turn.stages = turn_stages(spans, stopped, stopped + turn.latency_s, trace_id)


COMPLETE = frozenset({"decision", "tts", "playout", "network"})
"""The stages of a turn whose spans have all been exported."""


async def await_stages(log: CallLog, trace_dir: Path, timeout_s: float = 10.0) -> bool:
    """:func:`attach_stages` once every answered turn's spans are on disk (the services export
    them every 0.5 s, a running service a little later); False when some never came."""
    deadline = time.monotonic() + timeout_s
    while True:
        attach_stages(log, trace_dir)
        answered = [t for t in log.turns[1:] if t.bot is not None and t.latency_s is not None]
        if all(t.stages is not None and t.stages.keys() >= COMPLETE for t in answered):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)


def decided_states(trace_dir: Path, call_id: str) -> list[str]:
    """The states the runtime moved the call to, in order (its ``runtime.decision`` spans)."""
    spans = load_spans(trace_dir)
    trace_id = call_trace(spans, call_id)
    return [
        s.attributes["state_to"]
        for s in spans
        if s.trace_id == trace_id and s.name == "runtime.decision"
    ]
