"""In-band DTMF detection on real signals: keypad tones, G.711, speech, music and noise."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from numpy.typing import NDArray
from voicetyped_media.dtmf.inband import (
    DTMF_FREQUENCIES,
    InbandDetector,
    InbandSettings,
    Tone,
    tone,
)
from voicetyped_testkit.speech import resample, to_pcm, ulaw_decode, ulaw_encode

if TYPE_CHECKING:
    from piper import PiperVoice

Pcm = NDArray[np.int16]
DIGITS = "123A456B789C*0#D"
RATES = [8000, 16000]


def silence(ms: int, rate: int) -> Pcm:
    return np.zeros(ms * rate // 1000, dtype=np.int16)


def ulaw(pcm: Pcm) -> Pcm:
    """A G.711 mu-law round trip."""
    return ulaw_decode(ulaw_encode(pcm))


def clip(samples: NDArray[np.floating[Any]]) -> Pcm:
    return np.clip(np.round(samples), -32768, 32767).astype(np.int16)


def sines(freqs: list[float], levels_dbfs: list[float], ms: int, rate: int) -> NDArray[np.float64]:
    t = np.arange(ms * rate // 1000) / rate
    out = np.zeros_like(t)
    for f, db in zip(freqs, levels_dbfs, strict=True):
        out += 32767 * 10 ** (db / 20) * np.sin(2 * np.pi * f * t)
    return out


def noise(ms: int, rate: int, level_dbfs: float, seed: int = 1) -> NDArray[np.float64]:
    """White noise with the power of a sine at ``level_dbfs``."""
    white = np.random.default_rng(seed).standard_normal(ms * rate // 1000)
    return white * (32767 * 10 ** (level_dbfs / 20) / 2**0.5)


def detect(pcm: Pcm, rate: int, chunk_bytes: int | None = None) -> list[Tone]:
    """All tones in ``pcm``, pushed in chunks of ``chunk_bytes`` (20 ms by default)."""
    detector = InbandDetector(rate)
    data = pcm.tobytes()
    step = chunk_bytes or rate // 50 * 2
    tones: list[Tone] = []
    for offset in range(0, len(data), step):
        tones += detector.push(data[offset : offset + step], round(offset * 500 / rate))
    return tones + detector.flush()


def dialled(
    digits: str,
    rate: int,
    duration_ms: int,
    gap_ms: int = 50,
    make: Callable[[str, int, int], Pcm] | None = None,
) -> tuple[Pcm, list[Tone]]:
    """``digits`` dialled after 100 ms of silence, and the tones that went in."""
    make = make or (lambda d, ms, r: tone(d, ms, r))
    parts, truth, t = [silence(100, rate)], [], 100
    for d in digits:
        parts += [make(d, duration_ms, rate), silence(gap_ms, rate)]
        truth.append(Tone(d, t, duration_ms))
        t += duration_ms + gap_ms
    parts.append(silence(200, rate))
    return np.concatenate(parts), truth


def assert_matches(found: list[Tone], truth: list[Tone], tolerance_ms: int = 20) -> None:
    assert [t.digit for t in found] == [t.digit for t in truth], found
    for f, t in zip(found, truth, strict=True):
        assert abs(f.start_ms - t.start_ms) <= tolerance_ms, (f, t)
        assert abs(f.duration_ms - t.duration_ms) <= tolerance_ms, (f, t)


# -- keypad tones ---------------------------------------------------------------------------------

PATHS = {"16k": (16000, False), "8k": (8000, False), "8k-ulaw": (8000, True)}


@pytest.mark.parametrize("duration_ms", [50, 100, 200])
@pytest.mark.parametrize("path", PATHS)
def test_all_digits_with_their_times(path: str, duration_ms: int) -> None:
    rate, coded = PATHS[path]
    pcm, truth = dialled(DIGITS, rate, duration_ms)
    assert_matches(detect(ulaw(pcm) if coded else pcm, rate), truth)


@pytest.mark.parametrize("rate", RATES)
def test_chunk_size_does_not_matter(rate: int) -> None:
    pcm, truth = dialled(DIGITS, rate, 60)
    by_20ms = detect(pcm, rate, 640 if rate == 16000 else 320)
    assert_matches(by_20ms, truth)
    assert detect(pcm, rate, 160) == by_20ms
    assert detect(pcm, rate, len(pcm) * 2) == by_20ms
    # Odd byte counts split samples; chunk times are then rounded to the millisecond.
    odd = detect(pcm, rate, 333)
    assert [t.digit for t in odd] == [t.digit for t in by_20ms]
    for a, b in zip(odd, by_20ms, strict=True):
        assert abs(a.start_ms - b.start_ms) <= 1
        assert a.duration_ms == b.duration_ms


@pytest.mark.parametrize("rate", RATES)
def test_a_20ms_tone_is_rejected_and_a_45ms_tone_accepted(rate: int) -> None:
    for offset_ms in range(13):  # alignments with the detector's 6.5 ms steps
        lead = silence(100 + offset_ms, rate)
        for digit in "1D":
            short = np.concatenate([lead, tone(digit, 20, rate), silence(200, rate)])
            assert detect(short, rate) == []
            long = np.concatenate([lead, tone(digit, 45, rate), silence(200, rate)])
            assert [t.digit for t in detect(long, rate)] == [digit]


@pytest.mark.parametrize("rate", RATES)
def test_key_presses(rate: int) -> None:
    # One long press with a 10 ms dropout is one digit; two presses 50 ms apart are two.
    five = tone("5", 300, rate)
    dropout = np.concatenate(
        [silence(100, rate), five, silence(10, rate), five, silence(200, rate)]
    )
    [press] = detect(dropout, rate)
    assert press.digit == "5"
    assert abs(press.start_ms - 100) <= 10
    assert abs(press.duration_ms - 610) <= 10
    twice = np.concatenate([silence(100, rate), five, silence(50, rate), five, silence(200, rate)])
    assert [t.digit for t in detect(twice, rate)] == ["5", "5"]
    # A tone still sounding when the stream ends is reported by flush(), not before.
    detector = InbandDetector(rate)
    assert detector.push(np.concatenate([silence(100, rate), five]).tobytes(), 0) == []
    [last] = detector.flush()
    assert last.digit == "5"
    assert detector.flush() == []


TWISTS = [  # (low-group level, high-group level, detected)
    (-10.0, -16.0, True),  # high group 6 dB weaker: normal twist within the 8 dB limit
    (-10.0, -22.0, False),  # 12 dB weaker
    (-16.0, -10.0, False),  # high group 6 dB stronger: reverse twist beyond the 4 dB limit
]


@pytest.mark.parametrize(("low_dbfs", "high_dbfs", "detected"), TWISTS)
@pytest.mark.parametrize("rate", RATES)
def test_twist(rate: int, low_dbfs: float, high_dbfs: float, detected: bool) -> None:
    def twisted(digit: str, ms: int, r: int) -> Pcm:
        return clip(sines(list(DTMF_FREQUENCIES[digit]), [low_dbfs, high_dbfs], ms, r))

    pcm, truth = dialled(DIGITS, rate, 60, make=twisted)
    assert_matches(detect(pcm, rate), truth if detected else [])


@pytest.mark.parametrize(("deviation", "detected"), [(-0.015, True), (0.015, True), (0.035, False)])
@pytest.mark.parametrize("rate", RATES)
def test_frequency_tolerance(rate: int, deviation: float, detected: bool) -> None:
    # ITU-T Q.24: accept tones up to 1.5 % off their nominal frequencies, reject 3.5 % off.
    def detuned(digit: str, ms: int, r: int) -> Pcm:
        freqs = [f * (1 + deviation) for f in DTMF_FREQUENCIES[digit]]
        return clip(sines(freqs, [-10.0, -10.0], ms, r))

    pcm, truth = dialled(DIGITS, rate, 60, make=detuned)
    assert_matches(detect(pcm, rate), truth if detected else [])


@pytest.mark.parametrize(("level_dbfs", "detected"), [(-25.0, True), (-50.0, False)])
@pytest.mark.parametrize("path", PATHS)
def test_level_in_noise(path: str, level_dbfs: float, detected: bool) -> None:
    rate, coded = PATHS[path]
    pcm, truth = dialled(DIGITS, rate, 60, make=lambda d, ms, r: tone(d, ms, r, level_dbfs))
    noisy = clip(pcm + noise(len(pcm) * 1000 // rate, rate, -45.0))
    assert_matches(detect(ulaw(noisy) if coded else noisy, rate), truth if detected else [])


def test_settings_and_arguments() -> None:
    with pytest.raises(ValueError, match="sample rate"):
        InbandDetector(44100)
    with pytest.raises(ValueError, match="DTMF digit"):
        tone("E", 100, 8000)
    assert len(tone("1", 100, 8000)) == 800
    assert len(tone("1", 100, 16000)) == 1600
    assert InbandSettings().min_tone_ms == 40.0
    # Stricter settings: a 45 ms tone is no longer enough.
    detector = InbandDetector(8000, InbandSettings(min_tone_ms=60.0))
    pcm = np.concatenate([silence(100, 8000), tone("7", 45, 8000), silence(200, 8000)])
    assert detector.push(pcm.tobytes(), 0) + detector.flush() == []


# -- what must not be a digit ---------------------------------------------------------------------

SENTENCES = [
    "I would like to check the status of my order.",
    "Please transfer me to the billing department.",
    "My account number is four five six seven eight nine.",
    "Can you hear me now? Hello? Hello?",
    "Oh yes, that is wonderful, thank you so much!",
    "Um, well, I'm not really sure about that.",
    "Could you repeat the last part, please?",
    "The weather today is sunny with a high of seventy two degrees.",
    "Press one for sales, press two for support.",
    "Mmmmm, hmmmm, aaaaah, oooooh, eeeeee.",
    "I want to cancel my subscription immediately.",
    "She sells sea shells by the sea shore.",
    "What time does the store open on Sunday morning?",
    "Yes. No. Maybe. Absolutely. Never.",
    "Singing la la la la la, do re mi fa so la ti do.",
    "The quick brown fox jumps over the lazy dog.",
    "Hold on a second, let me get a pen.",
    "I have been waiting on hold for forty five minutes!",
    "Zero, one, two, three, four, five, six, seven, eight, nine.",
    "Heeeeey, whaaaat? Nooooo way!",
    "Representative. Agent. Operator. A human, please.",
    "Goodbye, and have a great day.",
]


@pytest.fixture(scope="module")
def voice() -> PiperVoice:
    from voicetyped_speech.models.prepare import locate_bundled
    from voicetyped_speech.models.verify import load_voice

    bundled = locate_bundled()
    return load_voice(bundled.voice_model, bundled.voice_config)


@pytest.fixture(scope="module")
def speech(voice: PiperVoice) -> list[NDArray[np.float32]]:
    """Every sentence at 16 kHz, at one of three speaking rates."""
    from piper import SynthesisConfig
    from voicetyped_speech.models.verify import synthesize_16k

    rates = [0.8, 1.0, 1.3]
    return [
        synthesize_16k(voice, text, SynthesisConfig(length_scale=rates[i % 3]))
        for i, text in enumerate(SENTENCES)
    ]


@pytest.mark.parametrize("path", ["16k", "16k-quiet", "8k-ulaw"])
def test_no_digits_in_speech(speech: list[NDArray[np.float32]], path: str) -> None:
    for audio in speech:
        if path == "8k-ulaw":
            pcm, rate = ulaw(to_pcm(resample(audio, 16000, 8000))), 8000
        else:
            pcm, rate = to_pcm(audio * (0.1 if path == "16k-quiet" else 1.0)), 16000
        assert detect(pcm, rate) == []


# Equal-tempered notes, including the two that are nearly DTMF frequencies (F5 = 698.5 Hz,
# F#6 = 1480 Hz, the pair of "3").
NOTES = {name: 880 * 2 ** (k / 12) for k, name in [(-9, "C5"), (-5, "E5"), (-4, "F5"), (-2, "G5")]}
NOTES |= {name: 880 * 2 ** (k / 12) for k, name in [(0, "A5"), (3, "C6"), (9, "F#6"), (10, "G6")]}
CHORDS = [
    ["C5", "E5", "G5"],
    ["F5", "A5", "C6"],
    ["F5", "A5", "F#6"],
    ["F5", "F#6", "G6"],
    ["C5", "F5", "F#6", "G6"],
    ["E5", "G5", "C6", "G6"],
]


@pytest.mark.parametrize("rate", RATES)
def test_no_digits_in_chords_or_sweeps(rate: int) -> None:
    for chord in CHORDS:
        for octave in [0.5, 1.0, 2.0]:
            freqs = [NOTES[n] * octave for n in chord]
            pcm = clip(sines(freqs, [-12.0] * len(freqs), 500, rate))
            assert detect(pcm, rate) == [], chord
    t = np.arange(5 * rate) / rate
    for f0, f1 in [(300.0, 3400.0), (3400.0, 300.0)]:
        chirp = 0.3 * 32767 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / 10))
        assert detect(clip(chirp), rate) == []


@pytest.mark.parametrize("harmonic_db", [-6.0, -9.0])
def test_harmonics_reject_an_instrument_on_a_dtmf_pair(harmonic_db: float) -> None:
    # Two notes that are the pair of "3" within 0.2 %, each with a second harmonic: only the
    # second-harmonic check tells them from a keypad.
    rate = 8000
    notes = [NOTES["F5"], NOTES["F#6"]]
    freqs = [*notes, *(2 * f for f in notes)]
    pcm = clip(sines(freqs, [-12.0, -12.0, -12.0 + harmonic_db, -12.0 + harmonic_db], 500, rate))
    assert detect(pcm, rate) == []
    permissive = InbandDetector(rate, InbandSettings(harmonic_margin_db=-100.0))
    assert [t.digit for t in permissive.push(pcm.tobytes(), 0) + permissive.flush()] == ["3"]


def pink(ms: int, rate: int, level_dbfs: float, seed: int = 2) -> NDArray[np.float64]:
    white = np.fft.rfft(noise(ms, rate, 0.0, seed))
    f = np.fft.rfftfreq(ms * rate // 1000, 1 / rate)
    shaped = np.fft.irfft(white / np.sqrt(np.maximum(f, 20.0)), n=ms * rate // 1000)
    rms = 32767 * 10 ** (level_dbfs / 20) / np.sqrt(2)
    return np.asarray(shaped * rms / np.sqrt(np.mean(shaped**2)), dtype=np.float64)


@pytest.mark.parametrize("kind", ["white", "pink"])
@pytest.mark.parametrize("path", PATHS)
def test_no_digits_in_a_minute_of_noise(path: str, kind: str) -> None:
    rate, coded = PATHS[path]
    make = noise if kind == "white" else pink
    pcm = clip(make(60_000, rate, -15.0))
    assert detect(ulaw(pcm) if coded else pcm, rate) == []
