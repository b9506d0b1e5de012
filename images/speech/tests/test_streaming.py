"""Streaming recognition of a call on the real whisper.cpp model: VAD events, partials,
speculative finals and the overload signal. Audio is Piper speech through a G.711 call leg,
pushed in 20 ms chunks (in real time where timing decides what happens)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pytest
from piper import SynthesisConfig
from voicetyped_speech.asr.base import AbortCheck, Aborted, Audio, DecodeOptions, Transcription
from voicetyped_speech.asr.pool import Deadline, RecognitionPool
from voicetyped_speech.asr.whispercpp import WhisperCppRecognizer
from voicetyped_speech.streaming import (
    FinalTiming,
    RecognitionEvent,
    RecognitionOverloaded,
    StreamingRecognizer,
    StreamingSettings,
    TranscriptUpdate,
    UtteranceEnded,
    UtteranceStarted,
)
from voicetyped_testkit.speech import Pcm, phone_speech, silence, word_errors

if TYPE_CHECKING:
    from piper import PiperVoice
    from voicetyped_speech.models.prepare import PrepareResult

CHUNK = 640  # 20 ms at 16 kHz
# Piper without its random variation: the same audio every run.
QUIET = SynthesisConfig(noise_scale=0, noise_w_scale=0)


@pytest.fixture(scope="module")
def pool(prepared: PrepareResult) -> Iterator[RecognitionPool]:
    pool = RecognitionPool(lambda: WhisperCppRecognizer(prepared.ggml_path), workers=1)
    yield pool
    pool.close()


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[float, RecognitionEvent]] = []
        self.timings: list[FinalTiming] = []

    def __call__(self, event: RecognitionEvent) -> None:
        self.events.append((time.perf_counter(), event))

    def of(self, kind: type) -> list[RecognitionEvent]:
        return [e for _, e in self.events if isinstance(e, kind)]

    def finals(self) -> list[TranscriptUpdate]:
        return [e for e in self.of(TranscriptUpdate) if isinstance(e, TranscriptUpdate) and e.final]


async def push(rec: StreamingRecognizer, pcm: Pcm, realtime: bool, start_ms: int = 0) -> int:
    data = pcm.tobytes()
    t0 = time.perf_counter()
    for offset in range(0, len(data), CHUNK):
        at_ms = start_ms + offset // 32
        rec.push(data[offset : offset + CHUNK], at_ms)
        if realtime:
            delay = t0 + (offset + CHUNK) / 32000 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        elif offset % (CHUNK * 25) == 0:
            await asyncio.sleep(0)
    return start_ms + len(data) // 32


def trimmed(pcm: Pcm) -> Pcm:
    """Without Piper's leading and trailing silence (samples under 1 % of the peak)."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > np.abs(pcm.astype(np.int32)).max() // 100)
    return pcm[loud[0] : loud[-1] + 1]


def conversation(voice: PiperVoice, phrases: Sequence[str], gap_ms: int = 1000) -> Pcm:
    parts = [silence(500)]
    for text in phrases:
        parts += [phone_speech(voice, text, QUIET), silence(gap_ms)]
    return np.concatenate(parts)


async def test_finals_come_from_the_speculative_decode_and_are_right(
    pool: RecognitionPool, voice: PiperVoice
) -> None:
    phrases = ["I want to check the status of my order.", "Yes, that is correct.", "No."]
    rec = Recorder()
    stream = StreamingRecognizer("call-a", pool, rec, on_final=rec.timings.append)
    end = await push(stream, conversation(voice, phrases), realtime=True)
    await stream.finish(end)

    finals = rec.finals()
    assert [f.utterance_id for f in finals] == ["u1", "u2", "u3"]
    errors = sum(word_errors(p, f.text)[0] for p, f in zip(phrases, finals, strict=True))
    assert errors / sum(word_errors(p, "")[1] for p in phrases) <= 0.05, finals
    assert [t.speculative for t in rec.timings] == [True, True, True]
    # Per utterance: started, ended, then its final; ended carries the estimated end of speech.
    order = [(type(e).__name__, getattr(e, "utterance_id", "")) for _, e in rec.events]
    for uid in ("u1", "u2", "u3"):
        mine = [name for name, u in order if u == uid]
        assert mine == ["UtteranceStarted", "UtteranceEnded", "TranscriptUpdate"], order
    ended = [e for e in rec.of(UtteranceEnded) if isinstance(e, UtteranceEnded)]
    for e, f in zip(ended, finals, strict=True):
        assert (f.start_ms, f.end_ms) == (e.started_at_ms, e.at_ms)
    assert not rec.of(RecognitionOverloaded)


