"""Pauses the caller makes in the middle of a turn: the ``[pause …]`` marker of a ``say`` step,
the ``pauses_ms`` intervals of a ``wav`` step, and the caller's audio with them in place.

A marker goes between two words: ``"my order number is [pause 700ms] four eight"``. Its length is
milliseconds (``700ms``) or seconds (``1.2s``), more than 0 and at most 10 s. Each piece of text
around the markers is spoken separately (same voice), trimmed of the voice's own silence, and
the pieces are joined with exactly that much digital silence. Every such pause is labelled
"the caller continues": the bot speaking from the start of one until the caller's last word is
a false cutoff (:mod:`.cutoff`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

SAMPLE_RATE = 8000
MAX_PAUSE_MS = 10_000
_MARKER = re.compile(r"\[([^\[\]]*)\]")
_LENGTH = re.compile(r"(?P<number>[+-]?\d+(?:\.\d+)?|[+-]?\.\d+)\s*(?P<unit>[A-Za-z]*)")


class PauseError(ValueError):
    """A pause marker or a ``pauses_ms`` interval that cannot be used; the message says why."""


@dataclass(frozen=True)
class Said:
    """A ``say`` step's text split at its pause markers."""

    pieces: tuple[str, ...]
    """The words between the markers (one more than ``pauses_ms``)."""
    pauses_ms: tuple[int, ...]

    @property
    def words(self) -> str:
        """What the caller says, without the markers."""
        return " ".join(self.pieces)


@dataclass(frozen=True)
class PauseSpan:
    """One pause in the caller's audio of a step, in samples (8 kHz) from its first sample."""

    start: int
    end: int
    where: str
    """Where it is, for messages: ``after 'my order number is'``, ``at 1.20 s into a.wav``."""

    @property
    def ms(self) -> int:
        return round((self.end - self.start) * 1000 / SAMPLE_RATE)


@dataclass(frozen=True)
class Spoken:
    """A step's audio as sent (8 kHz s16le) and the pauses in it."""

    pcm: bytes
    pauses: tuple[PauseSpan, ...] = ()


def parse_length(text: str) -> int:
    """``700ms`` / ``1.2s`` / ``1.2 s`` -> milliseconds (0 < length <= 10 s)."""
    match = _LENGTH.fullmatch(text.strip())
    if match is None:
        raise PauseError(f"{text.strip()!r} is not a length: write it like 700ms or 1.2s")
    number, unit = float(match["number"]), match["unit"].lower()
    if unit not in ("ms", "s"):
        shown = f"unit {match['unit']!r}" if unit else "no unit"
        raise PauseError(f"pause {text.strip()!r} has {shown}: use ms or s (700ms, 1.2s)")
    ms = number * (1000 if unit == "s" else 1)
    if ms < 0:
        raise PauseError(f"pause {text.strip()!r} is negative")
    if round(ms) <= 0:
        raise PauseError(f"pause {text.strip()!r} is no pause: give at least 1ms")
    if ms > MAX_PAUSE_MS:
        raise PauseError(f"pause {text.strip()!r} is longer than 10 s")
    return round(ms)


def parse_said(text: str) -> Said:
    """Split ``text`` at its ``[pause …]`` markers; :class:`PauseError` for a bad one."""
    pieces: list[str] = []
    pauses: list[int] = []
    rest = 0
    for match in _MARKER.finditer(text):
        inner = match[1].strip()
        length = inner[5:]
        if inner[:5].lower() != "pause":
            raise PauseError(
                f"unknown marker [{inner}]: the only marker is a pause, e.g. [pause 700ms]"
            )
        if not length.strip():
            raise PauseError(f"[{inner}] has no length: write [pause 700ms] or [pause 1.2s]")
        piece = text[rest : match.start()].strip()
        if not piece:
            where = "at the start" if not pieces else "right after another pause"
            raise PauseError(f"[{inner}] comes {where}: a pause goes between words")
        pieces.append(piece)
        pauses.append(parse_length(length))
        rest = match.end()
    last = text[rest:].strip()
    if "[" in last or "]" in last or any("[" in p or "]" in p for p in pieces):
        raise PauseError(f"unbalanced bracket in {text!r}: a marker is [pause 700ms]")
    if pauses and not last:
        raise PauseError("a pause at the end is not mid-turn: a pause goes between words")
    pieces.append(last)
    return Said(tuple(pieces), tuple(pauses))


def join(said: Said, pieces: Sequence[bytes]) -> Spoken:
    """The audio of ``said``: its pieces' audio (8 kHz s16le, already trimmed) with each pause's
    silence between them."""
    if len(pieces) != len(said.pieces):
        raise ValueError(f"{len(said.pieces)} pieces said, {len(pieces)} given")
    pauses_ms = said.pauses_ms
    out = bytearray()
    spans = []
    for i, pcm in enumerate(pieces):
        out += pcm[: len(pcm) // 2 * 2]
        if i < len(pauses_ms):
            start = len(out) // 2
            out += bytes(2 * pauses_ms[i] * SAMPLE_RATE // 1000)
            spans.append(PauseSpan(start, len(out) // 2, f"after '{said.pieces[i]}'"))
    return Spoken(bytes(out), tuple(spans))


def wav_pauses(
    intervals_ms: Sequence[tuple[int, int]], lead: int, samples: int, name: str
) -> tuple[PauseSpan, ...]:
    """A ``wav`` step's ``pauses_ms`` (milliseconds into the file) as spans of the audio sent:
    ``lead`` samples of leading silence were trimmed off and ``samples`` were left. A pause must
    lie between the file's first and last speech."""
    spans = []
    for start_ms, end_ms in intervals_ms:
        start = start_ms * SAMPLE_RATE // 1000 - lead
        end = end_ms * SAMPLE_RATE // 1000 - lead
        where = f"pause [{start_ms}, {end_ms}] ms of {name}"
        if start <= 0:
            first = lead * 1000 // SAMPLE_RATE
            raise PauseError(f"{where} starts before the caller's first word (at {first} ms)")
        if end >= samples:
            last = (lead + samples) * 1000 // SAMPLE_RATE
            raise PauseError(f"{where} ends after the caller's last word (at {last} ms)")
        spans.append(PauseSpan(start, end, f"at {start_ms / 1000:.2f} s into {name}"))
    return tuple(spans)


def check_intervals(intervals: Sequence[tuple[int, int]]) -> None:
    """``pauses_ms`` of a ``wav`` step: each ``[start, end]`` with 0 <= start < end, in order,
    not overlapping."""
    previous_end = -1
    for start, end in intervals:
        if start < 0 or end <= start:
            raise PauseError(f"pause [{start}, {end}] ms: need 0 <= start < end")
        if start < previous_end:
            raise PauseError(f"pause [{start}, {end}] ms overlaps or precedes the one before")
        previous_end = end
