"""Scripted calls: what the caller does, turn by turn, and what it measures.

A script is a YAML list of steps::

    - listen: {}                     # the greeting
    - say: "I want to check my order"
    - press: "48213#"
    - say: "agent please"
      barge_in_after_ms: 800         # talk over the bot's reply 0.8 s after it starts
    - expect: "connecting you"       # the bot's last utterance must contain this
    - hangup: {}

After ``say`` and ``press`` the caller listens: it waits for the bot to speak (or ``timeout_s``)
and then to be quiet for ``quiet_ms``; that stretch of audio is one bot utterance. The **turn
latency** is from the caller's last speech sample (or key press) to the first loud frame of the
bot's reply arriving over RTP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from voicetyped_dev.caller.phone import FRAME_S, PhoneCall

WALL_OFFSET = time.time() - time.perf_counter()
"""Adds to a ``time.perf_counter()`` reading to give wall-clock seconds (the spans' clock)."""


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Listen(_Step):
    kind: Literal["listen"] = "listen"
    timeout_s: float = 10.0
    quiet_ms: int = 900


class Say(_Step):
    say: str
    barge_in_after_ms: int | None = None
    """Start talking this long after the bot starts its reply to the previous step."""
    listen: Listen = Field(default_factory=Listen)


class Wav(_Step):
    wav: Path
    listen: Listen = Field(default_factory=Listen)


class Press(_Step):
    press: str
    gap_ms: int = 250
    listen: Listen = Field(default_factory=Listen)


class Wait(_Step):
    wait: float


class Expect(_Step):
    expect: str


class Hangup(_Step):
    hangup: dict[str, Any] = Field(default_factory=dict)


class ListenStep(_Step):
    listen: Listen


Step = Annotated[
    Say | Wav | Press | Wait | Expect | Hangup | ListenStep, Field(union_mode="left_to_right")
]
_STEPS: TypeAdapter[list[Step]] = TypeAdapter(list[Step])


def load_script(path: Path) -> list[Step]:
    return _STEPS.validate_python(yaml.safe_load(path.read_text("utf-8")) or [])


@dataclass
class BotUtterance:
    pcm: bytes  # 16 kHz
    started: float
    ended: float
    text: str = ""


@dataclass
class Turn:
    caller: str
    """What the caller did: the words said, keys pressed, or "(greeting)"."""
    stopped: float
    """When the caller's last speech sample / key press went out."""
    latency_s: float | None
    """Caller stopped -> first loud frame of the reply (None: the bot did not answer)."""
    bot: BotUtterance | None
    barge_in_stop_s: float | None = None
    """For a barge-in: caller started talking -> the bot's audio stopped."""
    stages: dict[str, float] | None = None
    """Where the latency went (from the call's trace; see :mod:`.stages`)."""
    heard: list[str] | None = None
    """The runtime's final transcripts of this turn (None: its admin API was not asked or did
    not answer; see :mod:`.heard`)."""


@dataclass
class CallLog:
    call_id: str = ""
    turns: list[Turn] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    ended_by_bot: bool = False


async def listen(call: PhoneCall, since: float, spec: Listen) -> BotUtterance | None:
    """The bot's next utterance starting after ``since``: wait for a loud frame, then for
    ``quiet_ms`` of quiet."""
    import asyncio

    deadline = time.perf_counter() + spec.timeout_s
    start_index: int | None = None
    while time.perf_counter() < deadline and not call.ended.is_set():
        for i in range(len(call.heard) - 1, -1, -1):
            frame = call.heard[i]
            if frame.arrived <= since:
                break
            if frame.loud:
                start_index = i
        if start_index is not None:
            break
        await asyncio.sleep(FRAME_S / 2)
    if start_index is None:
        return None
    # Walk back to the first loud frame after ``since`` (the loop above found one of them).
    while (
        start_index > 0
        and call.heard[start_index - 1].loud
        and call.heard[start_index - 1].arrived > since
    ):
        start_index -= 1
    quiet_s = spec.quiet_ms / 1000
    while not call.ended.is_set():
        frames = call.heard[start_index:]
        last_loud = max((f.arrived for f in frames if f.loud), default=frames[0].arrived)
        if time.perf_counter() - last_loud >= quiet_s:
            break
        await asyncio.sleep(FRAME_S)
    frames = call.heard[start_index:]
    last_loud = max(f.arrived for f in frames if f.loud)
    kept = [f for f in frames if f.arrived <= last_loud + 0.1]
    return BotUtterance(b"".join(f.pcm for f in kept), frames[0].arrived, last_loud)