async def test_speech_after_a_short_pause_is_not_lost(
    pool: RecognitionPool, voice: PiperVoice
) -> None:
    # 250 ms: webrtcvad reports the pause (a speculation starts) but it is shorter than the
    # 300 ms hangover, so the utterance goes on; its final must hold both halves.
    first, second = "I want to check", "the status of my order."
    pcm = np.concatenate(
        [
            silence(400),
            trimmed(phone_speech(voice, first, QUIET)),
            silence(250),
            trimmed(phone_speech(voice, second, QUIET)),
            silence(800),
        ]
    )
    rec = Recorder()
    stream = StreamingRecognizer("call-b", pool, rec, on_final=rec.timings.append)
    end = await push(stream, pcm, realtime=True)
    await stream.finish(end)
    finals = rec.finals()
    assert len(finals) == 1, rec.events
    errors, _ = word_errors(f"{first} {second}", finals[0].text)
    assert errors <= 1, finals[0].text
    assert rec.timings[0].speculative, "the speculation at the final pause is still used"


async def test_partials_arrive_before_the_final_and_never_after(
    pool: RecognitionPool, voice: PiperVoice
) -> None:
    text = "Hi, I was charged twice this month and I would like a refund for the second payment."
    rec = Recorder()
    stream = StreamingRecognizer("call-c", pool, rec, on_final=rec.timings.append)
    stream.partials = True
    end = await push(stream, conversation(voice, [text]), realtime=True)
    await stream.finish(end)
    updates = [(t, e) for t, e in rec.events if isinstance(e, TranscriptUpdate)]
    partials = [(t, e) for t, e in updates if not e.final]
    finals = [(t, e) for t, e in updates if e.final]
    assert len(finals) == 1
    assert len(partials) >= 2, "a 5 s utterance yields several partials"
    assert max(t for t, _ in partials) < finals[0][0]
    assert all(e.utterance_id == "u1" and e.text for _, e in partials)
    # Partials grow with the audio; the final is the whole sentence.
    assert [e.end_ms for _, e in partials] == sorted(e.end_ms for _, e in partials)
    assert word_errors(text, finals[0][1].text)[0] <= 1, finals[0][1].text


async def test_no_partials_unless_asked(pool: RecognitionPool, voice: PiperVoice) -> None:
    rec = Recorder()
    stream = StreamingRecognizer("call-d", pool, rec)
    end = await push(stream, conversation(voice, ["Can I speak to a person, please?"]), False)
    await stream.finish(end)
    assert [e.final for e in rec.of(TranscriptUpdate) if isinstance(e, TranscriptUpdate)] == [True]


async def test_overload_is_signalled_and_every_utterance_still_gets_a_final(
    prepared: PrepareResult, voice: PiperVoice
) -> None:
    # One worker, one waiting final: six calls ending an utterance at the same moment cannot
    # all be served in time. Those refused are told (and get an empty final), none waits.
    small = RecognitionPool(
        lambda: WhisperCppRecognizer(prepared.ggml_path), workers=1, max_waiting=1
    )
    try:
        pcm = conversation(voice, ["I need to cancel my appointment on Friday."], gap_ms=500)
        recorders = [Recorder() for _ in range(6)]
        no_speculation = StreamingSettings(speculate=False)
        streams = [
            StreamingRecognizer(
                f"call-{i}", small, rec, settings=no_speculation, on_final=rec.timings.append
            )
            for i, rec in enumerate(recorders)
        ]
        ends = [await push(s, pcm, realtime=False) for s in streams]
        await asyncio.gather(*(s.finish(e) for s, e in zip(streams, ends, strict=True)))
        overloaded = [r for r in recorders if r.of(RecognitionOverloaded)]
        served = [r for r in recorders if not r.of(RecognitionOverloaded)]
        assert overloaded, "some calls were refused"
        assert served, "the others were recognised"
        for r in recorders:
            assert len(r.finals()) == 1
        for r in overloaded:
            assert r.finals()[0].text == ""
            assert [t.empty for t in r.timings] == ["overloaded"]
        for r in served:
            assert (
                word_errors("I need to cancel my appointment on Friday.", r.finals()[0].text)[0]
                <= 1
            )
    finally:
        small.close()


