"""Pauses in scripted caller turns: the marker, the joined audio, and false-cutoff detection on
synthetic timelines of what the caller heard (no stack, no models)."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from pydantic import ValidationError
from voicetyped_dev.caller.cutoff import (
    Cutoff,
    TimedPause,
    find_cutoffs,
    first_start,
    starts,
    timeline,
)
from voicetyped_dev.caller.pauses import (
    PauseError,
    PauseSpan,
    join,
    parse_length,
    parse_said,
    wav_pauses,
)
from voicetyped_dev.caller.phone import Heard, PhoneCall
from voicetyped_dev.caller.run import read_wav_8k, wav_spoken
from voicetyped_dev.caller.script import Listen, Say, ScriptError, Wav, listen, load_script

FRAME = 0.02


def heard(pattern: str, t0: float = 100.0) -> list[Heard]:
    """Frames arriving every 20 ms from ``t0``: ``L`` loud, ``.`` quiet."""
    return [Heard(b"", t0 + i * FRAME, c == "L") for i, c in enumerate(pattern)]


# -- the marker ----------------------------------------------------------------------------------


def test_markers_split_the_text_into_pieces_and_pauses() -> None:
    said = parse_said("my order number is [pause 700ms] four eight [pause 1.2s] two one three")
    assert said.pieces == ("my order number is", "four eight", "two one three")
    assert said.pauses_ms == (700, 1200)
    assert said.words == "my order number is four eight two one three"


def test_text_without_markers_is_one_piece() -> None:
    said = parse_said("I want to check my order.")
    assert said.pieces == ("I want to check my order.",)
    assert said.pauses_ms == ()


@pytest.mark.parametrize(
    ("text", "ms"),
    [("700ms", 700), ("1.2s", 1200), ("1.2 s", 1200), ("250 MS", 250), ("10s", 10_000)],
)
def test_lengths_in_ms_or_s(text: str, ms: int) -> None:
    assert parse_length(text) == ms


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a [pause 700] b", "no unit"),
        ("a [pause 700sec] b", "unit 'sec'"),
        ("a [pause 2min] b", "use ms or s"),
        ("a [pause -200ms] b", "negative"),
        ("a [pause 0ms] b", "no pause"),
        ("a [pause 10.5s] b", "longer than 10 s"),
        ("a [pause 20000ms] b", "longer than 10 s"),
        ("a [pause soon] b", "not a length"),
        ("a [pause] b", "no length"),
        ("a [beep] b", "unknown marker [beep]"),
        ("[pause 1s] hello", "at the start"),
        ("hello [pause 1s]", "at the end"),
        ("a [pause 1s] [pause 2s] b", "right after another pause"),
        ("a [pause 1s b", "unbalanced bracket"),
        ("a ] b", "unbalanced bracket"),
    ],
)
def test_bad_markers_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(PauseError, match=message.replace("[", r"\[")):
        parse_said(text)


def test_a_script_with_a_bad_marker_does_not_load(tmp_path: Path) -> None:
    script = tmp_path / "call.yaml"
    script.write_text('- say: "my number is [pause 3 minutes] four"\n')
    with pytest.raises(ScriptError, match=r"step 1 \(say\): pause '3 minutes' .* use ms or s"):
        load_script(script)


def test_a_script_step_exposes_its_pieces() -> None:
    step = Say(say="yes [pause 400ms] that's right")
    assert step.said.pieces == ("yes", "that's right")


def test_wav_pauses_must_be_in_order() -> None:
    with pytest.raises(ValidationError, match="overlaps"):
        Wav(wav=Path("a.wav"), pauses_ms=[(1000, 1500), (1200, 1800)])
    with pytest.raises(ValidationError, match="start < end"):
        Wav(wav=Path("a.wav"), pauses_ms=[(1500, 1500)])


# -- joining -------------------------------------------------------------------------------------


def test_pieces_are_joined_with_exactly_the_pause() -> None:
    said = parse_said("one [pause 700ms] two [pause 1.2s] three")
    pieces = [np.full(n, 1000, dtype="<i2").tobytes() for n in (4000, 2400, 3200)]
    spoken = join(said, pieces)
    assert len(spoken.pcm) == 2 * (4000 + 5600 + 2400 + 9600 + 3200)
    first, second = spoken.pauses
    assert (first.start, first.end, first.ms) == (4000, 9600, 700)
    assert (second.start, second.end, second.ms) == (12000, 21600, 1200)
    assert first.where == "after 'one'"
    samples = np.frombuffer(spoken.pcm, dtype="<i2")
    assert not samples[first.start : first.end].any()  # digital silence
    assert samples[first.end] == 1000 and samples[first.start - 1] == 1000


def test_join_wants_one_audio_per_piece() -> None:
    with pytest.raises(ValueError, match="pieces"):
        join(parse_said("a [pause 1s] b"), [b"\0\0"])


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())


def test_wav_pauses_follow_the_trimmed_leading_silence(tmp_path: Path) -> None:
    # 0.5 s silence, 1 s speech, 0.7 s pause, 1 s speech, 0.3 s silence.
    tone = (3000 * np.sin(np.arange(8000) * 0.3)).astype(np.int16)
    quiet = np.zeros
    path = tmp_path / "caller.wav"
    write_wav(path, np.concatenate([quiet(4000), tone, quiet(5600), tone, quiet(2400)]))
    pcm, lead = read_wav_8k(path)
    assert lead == pytest.approx(4000, abs=2)
    spoken = wav_spoken(Wav(wav=path, pauses_ms=[(1500, 2200)]))
    (pause,) = spoken.pauses
    assert pause.start == 1500 * 8 - lead and pause.end == 2200 * 8 - lead
    samples = np.frombuffer(pcm, dtype="<i2")
    assert not samples[pause.start + 10 : pause.end - 10].any()
    assert pause.where == "at 1.50 s into caller.wav"


def test_wav_pauses_outside_the_speech_are_refused() -> None:
    with pytest.raises(PauseError, match="before the caller's first word"):
        wav_pauses([(100, 600)], lead=4000, samples=30_000, name="a.wav")
    with pytest.raises(PauseError, match="after the caller's last word"):
        wav_pauses([(3000, 5000)], lead=4000, samples=30_000, name="a.wav")


# -- when the bot's voice starts -----------------------------------------------------------------


def test_a_start_needs_quiet_before_it() -> None:
    frames = heard("....LLLL..LL" + "." * 20 + "LLL")
    # The gap of 2 frames inside the first prompt is not a new start; the one after 0.4 s is.
    assert starts(frames, 0, 1e9) == [frames[4].arrived, frames[32].arrived]


def test_audio_still_playing_is_not_a_start() -> None:
    frames = heard("LLLLLLLLLL" + "." * 20 + "LLLL")
    since = frames[5].arrived  # the caller finished while the bot was still talking
    index = first_start(frames, since)
    assert index == 30


def test_missing_frames_count_as_quiet() -> None:
    frames = heard("LLL") + heard("LLL", t0=100.0 + 0.5)
    assert starts(frames, 0, 1e9) == [100.0, 100.5]


async def test_listen_does_not_take_a_reply_that_began_before_the_caller_finished() -> None:
    now = time.perf_counter()
    # An early reply still plays 0.3 s past the caller's end; the real reply starts 0.7 s after
    # the end. Everything is in the past: listen returns at once.
    frames = heard("L" * 65 + "." * 20 + "L" * 20 + "." * 60, t0=now - 3.4)
    stopped = frames[50].arrived
    fake = cast(PhoneCall, type("Call", (), {"heard": frames, "ended": asyncio.Event()})())
    utterance = await listen(fake, stopped, Listen(timeout_s=0.1, quiet_ms=300))
    assert utterance is not None
    assert utterance.started == frames[85].arrived


# -- false cutoffs ------------------------------------------------------------------------------


def test_timeline_puts_the_last_frame_at_stopped() -> None:
    spans = [PauseSpan(8000, 13600, "after 'a'")]
    pauses, last = timeline(spans, samples=20_000 - 100, stopped=50.0)
    # 125 frames (the last padded by 100 samples) end at 50.0: sample 0 went at 47.5.
    assert last == pytest.approx(50.0 - 100 / 8000)
    (pause,) = pauses
    assert pause.start == 48.5
    assert pause.end == pytest.approx(49.2)
    assert (pause.ms, pause.where) == (700, "after 'a'")


def paused_call() -> tuple[list[TimedPause], float]:
    """Speech 100.0-101.0, pause 101.0-101.7, speech -102.5, pause -103.5, speech -104.0."""
    return [
        TimedPause(101.0, 101.7, 700, "after 'my order number is'"),
        TimedPause(102.5, 103.5, 1000, "after 'four eight'"),
    ], 104.0


def frames_with_starts(*at: float) -> list[Heard]:
    """Quiet frames 99.0-106.0 with a loud 0.4 s reply starting at each of ``at``."""
    frames = []
    t = 99.0
    while t < 106.0:
        loud = any(s <= t < s + 0.4 for s in at)
        frames.append(Heard(b"", t, loud))
        t = round(t + FRAME, 6)
    return frames


def test_no_cutoff_when_the_bot_answers_after_the_last_word() -> None:
    pauses, last = paused_call()
    assert find_cutoffs(frames_with_starts(104.5), pauses, last) == []


def test_the_bot_speaking_in_a_pause_is_a_cutoff() -> None:
    pauses, last = paused_call()
    (cutoff,) = find_cutoffs(frames_with_starts(101.42, 104.5), pauses, last)
    assert cutoff == Cutoff(0, 700, 420, "after 'my order number is'")
    assert cutoff.in_pause
    assert cutoff.describe() == (
        "false cutoff: the bot spoke 420 ms into the 700 ms pause after 'my order number is'"
    )


def test_the_bot_speaking_after_the_caller_went_on_is_a_cutoff_of_that_pause() -> None:
    pauses, last = paused_call()
    (cutoff,) = find_cutoffs(frames_with_starts(101.9), pauses, last)
    assert (cutoff.pause, cutoff.into_ms) == (0, 900)
    assert not cutoff.in_pause
    assert "200 ms after the caller went on from the 700 ms pause" in cutoff.describe()


def test_each_pause_is_counted_once() -> None:
    pauses, last = paused_call()
    found = find_cutoffs(frames_with_starts(101.3, 101.8, 103.0), pauses, last)
    assert [(c.pause, c.into_ms) for c in found] == [(0, 300), (1, 500)]


def test_the_bot_speaking_before_the_first_pause_is_not_counted() -> None:
    pauses, last = paused_call()
    assert find_cutoffs(frames_with_starts(100.2), pauses, last) == []


def test_a_reply_running_into_the_pause_is_not_a_start_in_it() -> None:
    pauses, last = paused_call()
    # Loud from 100.7 to 101.1: it started before the pause and only continues in it.
    assert find_cutoffs(frames_with_starts(100.7), pauses, last) == []


def test_an_unknown_step_is_named(tmp_path: Path) -> None:
    script = tmp_path / "call.yaml"
    script.write_text('- listen: {}\n- sya: "hello"\n')
    with pytest.raises(ScriptError, match="step 2: a step is one of say, wav"):
        load_script(script)


def test_steps_still_load_as_before() -> None:
    steps = load_script(Path(__file__).parents[1] / "examples" / "calls" / "order-status.yaml")
    assert [type(s).__name__ for s in steps[:3]] == ["ListenStep", "Expect", "Say"]
