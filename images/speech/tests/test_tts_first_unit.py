"""The short first unit of a new reply (``tts/first_unit.py``): where it is cut, that the
synthesizer uses it only for live uncached text, and that cancel and the audio still hold."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import numpy as np
import pytest
from voicetyped_speech.models.verify import transcribe
from voicetyped_speech.tts import DEFAULT_VOICE, FirstUnitPolicy, Synthesizer, VoiceRegistry
from voicetyped_speech.tts.first_unit import OFF, cut_phonemes, first_cut, is_numeric
from voicetyped_speech.tts.synth import trim_trailing_silence
from voicetyped_testkit.speech import words

if TYPE_CHECKING:
    from pywhispercpp.model import Model

POLICY = FirstUnitPolicy(max_words=6, min_words=2, min_rest_words=3)
REPLY = "Your order shipped on Monday and it should arrive by Friday at noon."


def head(text: str, policy: FirstUnitPolicy = POLICY) -> str | None:
    cut = first_cut(text, policy)
    if cut is not None:
        assert text[: len(cut.head)] == cut.head
        assert text[cut.offset :] == cut.rest
        assert not cut.rest.startswith(" ")
    return None if cut is None else cut.head


# -- where the cut goes --------------------------------------------------------------------------


def test_punctuation_then_conjunction_then_phrase_start() -> None:
    assert head("Unfortunately that flight is full, but the next one has seats.") == (
        "Unfortunately that flight is full,"
    )
    assert head("I checked again and the parcel is still at the depot.") == "I checked again"
    assert head("The technician will arrive at the address you gave us.") == (
        "The technician will arrive"
    )
    # Punctuation wins over an earlier conjunction.
    assert head("Yes and I did, but nothing came through yet today.") == "Yes and I did,"


def test_short_first_sentences_and_sentences_without_a_cut_stay_whole() -> None:
    assert head("Thank you for calling.") is None  # already short
    assert head("Sure. Your order shipped yesterday and will arrive on Monday.") is None
    assert head("Absolutely everything seemed completely fine yesterday evening.") is None
    assert head(REPLY, OFF) is None
    assert head(REPLY, FirstUnitPolicy(max_words=1, min_words=2)) is None  # disabled


def test_never_inside_a_number_time_or_date() -> None:
    text = "Booked for March 3, 2026 at 10:30 am, and the fee is one hundred and five dollars."
    cut = first_cut(text, FirstUnitPolicy(max_words=16, min_words=1, min_rest_words=1))
    assert cut is not None
    assert cut.head == "Booked for March 3, 2026 at 10:30 am,"  # after the date and time
    for before, after in [
        ("March 3,", "2026"),
        ("at 10:30", "am"),
        ("hundred", "and five"),
        ("one", "hundred"),
    ]:
        assert not cut_allowed(text, before, after), (before, after)
    assert cut_allowed(text, "10:30 am,", "and the fee")  # the time ends at the comma
    assert cut_allowed(text, "Booked", "for March")  # before the date
    assert not cut_allowed(text, "Booked for", "March")  # not between "for" and its date
    assert head("Your balance is $42.50 and the payment is due on the 3rd of May.") == (
        "Your balance is"
    )
    assert head("Call back between nine and five on any weekday please.") == "Call back"


def cut_allowed(text: str, before: str, after: str) -> bool:
    """Whether some policy cuts ``text`` right between ``before`` and ``after``."""
    at = text.index(before + " " + after) + len(before)
    words_before = len(text[:at].split())
    policy = FirstUnitPolicy(max_words=words_before, min_words=words_before, min_rest_words=1)
    cut = first_cut(text, policy)
    return cut is not None and len(cut.head) == at


def test_min_words_each_side_and_no_mid_word_cuts() -> None:
    text = "Okay, the refund went through and it will show up within five days."
    assert head(text) == "Okay, the refund went through"  # "Okay," alone is below min_words
    one = FirstUnitPolicy(max_words=6, min_words=1, min_rest_words=3)
    assert head(text, one) == "Okay,"
    rest = "Your parcel is in the van and comes today."
    assert head(rest, FirstUnitPolicy(max_words=8)) == "Your parcel is in the van"
    assert head(rest, FirstUnitPolicy(max_words=4)) == "Your parcel is"
    # Fewer than min_rest_words left after the only candidate: no cut.
    assert head("Your parcel was delivered to the neighbours today.") == "Your parcel was delivered"
    assert head("Well your parcel was delivered yesterday to them.", POLICY) is None
    for text in [REPLY, "Your balance is forty-two dollars and seventeen cents, due Monday."]:
        cut = first_cut(text, FirstUnitPolicy(max_words=8))
        assert cut is not None
        assert cut.head.split() + cut.rest.split() == text.split()


def test_numeric_words() -> None:
    for token in ["42", "$42.50", "3rd", "10:30", "forty-two", "Twenty,", "March", "pm", "(5)"]:
        assert is_numeric(token), token
    for token in ["order", "and", "forty-winks", "", "—"]:
        assert not is_numeric(token), token


def test_policy_validation_and_settings() -> None:
    with pytest.raises(ValueError, match="max_words"):
        FirstUnitPolicy(max_words=-1)
    with pytest.raises(ValueError, match="min_words"):
        FirstUnitPolicy(min_words=0)
    assert OFF.settings()["first_max_words"] == 0
    assert POLICY.settings() != FirstUnitPolicy(max_words=8).settings()


# -- phonemes ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> VoiceRegistry:
    reg = VoiceRegistry()
    reg.get(DEFAULT_VOICE)
    return reg


def test_opening_is_cut_from_the_whole_sentences_phonemes(registry: VoiceRegistry) -> None:
    piper = registry.get(DEFAULT_VOICE).piper
    text = "Your order shipped on December 4th, and it should arrive by Friday. Thanks."
    sentences = piper.phonemize(text)
    cut = first_cut(text, POLICY)
    assert cut is not None
    parts = cut_phonemes(sentences, cut, piper.phonemize)
    assert parts is not None
    opening, rest = parts
    assert "".join(opening) + " " + "".join(rest[0]) == "".join(sentences[0])
    assert rest[1:] == sentences[1:]
    # Not aligned (the opening phonemized alone differs): both parts phonemized apart.
    calls: list[str] = []

    def other(t: str) -> list[list[str]]:
        calls.append(t)
        return [["x", "y"]] if t == cut.head else piper.phonemize(t)

    opening, rest = cut_phonemes(sentences, cut, other) or ([], [])
    assert opening == ["x", "y"]
    assert rest == piper.phonemize(cut.rest)
    assert calls == [cut.head, cut.rest]


# -- in the synthesizer --------------------------------------------------------------------------


@pytest.fixture
async def synth(registry: VoiceRegistry) -> AsyncIterator[Synthesizer]:
    s = Synthesizer(registry, workers=2, first_unit=POLICY)
    yield s
    await s.aclose(wait=True)


async def pcm_of(synth: Synthesizer, text: str, rid: str, rate: int = 16000) -> bytes:
    stream = synth.synthesize(text, DEFAULT_VOICE, rate, rid)
    async with contextlib.aclosing(stream):
        return b"".join([f async for f in stream])


async def test_first_unit_only_for_live_uncached_text(synth: Synthesizer) -> None:
    units_at_first: list[int] = []
    stream = synth.synthesize(REPLY, DEFAULT_VOICE, 8000, "live")
    async with contextlib.aclosing(stream):
        frames: list[bytes] = []
        async for frame in stream:
            if not frames:
                units_at_first.append(synth.stats.units)
            frames.append(frame)
    assert units_at_first == [1]
    assert synth.stats.first_cuts == 1
    assert synth.stats.units == 2  # the opening, then the rest of the sentence
    # Repeated: from the cache, the same audio, no synthesis.
    assert await pcm_of(synth, REPLY, "again", 8000) == b"".join(frames)
    assert (synth.stats.cache_hits, synth.stats.units, synth.stats.first_cuts) == (1, 2, 1)
    # Warm-up voices fixed prompts whole (no latency to win there).
    other = "Your parcel was handed to the courier and it will arrive on Monday."
    report = await synth.warm_up([other], DEFAULT_VOICE, 8000)
    assert report.synthesized == 1
    assert (synth.stats.units, synth.stats.first_cuts) == (3, 1)
    # So is the rest of a templated prompt after its cached opening.
    await synth.warm_up(["Thanks for waiting {{ name }}, your parcel..."], DEFAULT_VOICE, 8000)
    units = synth.stats.units
    rendered = "Thanks for waiting Anna, your parcel is on the van and comes today."
    assert first_cut(rendered.removeprefix("Thanks for waiting "), POLICY) is not None
    await pcm_of(synth, rendered, "p", 8000)
    assert synth.stats.prefix_hits == 1
    assert synth.stats.first_cuts == 1
    assert synth.stats.units == units + 1


async def test_the_cut_is_part_of_the_cache_key(
    synth: Synthesizer, registry: VoiceRegistry
) -> None:
    voice = registry.get(DEFAULT_VOICE)
    whole = Synthesizer(registry, first_unit=OFF)
    off = Synthesizer(registry, first_unit=FirstUnitPolicy(max_words=0, min_rest_words=5))
    try:
        key = whole.cache_key(REPLY, voice, 8000, None)
        assert key != synth.cache_key(REPLY, voice, 8000, None)
        assert key == off.cache_key(REPLY, voice, 8000, None)  # off is off, whatever the rest
    finally:
        await whole.aclose(wait=True)
        await off.aclose(wait=True)


async def test_cancel_during_the_opening_and_during_the_rest(synth: Synthesizer) -> None:
    text = REPLY + " " + REPLY.replace("Monday", "Tuesday")
    # During the opening: before any frame.
    stream = synth.synthesize(text, DEFAULT_VOICE, 8000, "c1")
    task = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0)
    assert synth.cancel("c1")
    with pytest.raises(StopAsyncIteration):
        await task
    # During the rest of the first sentence: after the opening's frames.
    stream = synth.synthesize(text, DEFAULT_VOICE, 8000, "c2")
    await stream.__anext__()
    assert synth.stats.first_cuts == 1
    assert synth.cancel("c2")
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    for _ in range(200):
        if not synth.busy_workers:
            break
        await asyncio.sleep(0.005)
    assert synth.busy_workers == 0
    assert synth.stats.cancelled == 2
    assert len(synth.cache) == 0
    assert synth.stats.units <= 2  # the unit running at the cancel, nothing after it


async def test_cut_reply_is_heard_whole(synth: Synthesizer, whisper_cpp: Model) -> None:
    text = "Your parcel was handed to the courier this morning, and it arrives by Friday."
    pcm = await pcm_of(synth, text, "heard")
    assert synth.stats.first_cuts == 1
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / np.float32(32768)
    heard = transcribe(whisper_cpp, audio)
    assert words(heard) == words(text), heard


def test_trim_trailing_silence_keeps_the_tail() -> None:
    rate = 22050
    sound = np.sin(np.linspace(0, 200, rate // 5)).astype(np.float32)  # 200 ms
    quiet = np.full(rate // 10, 1e-5, dtype=np.float32)  # 100 ms
    out = trim_trailing_silence(np.concatenate([quiet, sound, quiet]), rate, 40)
    assert out.flags.c_contiguous
    assert len(out) == pytest.approx(len(quiet) + len(sound) + rate * 40 // 1000, abs=2)
    assert np.array_equal(out[: len(quiet) + len(sound)], np.concatenate([quiet, sound]))
