"""Scripted calls: what the caller does, turn by turn, and what it measures.

A script is a YAML list of steps::

    - listen: {}                     # the greeting
    - say: "I want to check my order"
    - press: "48213#"
    - say: "agent please"
      barge_in_after_ms: 800         # talk over the bot's reply 0.8 s after it starts
    - expect: "connecting you"       # the bot's last utterance must say this (see caller.match)
    - say: "my order number is [pause 700ms] four eight [pause 1.2s] two one three"
    - wav: recordings/address.wav    # a recording (any rate; leading silence is cut)
      pauses_ms: [[1200, 1900]]      # where in the file the caller pauses mid-turn
    - hangup: {}

After ``say``, ``wav`` and ``press`` the caller listens: it waits for the bot to start speaking
(or ``timeout_s``) and then to be quiet for ``quiet_ms``; that stretch of audio is one bot
utterance. The **turn latency** is from the caller's last speech sample (or the last key going
down) to the first loud frame of the bot's reply arriving over RTP. The reply must *start* after
that: audio the bot began earlier and is still playing does not count (see :mod:`.cutoff`).

**Pauses mid-turn.** ``[pause 700ms]`` or ``[pause 1.2s]`` between words of a ``say`` (more than
0, at most 10 s) makes the caller stop for that long and go on: the pieces around it are
synthesized separately in the same voice and joined with that much silence. A ``wav`` step marks
its pauses with ``pauses_ms: [[start, end], ...]`` (milliseconds into the file). The caller is
not finished at a pause: the bot starting to speak anywhere from the beginning of a pause to the
caller's last word is a **false cutoff**, kept on the turn (which pause, how far into it) and
reported as a failure of the call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from voicetyped_dev.caller.cutoff import Cutoff, TimedPause, first_start
from voicetyped_dev.caller.pauses import Said, check_intervals, parse_said
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

    @field_validator("say")
    @classmethod
    def _markers(cls, text: str) -> str:
        parse_said(text)  # a PauseError (a ValueError) names the bad marker
        return text

    @property
    def said(self) -> Said:
        """The text split at its pause markers."""
        return parse_said(self.say)


class Wav(_Step):
    wav: Path
    pauses_ms: list[tuple[int, int]] = Field(default_factory=list)
    """Where in the file the caller pauses mid-turn (``[start, end]`` ms, in order)."""
    listen: Listen = Field(default_factory=Listen)

    @field_validator("pauses_ms")
    @classmethod
    def _intervals(cls, intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
        check_intervals(intervals)
        return intervals


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


_KINDS = ("say", "wav", "press", "wait", "expect", "hangup", "listen")
"""A step's kind is the first of these keys it has (``say``/``wav``/``press`` may also have a
``listen``)."""


def _kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((k for k in _KINDS if k in value), None)
    return next((k for k in _KINDS if hasattr(value, k)), None)


Step = Annotated[
    Annotated[Say, Tag("say")]
    | Annotated[Wav, Tag("wav")]
    | Annotated[Press, Tag("press")]
    | Annotated[Wait, Tag("wait")]
    | Annotated[Expect, Tag("expect")]
    | Annotated[Hangup, Tag("hangup")]
    | Annotated[ListenStep, Tag("listen")],
    Discriminator(
        _kind,
        custom_error_type="unknown_step",
        custom_error_message=f"a step is one of {', '.join(_KINDS)}",
    ),
]
_STEPS: TypeAdapter[list[Step]] = TypeAdapter(list[Step])


class ScriptError(ValueError):
    """A script that is not a list of valid steps; the message names each bad step."""


def load_script(path: Path) -> list[Step]:
    try:
        return _STEPS.validate_python(yaml.safe_load(path.read_text("utf-8")) or [])
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = [str(p) for p in error["loc"]]
            step = f"step {int(where[0]) + 1}" if where and where[0].isdigit() else "script"
            field_path = ".".join(where[2:]) or ".".join(where[1:2])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{step}{f' ({field_path})' if field_path else ''}: {message}")
        raise ScriptError(f"{path}: " + "; ".join(problems)) from exc


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
    """When the caller's last speech sample went out / the last key went down."""
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
    pauses: list[TimedPause] = field(default_factory=list)
    """The pauses the caller made mid-turn (``[pause …]`` markers, a wav's ``pauses_ms``)."""
    cutoffs: list[Cutoff] = field(default_factory=list)
    """The pauses the bot spoke in (or after, before the caller finished): false cutoffs."""
    bot_starts: list[float] = field(default_factory=list)
    """Every start of the bot's voice from the caller's first word of the step to the end of
    listening (a turn split in two is answered twice)."""


@dataclass
class CallLog:
    call_id: str = ""
    turns: list[Turn] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    ended_by_bot: bool = False


async def listen(call: PhoneCall, since: float, spec: Listen) -> BotUtterance | None:
    """The bot's next utterance starting after ``since``: wait for its voice to start (audio
    it began before ``since`` and still plays is not a start), then for ``quiet_ms`` of
    quiet."""
    import asyncio

    deadline = time.perf_counter() + spec.timeout_s
    start_index: int | None = None
    looked = 0  # frames before this index were no start
    while time.perf_counter() < deadline and not call.ended.is_set():
        start_index = first_start(call.heard, since, begin=looked)
        if start_index is not None:
            break
        looked = len(call.heard)
        await asyncio.sleep(FRAME_S / 2)
    if start_index is None:
        return None
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