async def test_close_drops_pending_work(pool: RecognitionPool, voice: PiperVoice) -> None:
    rec = Recorder()
    stream = StreamingRecognizer("call-e", pool, rec)
    await push(stream, conversation(voice, ["Yes, please."], gap_ms=400), realtime=False)
    await stream.aclose()
    count = len(rec.events)
    await asyncio.sleep(0.6)
    assert len(rec.events) == count, "nothing is emitted after aclose"
    assert isinstance(rec.events[0][1], UtteranceStarted)


class _Stalling:
    """whisper.cpp, except that once ``stall`` is set every decode hangs until its abort check
    says stop (a decode gone long: the pool's deadline must end it). Before that, decodes run
    to the end whatever their check says (a loaded machine must not hit the test's short
    deadline with them)."""

    name = "stalling"

    def __init__(self, real: WhisperCppRecognizer, stall: threading.Event) -> None:
        self.real = real
        self.stall = stall

    def warm_up(self) -> None:
        self.real.warm_up()

    def transcribe(
        self, audio: Audio, abort: AbortCheck | None = None, options: DecodeOptions | None = None
    ) -> Transcription:
        if not self.stall.is_set():
            return self.real.transcribe(audio, options=options)
        while abort is None or not abort():
            time.sleep(0.005)
        raise Aborted


@pytest.fixture(scope="module")
def stalling(prepared: PrepareResult) -> Iterator[tuple[RecognitionPool, threading.Event]]:
    stall = threading.Event()
    real = WhisperCppRecognizer(prepared.ggml_path)
    deadline = Deadline(0.3, 0, factor=0)  # 0.3 s, however long decodes take here
    pool = RecognitionPool(lambda: _Stalling(real, stall), workers=1, deadline=deadline)
    yield pool, stall
    pool.close()


async def test_a_final_past_its_deadline_is_the_newest_partial(
    stalling: tuple[RecognitionPool, threading.Event], voice: PiperVoice
) -> None:
    pool, stall = stalling
    stall.clear()
    text = "Hi, I was charged twice this month and I would like a refund for the second payment."
    rec = Recorder()

    def record(event: RecognitionEvent) -> None:
        rec(event)
        if isinstance(event, TranscriptUpdate) and not event.final:
            stall.set()  # from the first partial on, every decode goes long

    stream = StreamingRecognizer("call-f", pool, record, on_final=rec.timings.append)
    stream.partials = True
    started = time.perf_counter()
    end = await push(stream, conversation(voice, [text]), realtime=True)
    await stream.finish(end)
    partials = [e for e in rec.of(TranscriptUpdate) if isinstance(e, TranscriptUpdate)]
    assert [p.final for p in partials] == [False, True], "one partial, then the final"
    assert partials[1].text == partials[0].text and partials[1].text
    assert [(t.cut, t.empty) for t in rec.timings] == [("deadline", "")]
    assert rec.timings[0].seconds_after_end < 1.0, "the deadline (0.3 s) ended the wait"
    assert time.perf_counter() - started < 10


async def test_a_final_past_its_deadline_without_partials_is_empty_and_says_why(
    stalling: tuple[RecognitionPool, threading.Event], voice: PiperVoice
) -> None:
    pool, stall = stalling
    stall.set()
    rec = Recorder()
    stream = StreamingRecognizer("call-g", pool, rec, on_final=rec.timings.append)
    end = await push(stream, conversation(voice, ["Yes, that is correct."]), realtime=True)
    await stream.finish(end)
    assert [f.text for f in rec.finals()] == [""]
    assert [(t.cut, t.empty) for t in rec.timings] == [("deadline", "deadline")]
