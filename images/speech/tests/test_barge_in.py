"""Barge-in over prompts (barge_in.py): what a transcript says, the gate's holding, releasing
and dropping, and a SpeechCall doing it with the real VAD on Piper speech (the recogniser is
scripted: what it hears is the test's choice, so each outcome is forced)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator
from typing import TYPE_CHECKING

import numpy as np
import pytest
from piper import SynthesisConfig
from prometheus_client import CollectorRegistry
from voicetyped.recognition import Expect, RecognitionContext, context_to_proto
from voicetyped.v1 import speech_pb2
from voicetyped_speech.asr.base import DecodeOptions, Transcription
from voicetyped_speech.asr.pool import RecognitionPool
from voicetyped_speech.barge_in import (
    AudioTail,
    BargeInGate,
    BargeInMode,
    BargeInSettings,
    Forward,
    Ignore,
    Probe,
    StopPrompt,
    VoiceMeter,
    read_transcript,
)
from voicetyped_speech.calls import SpeechCall
from voicetyped_speech.metrics import SpeechMetrics
from voicetyped_speech.streaming import (
    RecognitionEvent,
    RecognitionOverloaded,
    StreamingSettings,
    TranscriptUpdate,
    UtteranceEnded,
    UtteranceStarted,
)
from voicetyped_speech.vad import VadSettings
from voicetyped_testkit.speech import Pcm, phone_speech, silence

if TYPE_CHECKING:
    from piper import PiperVoice

ALLOW, DENY, IMMEDIATE = BargeInMode.ALLOW, BargeInMode.DENY, BargeInMode.IMMEDIATE

# -- what a transcript says ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Uh-huh.", "backchannel"),
        ("Mm-hmm.", "backchannel"),
        ("MMMM.", "backchannel"),
        ("Okay.", "backchannel"),
        ("OK, okay.", "backchannel"),
        ("Yeah, right.", "backchannel"),
        ("I see.", "backchannel"),
        ("Oh, I see.", "backchannel"),
        ("Uh uh, okay.", "backchannel"),
        ("Got it, thanks.", "backchannel"),
        ("Thank you.", "backchannel"),
        ("That\u2019s right.", "backchannel"),
        ("Ha ha!", "backchannel"),
        ("And then...", "backchannel"),
        ("Oh... I... d...", "backchannel"),
        ("", "noise"),
        ("  ", "noise"),
        ("(coughing)", "noise"),
        ("[door slams]", "noise"),
        ("*cough*", "noise"),
        ("[BLANK_AUDIO]", "noise"),
        ("\u266a\u266a", "noise"),
        ("you", "noise"),
        ("Thanks for watching!", "noise"),
        ("No.", "words"),
        ("No, stop.", "words"),
        ("Wait.", "words"),
        ("Agent please.", "words"),
        ("Wait, I want to talk to an agent.", "words"),
        ("I want to--", "words"),
        ("(coughs) Agent.", "words"),
        ("Okay, four eight two.", "words"),
        ("48213", "words"),
        ("Hold on.", "words"),
    ],
)
def test_what_a_transcript_says(text: str, kind: str) -> None:
    assert read_transcript(text) == kind


@pytest.mark.parametrize("text", ["Yeah.", "Yes.", "Okay.", "Sure.", "That's right.", "Yep."])
def test_affirmatives_are_answers_where_yes_or_no_is_expected(text: str) -> None:
    assert read_transcript(text) == "backchannel"
    assert read_transcript(text, yes_no=True) == "words"


def test_hums_stay_backchannels_where_yes_or_no_is_expected() -> None:
    # The runtime does not read "uh-huh" as yes, so it must not stop the question.
    assert read_transcript("Uh-huh.", yes_no=True) == "backchannel"
    assert read_transcript("Mm-hmm.", yes_no=True) == "backchannel"


def test_other_languages_only_drop_noise() -> None:
    assert read_transcript("Okay.", english=False) == "words"
    assert read_transcript("Ja, genau.", english=False) == "words"
    assert read_transcript("[Musik]", english=False) == "noise"
    assert read_transcript("", english=False) == "noise"


# -- the gate --------------------------------------------------------------------------------


def start(uid: str = "u1", at: int = 1000) -> UtteranceStarted:
    return UtteranceStarted(uid, at)


def end(uid: str = "u1", at: int = 1500, started: int = 1000) -> UtteranceEnded:
    return UtteranceEnded(uid, at, started)


def text(
    uid: str, words: str, final: bool, span: tuple[int, int] = (1000, 1500)
) -> TranscriptUpdate:
    return TranscriptUpdate(uid, words, 0.8, span[0], span[1], final)


def forwarded(actions: list[object]) -> list[object]:
    return [a.event for a in actions if isinstance(a, Forward)]


def test_immediate_forwards_the_start_then_stops_the_prompt() -> None:
    gate = BargeInGate()
    s = start()
    assert gate.on_event(s, IMMEDIATE) == [Forward(s), StopPrompt("u1", "immediate", 0)]
    assert not gate.tracking
    e = end()
    assert gate.on_event(e, None) == [Forward(e)]


@pytest.mark.parametrize("mode", [DENY, None])
def test_deny_and_no_prompt_pass_everything_through(mode: BargeInMode | None) -> None:
    gate = BargeInGate()
    events: list[RecognitionEvent] = [
        start(),
        text("u1", "uh", False),
        end(),
        text("u1", "Uh-huh.", True),
    ]
    out = [a for e in events for a in gate.on_event(e, mode)]
    assert out == [Forward(e) for e in events]


def test_a_backchannel_over_an_allow_prompt_is_dropped_whole() -> None:
    gate = BargeInGate()
    assert gate.on_event(start(), ALLOW) == []
    assert gate.holding
    assert gate.on_event(text("u1", "Uh", False), ALLOW) == []
    assert gate.on_event(end(), ALLOW) == []
    out = gate.on_event(text("u1", "Uh-huh.", True), ALLOW)
    assert out == [Ignore("u1", "backchannel", 0, 1000, 1500)]
    assert not gate.tracking
    # The next utterance is judged afresh.
    s2 = start("u2", 3000)
    assert gate.on_event(s2, None) == [Forward(s2)]


@pytest.mark.parametrize(
    ("final", "overloaded", "reason"),
    [
        ("(coughing)", False, "noise"),
        ("[door slams]", False, "noise"),
        ("", False, "noise"),
        ("", True, "unrecognised"),
    ],
)
def test_noise_over_an_allow_prompt_is_dropped(final: str, overloaded: bool, reason: str) -> None:
    gate = BargeInGate()
    gate.on_event(start(), ALLOW)
    gate.on_event(end(), ALLOW)
    if overloaded:
        o = RecognitionOverloaded("u1", "busy")
        assert gate.on_event(o, ALLOW) == [Forward(o)]  # errors are not held
    out = gate.on_event(text("u1", final, True), ALLOW)
    assert [type(a) for a in out] == [Ignore]
    assert isinstance(out[0], Ignore) and out[0].reason == reason


def test_words_in_a_partial_release_the_held_events_then_stop_the_prompt() -> None:
    gate = BargeInGate()
    s, p1, p2 = start(), text("u1", "Uh", False), text("u1", "Uh, wait", False)
    gate.on_event(s, ALLOW)
    assert gate.on_event(p1, ALLOW) == []
    # Released in order with their own times; the runtime hears the start before the
    # prompt's cancellation (so it fires the dialog's barge_in event).
    assert gate.on_event(p2, ALLOW) == [Forward(s), Forward(p2), StopPrompt("u1", "words", 0)]
    assert not gate.holding
    e, f = end(), text("u1", "Uh, wait, agent.", True)
    assert gate.on_event(e, ALLOW) == [Forward(e)]
    assert gate.on_event(f, ALLOW) == [Forward(f)]
    assert not gate.tracking


def test_words_in_the_final_release_the_whole_utterance() -> None:
    gate = BargeInGate()
    s, e, f = start(), end(), text("u1", "No, stop.", True)
    gate.on_event(s, ALLOW)
    gate.on_event(e, ALLOW)
    assert gate.on_event(f, ALLOW) == [
        Forward(s),
        Forward(e),
        Forward(f),
        StopPrompt("u1", "words", 0),
    ]
    assert not gate.tracking


def test_a_yes_over_a_yes_no_question_is_an_answer() -> None:
    gate = BargeInGate()
    gate.on_event(start(), ALLOW)
    gate.on_event(end(), ALLOW)
    out = gate.on_event(text("u1", "Yeah.", True), ALLOW, yes_no=True)
    assert out[-1] == StopPrompt("u1", "words", 0)
    gate.on_event(start("u2"), ALLOW)
    gate.on_event(end("u2"), ALLOW)
    out = gate.on_event(text("u2", "Yeah.", True), ALLOW)
    assert [type(a) for a in out] == [Ignore]


def voiced(from_ms: int, to_ms: int, step: int = 20) -> list[tuple[int, bool]]:
    return [(t, True) for t in range(from_ms, to_ms, step)]


def unvoiced(from_ms: int, to_ms: int, step: int = 20) -> list[tuple[int, bool]]:
    return [(t, False) for t in range(from_ms, to_ms, step)]


def test_speaking_longer_than_backchannels_last_is_a_barge_in() -> None:
    gate = BargeInGate(BargeInSettings(confirm_voiced_ms=1000, probe_every_ms=0))
    # Voiced frames before the start is declared count (the start is an estimate backwards).
    assert gate.on_audio(unvoiced(0, 900) + voiced(900, 1100)) == []
    s = start(at=900)
    assert gate.on_event(s, ALLOW) == []
    assert gate.on_audio(voiced(1100, 1500)) == []  # 600 ms
    assert gate.on_audio(unvoiced(1500, 2500)) == []  # pauses do not count
    assert gate.on_audio(voiced(2500, 2880)) == []  # 980 ms
    assert gate.on_audio(voiced(2880, 2900)) == [Forward(s), StopPrompt("u1", "voiced", 1000)]
    assert gate.on_audio(voiced(2900, 4000)) == []


def test_an_ended_utterance_counts_no_more_speech() -> None:
    gate = BargeInGate(BargeInSettings(confirm_voiced_ms=500, probe_every_ms=0))
    gate.on_event(start(at=0), ALLOW)
    gate.on_audio(voiced(0, 400))
    gate.on_event(end(at=400, started=0), ALLOW)
    assert gate.on_audio(voiced(400, 2000)) == []  # not its speech (the next one's start)


def test_held_speech_is_probed_for_words_one_decode_at_a_time() -> None:
    gate = BargeInGate(BargeInSettings(probe_every_ms=300))
    s = start(at=1000)
    gate.on_event(s, ALLOW)
    assert gate.on_audio(voiced(1000, 1280)) == []  # 280 ms
    assert gate.on_audio(voiced(1280, 1300)) == [Probe("u1", 1000, 1300)]
    assert gate.on_audio(voiced(1300, 1700)) == []  # one at a time
    # A backchannel so far: nothing; the next probe once 300 ms more were spoken.
    assert gate.on_probe("u1", "Uh-huh.") == []
    assert gate.on_audio(voiced(1700, 1720)) == [Probe("u1", 1000, 1720)]
    assert gate.on_probe("u1", None) == []  # cancelled or failed: no answer
    assert gate.on_audio(unvoiced(1720, 2000)) == []  # pauses are not probed
    assert gate.on_audio(voiced(2000, 2300)) == [Probe("u1", 1000, 2300)]
    # Words: the held events go out (never the probe's text), then the prompt stops.
    assert gate.on_probe("u1", "Wait, I") == [Forward(s), StopPrompt("u1", "words", 1020)]
    assert not gate.holding
    assert gate.on_audio(voiced(2300, 3000)) == []
    assert gate.on_probe("u1", "Wait, I want") == []  # late: decided already


def test_probes_stop_when_the_utterance_ends() -> None:
    gate = BargeInGate(BargeInSettings(probe_every_ms=300))
    gate.on_event(start(at=0), ALLOW)
    assert [type(a) for a in gate.on_audio(voiced(0, 300))] == [Probe]
    gate.on_event(end(at=300, started=0), ALLOW)
    assert gate.on_probe("u1", "Mm") == []
    assert gate.on_audio(voiced(300, 1000)) == []
    assert gate.undecided("u1")  # the final decides
    assert [type(a) for a in gate.on_event(text("u1", "Mm-hmm.", True), ALLOW)] == [Ignore]
    assert not gate.undecided("u1")


def test_the_prompt_ending_releases_speech_that_goes_on() -> None:
    gate = BargeInGate()
    s, p = start(), text("u1", "Mm", False)
    gate.on_event(s, ALLOW)
    gate.on_event(p, ALLOW)
    assert gate.on_prompt_ended() == [Forward(s), Forward(p)]  # no StopPrompt: nothing plays
    e = end()
    assert gate.on_event(e, None) == [Forward(e)]


def test_the_prompt_ending_still_drops_a_backchannel_said_over_it() -> None:
    gate = BargeInGate()
    gate.on_event(start(), ALLOW)
    gate.on_event(end(), ALLOW)
    assert gate.on_prompt_ended() == []  # ended over the prompt: its final decides
    assert [type(a) for a in gate.on_event(text("u1", "Mm-hmm.", True), None)] == [Ignore]


def test_events_stay_in_utterance_order() -> None:
    gate = BargeInGate()
    s1, e1 = start("u1", 1000), end("u1", 1400, 1000)
    s2, p2 = start("u2", 1700), text("u2", "stop", False, (1700, 2100))
    gate.on_event(s1, ALLOW)
    gate.on_event(e1, ALLOW)  # u1's final is still being decoded
    gate.on_event(s2, ALLOW)
    # u2 is words: the prompt stops now, but u2 waits for u1 to be decided.
    assert gate.on_event(p2, ALLOW) == [StopPrompt("u2", "words", 0)]
    f1 = text("u1", "Uh-huh.", True, (1000, 1400))
    assert gate.on_event(f1, ALLOW) == [
        Ignore("u1", "backchannel", 0, 1000, 1400),
        Forward(s2),
        Forward(p2),
    ]
    e2 = end("u2", 2300, 1700)
    assert gate.on_event(e2, None) == [Forward(e2)]


def test_a_held_utterance_keeps_at_most_four_events() -> None:
    gate = BargeInGate()
    gate.on_event(start(), ALLOW)
    for n in range(50):
        gate.on_event(text("u1", "mm " * (n + 1), False), ALLOW)
    assert gate.held_events() == 2  # the start and the newest partial
    gate.on_event(end(), ALLOW)
    assert gate.held_events() == 3


def test_the_number_of_tracked_utterances_is_bounded() -> None:
    gate = BargeInGate(BargeInSettings(max_held=3))
    out: list[object] = []
    for n in range(1, 6):
        out += gate.on_event(start(f"u{n}", n * 1000), ALLOW)
        out += gate.on_event(end(f"u{n}", n * 1000 + 300, n * 1000), ALLOW)
    assert len(gate._tracked) <= 3
    assert gate.held_events() <= 3 * 4
    # The oldest were let through, in order.
    assert [getattr(e, "utterance_id", "") for e in forwarded(out)][:2] == ["u1", "u1"]


def test_voice_meter_frames_follow_the_call_clock() -> None:
    meter = VoiceMeter(3, 20)
    assert meter.push(bytes(640 * 3 + 100), 1000) == [(1000, False), (1020, False), (1040, False)]
    # Contiguous: the pending 100 bytes join the next chunk's frames.
    frames = meter.push(bytes(640), 1063)
    assert frames == [(1060, False)]
    # A gap restarts the grid at the chunk's own time.
    assert meter.push(bytes(640), 5000) == [(5000, False)]


def test_audio_tail_keeps_the_latest_audio() -> None:
    tail = AudioTail(max_ms=100)
    for n in range(10):  # 20 ms chunks whose samples are their number
        tail.push(np.full(320, n, dtype="<i2").tobytes(), n * 20)
    assert np.array_equal(tail.slice(0, 1000) * 32768, np.repeat(np.arange(5, 10), 320))
    assert np.array_equal(tail.slice(150, 170) * 32768, np.repeat([7, 8], 160))
    tail.reset()
    assert len(tail.slice(0, 1000)) == 0


# -- a SpeechCall ----------------------------------------------------------------------------

QUIET = SynthesisConfig(noise_scale=0, noise_w_scale=0)
CHUNK = 640


class ScriptedRecognizer:
    """Hears what the test says it hears."""

    name = "scripted"

    def __init__(self) -> None:
        self.text = ""

    def warm_up(self) -> None:
        pass

    def transcribe(
        self, audio: object, abort: object = None, options: DecodeOptions | None = None
    ) -> Transcription:
        return Transcription(self.text, 0.9, 0.001)


class ToneSynth:
    """A synthesizer whose prompt is ``text`` seconds of a tone, in 20 ms frames."""

    frame_ms = 20

    def synthesize(
        self, text: str, voice: str, rate: int, request_id: str
    ) -> AsyncGenerator[bytes, None]:
        return self._frames(float(text), rate)

    async def _frames(self, seconds: float, rate: int) -> AsyncGenerator[bytes, None]:
        n = rate // 50
        frame = (np.sin(np.arange(n) * 0.3) * 8000).astype("<i2").tobytes()
        for _ in range(int(seconds * 50)):
            yield frame

    def cancel(self, request_id: str) -> bool:
        return True


@pytest.fixture(scope="module")
def recognizer() -> ScriptedRecognizer:
    return ScriptedRecognizer()


@pytest.fixture(scope="module")
def pool(recognizer: ScriptedRecognizer) -> Iterator[RecognitionPool]:
    pool = RecognitionPool(lambda: recognizer, workers=1)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def speech(voice: PiperVoice) -> dict[str, Pcm]:
    return {
        "short": phone_speech(voice, "Uh-huh.", QUIET),
        "long": phone_speech(
            voice, "I would like to know the opening hours on Saturday morning, please.", QUIET
        ),
    }


class Harness:
    def __init__(self, call: SpeechCall, metrics: SpeechMetrics) -> None:
        self.call = call
        self.metrics = metrics
        self.sub = call.subscribe(partials=False)
        self.updates: list[speech_pb2.SpeechUpdate] = []
        self.clock = 0

    def drain(self) -> list[tuple[str, int, str]]:
        while not self.sub.queue.empty():
            update = self.sub.queue.get_nowait()
            if update is not None:
                self.updates.append(update)
        out = []
        for u in self.updates:
            which = str(u.WhichOneof("msg"))
            sub = getattr(u, which)
            ident = str(getattr(sub, "utterance_id", getattr(sub, "request_id", "")))
            out.append((which, int(getattr(sub, "kind", getattr(sub, "code", 0))), ident))
        return out

    async def say(self, pcm: Pcm, pause_ms: int = 0) -> None:
        """Push ``pcm`` then ``pause_ms`` of silence, twice real time."""
        data = np.concatenate([pcm, silence(pause_ms)]).tobytes()
        for off in range(0, len(data), CHUNK):
            self.call.push_audio(data[off : off + CHUNK], self.clock)
            self.clock += 20
            await asyncio.sleep(0.01)

    def counter(self, name: str, reason: str) -> float:
        value = self.metrics_registry.get_sample_value(name, {"reason": reason})
        return value or 0.0

    metrics_registry: CollectorRegistry


async def open_call(pool: RecognitionPool) -> Harness:
    registry = CollectorRegistry()
    metrics = SpeechMetrics(registry)
    call = SpeechCall(
        "call-barge",
        pool,
        ToneSynth(),  # type: ignore[arg-type]
        8000,
        metrics,
        vad=VadSettings(),
        streaming=StreamingSettings(),
        voice_default="v",
        lead_ms=100,
        buffered_updates=100,
    )
    h = Harness(call, metrics)
    h.metrics_registry = registry
    return h


VAD_START = ("vad", speech_pb2.VadEvent.KIND_SPEECH_START, "u1")
VAD_END = ("vad", speech_pb2.VadEvent.KIND_SPEECH_END, "u1")
FINAL = ("transcript", speech_pb2.TranscriptEvent.KIND_FINAL, "u1")
STARTED = ("playback", speech_pb2.PlaybackEvent.KIND_STARTED, "p1")
FINISHED = ("playback", speech_pb2.PlaybackEvent.KIND_FINISHED, "p1")
CANCELLED = ("playback", speech_pb2.PlaybackEvent.KIND_CANCELLED, "p1")


async def playing(h: Harness, mode: BargeInMode, seconds: float = 20) -> None:
    h.call.player.speak("p1", str(seconds), "", mode)
    for _ in range(100):
        if STARTED in h.drain():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the prompt did not start")


async def settled(
    h: Harness, want: tuple[str, int, str] | None = None
) -> list[tuple[str, int, str]]:
    for _ in range(200):
        kinds = h.drain()
        if want is not None and want in kinds:
            return kinds
        await asyncio.sleep(0.01)
    return h.drain()


async def test_a_backchannel_over_an_allow_prompt_leaves_it_playing(
    pool: RecognitionPool, recognizer: ScriptedRecognizer, speech: dict[str, Pcm]
) -> None:
    recognizer.text = "Uh-huh."
    h = await open_call(pool)
    await h.say(silence(300))
    await playing(h, ALLOW)
    await h.say(speech["short"], pause_ms=800)
    await settled(h)
    assert h.drain() == [STARTED], "the runtime heard nothing and the prompt plays on"
    assert h.call.player.barge_in_mode() == ALLOW
    assert h.counter("voicetyped_speech_barge_in_ignored_total", "backchannel") == 1
    await h.call.close()


async def test_words_over_an_allow_prompt_stop_it_and_reach_the_runtime_in_order(
    pool: RecognitionPool, recognizer: ScriptedRecognizer, speech: dict[str, Pcm]
) -> None:
    recognizer.text = "Wait, stop."
    h = await open_call(pool)
    await h.say(silence(300))
    await playing(h, ALLOW)
    await h.say(speech["short"], pause_ms=800)
    kinds = await settled(h, FINAL)
    # The start goes out before the cancellation (the runtime then fires barge_in), no
    # partial goes to a runtime that did not ask for them, the final comes last.
    assert kinds == [STARTED, VAD_START, CANCELLED, VAD_END, FINAL] or kinds == [
        STARTED,
        VAD_START,
        VAD_END,
        FINAL,
        CANCELLED,
    ], kinds
    assert kinds.index(VAD_START) < kinds.index(CANCELLED)
    assert h.call.player.barge_in_mode() is None
    assert h.counter("voicetyped_speech_barge_ins_total", "words") == 1
    start = next(u for u in h.updates if u.HasField("vad"))
    assert 300 <= start.vad.at_ms < 300 + len(speech["short"]) // 16, "its original time"
    await h.call.close()


async def test_an_immediate_prompt_stops_at_the_first_sound(
    pool: RecognitionPool, recognizer: ScriptedRecognizer, speech: dict[str, Pcm]
) -> None:
    recognizer.text = "Uh-huh."
    h = await open_call(pool)
    await h.say(silence(300))
    await playing(h, IMMEDIATE)
    await h.say(speech["short"], pause_ms=800)
    kinds = await settled(h, FINAL)
    assert kinds == [STARTED, VAD_START, CANCELLED, VAD_END, FINAL]
    assert h.counter("voicetyped_speech_barge_ins_total", "immediate") == 1
    await h.call.close()


async def test_a_deny_prompt_plays_on_and_the_runtime_hears_everything(
    pool: RecognitionPool, recognizer: ScriptedRecognizer, speech: dict[str, Pcm]
) -> None:
    recognizer.text = "Wait, stop."
    h = await open_call(pool)
    await h.say(silence(300))
    await playing(h, DENY)
    await h.say(speech["short"], pause_ms=800)
    kinds = await settled(h, FINAL)
    assert kinds == [STARTED, VAD_START, VAD_END, FINAL]  # the runtime ignores it (its rule)
    assert h.call.player.barge_in_mode() == DENY
    await h.call.close()


async def test_speaking_on_over_an_allow_prompt_stops_it(
    pool: RecognitionPool, recognizer: ScriptedRecognizer, speech: dict[str, Pcm]
) -> None:
    recognizer.text = "Mm-hmm."  # what a poor recogniser might make of anything
    h = await open_call(pool)
    await h.say(silence(300))
    await playing(h, ALLOW)
    await h.say(speech["long"], pause_ms=800)
    kinds = await settled(h, FINAL)
    assert kinds[:3] == [STARTED, VAD_START, CANCELLED]
    assert h.counter("voicetyped_speech_barge_ins_total", "voiced") == 1
    await h.call.close()


async def test_a_probe_finds_the_words_before_the_utterance_ends(
    pool: RecognitionPool, recognizer: ScriptedRecognizer, speech: dict[str, Pcm]
) -> None:
    recognizer.text = "I would like"
    h = await open_call(pool)
    await h.say(silence(300))
    await playing(h, ALLOW)
    await h.say(speech["long"][: 16000 * 8 // 10])  # 0.8 s in
    await asyncio.sleep(0.1)
    assert h.drain() == [STARTED, VAD_START, CANCELLED]
    await h.say(speech["long"][16000 * 8 // 10 :], pause_ms=800)
    assert await settled(h, FINAL) == [STARTED, VAD_START, CANCELLED, VAD_END, FINAL]
    assert h.call._probe is None
    await h.call.close()


async def test_speech_going_on_when_the_prompt_is_cancelled_is_an_ordinary_turn(
    pool: RecognitionPool, recognizer: ScriptedRecognizer, speech: dict[str, Pcm]
) -> None:
    recognizer.text = "Mm-hmm."
    h = await open_call(pool)
    await h.say(silence(300))
    await playing(h, ALLOW)
    long = speech["long"]
    await h.say(long[: 16000 * 6 // 10])  # 0.6 s in: held
    assert h.drain() == [STARTED]
    h.call.player.cancel("p1")  # the runtime's cancel (a timer, a key press)
    assert h.drain() == [STARTED, CANCELLED, VAD_START]
    await h.say(long[16000 * 6 // 10 :], pause_ms=800)
    kinds = await settled(h, FINAL)
    assert kinds == [STARTED, CANCELLED, VAD_START, VAD_END, FINAL]
    await h.call.close()


async def test_a_yes_no_state_takes_a_yes_over_its_question(
    pool: RecognitionPool, recognizer: ScriptedRecognizer, speech: dict[str, Pcm]
) -> None:
    recognizer.text = "Yeah."
    h = await open_call(pool)
    context = RecognitionContext(state="confirm", expect=Expect.YES_NO)
    h.call.expect(context_to_proto(context))
    await h.say(silence(300))
    await playing(h, ALLOW)
    await h.say(speech["short"], pause_ms=800)
    kinds = await settled(h, FINAL)
    assert CANCELLED in kinds and FINAL in kinds
    await h.call.close()
