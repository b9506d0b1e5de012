"""In-band DTMF: the keypad tones a caller's phone plays into the audio itself.

When a phone or trunk sends neither RFC 4733 events nor SIP INFO, the digits exist only as tones
in the audio, and this module finds them. No library fits (aiortp handles RFC 4733 events only;
the usual detectors, spandsp and Asterisk's dsp.c, are C inside larger programs), so this is a
small numpy version of the classic design.

The audio is analysed in 13 ms blocks (104 samples at 8 kHz) that start every 6.5 ms. A matrix
product gives each block's DFT at the eight DTMF frequencies (the vectorised equivalent of eight
Goertzel filters); the few blocks where both groups have a clear peak are then fitted, again by
one product with precomputed tables, with the two tones of that digit (least squares: exact for
a pure tone whatever its phases, where a plain DFT of a 13 ms block is off by up to 20 % because
the two tones leak into each other's bins) and probed at their second harmonics. A block holds
a digit only if all of these hold (limits in InbandSettings):

- level: the low-group (row) and the high-group (column) tone are each at least min_level_dbfs;
- twist: the high tone is at most max_normal_twist_db weaker and at most max_reverse_twist_db
  stronger than the low tone (ITU-T Q.24's limits);
- dominance: in each group the strongest frequency is peak_margin_db above the other three;
- relative energy: the two tones carry at least min_tone_fraction of the block's energy. A
  keypad tone is nothing else; speech and music spread their energy over many frequencies;
- second harmonic: neither tone has a component at twice its frequency within
  harmonic_margin_db of it. A voice or an instrument that happens to hit a DTMF pair has
  harmonics; an oscillator does not. (The harmonics are fitted together with the tones and their
  slow drift, since 2 x 697 Hz is only 58 Hz from 1336 Hz: a tone a little off frequency would
  otherwise leak into them.)

A digit starts when it holds on enough consecutive steps that every tone of min_tone_ms yields
them (4 steps with the defaults), and ends after min_pause_ms of steps without it. With the
defaults, clean tones of 25 ms or less are never reported and of 33 ms or more always are; a
dropout of up to 25 ms inside a key press is bridged, and a pause of 33 ms or more between two
presses of the same key gives two digits. A tone spans its blocks, which puts its start and
duration within a few milliseconds of the truth. It is reported once its end is certain, that is
min_pause_ms after it stops (or at flush()).

Cost: per chunk, whatever its length, a dozen numpy operations on tiny arrays, and a dozen more
when a chunk holds a tone; the tables are computed once per sample rate and shared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

LOW_HZ = (697, 770, 852, 941)
HIGH_HZ = (1209, 1336, 1477, 1633)
_KEYPAD = ("123A", "456B", "789C", "*0#D")
_DIGITS = "".join(_KEYPAD)  # digit index = 4 * row + column
DTMF_FREQUENCIES: dict[str, tuple[int, int]] = {
    digit: (low, high)
    for low, keys in zip(LOW_HZ, _KEYPAD, strict=True)
    for high, digit in zip(HIGH_HZ, keys, strict=True)
}
SAMPLE_RATES = (8000, 16000)

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class Tone:
    """A detected key press: ``digit`` in 0-9, *, #, A-D; times in ms of call time."""

    digit: str
    start_ms: int
    duration_ms: int


@dataclass(frozen=True)
class InbandSettings:
    """Limits of the detector; the defaults follow ITU-T Q.24 and the usual receivers."""

    block_ms: float = 13.0
    """Analysis block (the step is half of it). 104 samples at 8 kHz, the classic 102-106 range:
    the DFT bins are then about 77 Hz wide, so neighbouring DTMF frequencies (73-157 Hz apart)
    fall near or past the first null of each other's bin."""
    min_tone_ms: float = 40.0
    """Tones at least this long are always reported (Q.24 asks for 40 ms). The confirmation it
    implies (4 consecutive steps with the defaults) rejects tones of 25 ms or less (Q.24: a
    receiver must ignore tones shorter than about 23 ms)."""
    min_pause_ms: float = 40.0
    """A tone ends after this long without it (Q.24: a 40 ms pause separates two digits). With
    the defaults, dropouts of up to 25 ms are bridged."""
    min_level_dbfs: float = -32.0
    """Minimum level of each of the two tones (0 dBFS = a full-scale sine). -32 dBFS is about
    -29 dBm0 in G.711 (a full-scale sine is +3.17 dBm0): Q.24 receivers must accept down to about
    -25 dBm0 per frequency (-28 dBFS) and must not respond below about -55 dBm0."""
    max_normal_twist_db: float = 8.0
    """How much weaker the high tone may be than the low tone (Q.24: 8 dB)."""
    max_reverse_twist_db: float = 4.0
    """How much stronger the high tone may be than the low tone (Q.24: 4 dB)."""
    peak_margin_db: float = 8.0
    """In each group, the strongest frequency must exceed each of the other three by this."""
    min_tone_fraction: float = 0.75
    """Share of the block's energy the two tones must carry: a clean tone gives 0.95-1.0, one
    1.5 % off its frequency (Q.24's tolerance) 0.8 or more; blocks of (Piper) speech that pass
    the other checks reached 0.66 at most."""
    harmonic_margin_db: float = 10.0
    """A component at twice a tone's frequency must be this far below the tone."""


@dataclass(frozen=True)
class _Tables:
    dft: Floats
    """(block, 16): cos at the 8 frequencies, then sin, scaled to give amplitudes."""
    fits: Floats
    """(16, 12, block), per digit: 4 rows giving the least-squares amplitudes of its tones (cos
    and sin of the low tone, then of the high tone), 4 an orthonormal basis of them (for their
    energy), and 4 the amplitudes at twice their frequencies."""


def _basis(freqs: tuple[int, ...], sample_rate: int, length: int) -> Floats:
    """(length, 2 * len(freqs)): cos and sin columns, frequency by frequency."""
    angles = np.outer(np.arange(length), 2 * np.pi * np.asarray(freqs) / sample_rate)
    return np.stack([np.cos(angles), np.sin(angles)], axis=2).reshape(length, -1)


@lru_cache(maxsize=16)
def _tables(sample_rate: int, block: int) -> _Tables:
    dft = _basis(LOW_HZ + HIGH_HZ, sample_rate, block).reshape(block, 8, 2) * (2 / block)
    ramp = (np.arange(block) - (block - 1) / 2)[:, None] / block
    fits = []
    for low in LOW_HZ:
        for high in HIGH_HZ:
            tones = _basis((low, high), sample_rate, block)
            # The harmonics are fitted together with the tones and their slow phase drift
            # (tone * ramp), so that a tone 1.5 % off its frequency leaks nothing into them.
            harmonics = _basis((2 * low, 2 * high), sample_rate, block)
            probes = np.linalg.pinv(np.hstack([tones, tones * ramp, harmonics]))[8:]
            fits.append(np.vstack([np.linalg.pinv(tones), np.linalg.qr(tones)[0].T, probes]))
    tables = _Tables(np.hstack([dft[:, :, 0], dft[:, :, 1]]), np.stack(fits))
    tables.dft.flags.writeable = False
    tables.fits.flags.writeable = False
    return tables


class InbandDetector:
    """DTMF tones in one call's audio: feed it chunks with push(), collect the tones it returns.

    Not thread-safe; one detector per call and direction.
    """

    def __init__(self, sample_rate: int = 16000, settings: InbandSettings | None = None) -> None:
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample rate must be one of {SAMPLE_RATES}, not {sample_rate}")
        s = settings or InbandSettings()
        self.sample_rate = sample_rate
        self.settings = s
        step = max(1, round(s.block_ms * sample_rate / 2000))
        self._t = _tables(sample_rate, 2 * step)
        self._step = step
        self._block = 2 * step
        self._step_ms = 1000 * step / sample_rate
        block_ms = 2 * self._step_ms
        # Steps whose whole block lies inside any tone of min_tone_ms; a pause of min_pause_ms
        # spoils at least floor(min_pause_ms / step) blocks.
        self._confirm = max(1, math.floor((s.min_tone_ms - block_ms) / self._step_ms))
        self._pause = max(1, math.floor(s.min_pause_ms / self._step_ms))
        self._min_power = 10 ** (s.min_level_dbfs / 10)
        self._normal = 10 ** (-s.max_normal_twist_db / 10)
        self._reverse = 10 ** (s.max_reverse_twist_db / 10)
        self._margin = 10 ** (s.peak_margin_db / 10)
        self._harmonic = 10 ** (-s.harmonic_margin_db / 10)
        self._pending = b""
        self._reset()

    def _reset(self) -> None:
        self._digit = -1  # the tone in progress (confirmed or not), or -1
        self._first = 0  # its first and last step (in steps since the detector was created)
        self._last = 0
        self._start_ms = 0.0
        self._index = 0  # the next step's number

    def push(self, pcm: bytes, start_ms: int) -> list[Tone]:
        """Analyse a chunk of s16le mono PCM whose first sample is at ``start_ms`` of call time;
        return the tones that ended in it (reported ``min_pause_ms`` after they stop)."""
        buf = self._pending + pcm
        samples = len(buf) // 2
        steps = (samples - self._block) // self._step + 1 if samples >= self._block else 0
        if steps == 0:
            self._pending = buf
            return []
        t0 = start_ms - len(self._pending) / 2 * 1000 / self.sample_rate  # block 0's start
        self._pending = buf[2 * steps * self._step :]
        pcm16 = np.frombuffer(buf, dtype="<i2", count=(steps + 1) * self._step)
        halves = pcm16.reshape(steps + 1, self._step) * (1 / 32768)
        blocks = np.concatenate((halves[:-1], halves[1:]), axis=1)
        return self._track(self._classify(blocks), t0)

    def flush(self) -> list[Tone]:
        """End the tone in progress (the call ended or the stream restarts); forget the rest."""
        out = [self._tone()] if self._digit >= 0 and self._confirmed() else []
        self._pending = b""
        self._reset()
        return out

    def _classify(self, x: Floats) -> list[int]:
        """The digit index each block holds, or -1."""
        digits = [-1] * len(x)
        y = np.square(x @ self._t.dft)
        power = (y[:, :8] + y[:, 8:]).reshape(-1, 2, 4)  # amplitude**2 by (block, group, f)
        # Screen with the DFT: in each group a peak that dominates and is near the level (the
        # DFT is off by up to 1 dB where the tones leak into each other, the fit below is not).
        ranked = np.sort(power, axis=2)
        peaks, seconds = ranked[:, :, 3], ranked[:, :, 2]
        screened = np.flatnonzero(
            ((peaks >= seconds * self._margin) & (peaks >= self._min_power / 2)).all(axis=1)
        )
        if not len(screened):
            return digits
        x = x[screened]
        best = power[screened].argmax(axis=2)
        digit = best[:, 0] * 4 + best[:, 1]
        f = (self._t.fits[digit] @ x[:, :, None])[:, :, 0]
        # Squared amplitudes of the low and high tone, two halves of their energy in the block,
        # squared amplitudes at twice the low and the high frequency.
        low, high, e1, e2, low2, high2 = (f * f).reshape(-1, 6, 2).sum(axis=2).T
        ok = (
            (low >= self._min_power)
            & (high >= self._min_power)
            & (high >= low * self._normal)
            & (high <= low * self._reverse)
            & (e1 + e2 >= self.settings.min_tone_fraction * (x * x).sum(axis=1))
            & (low2 <= low * self._harmonic)
            & (high2 <= high * self._harmonic)
        )
        for i in np.flatnonzero(ok).tolist():
            digits[int(screened[i])] = int(digit[i])
        return digits

    def _track(self, digits: list[int], t0: float) -> list[Tone]:
        out: list[Tone] = []
        for i, d in enumerate(digits):
            step = self._index + i
            if d >= 0 and d == self._digit:
                self._last = step
                continue
            if self._digit >= 0:  # this step does not continue the tone in progress
                if not self._confirmed():
                    self._digit = -1  # confirmation needs consecutive steps
                elif d >= 0 or step - self._last >= self._pause:
                    out.append(self._tone())
            if d >= 0 and self._digit < 0:
                self._digit, self._first, self._last = d, step, step
                self._start_ms = t0 + i * self._step_ms
        self._index += len(digits)
        return out

    def _confirmed(self) -> bool:
        return self._last - self._first + 1 >= self._confirm

    def _tone(self) -> Tone:
        # From the first block's start to the last block's end: the edge blocks hold at least
        # min_tone_fraction of tone, which makes up for the steps' granularity on average.
        duration = (self._last - self._first + 2) * self._step_ms
        tone = Tone(_DIGITS[self._digit], round(self._start_ms), round(duration))
        self._digit = -1
        return tone


def tone(
    digit: str, duration_ms: int, sample_rate: int, level_dbfs: float = -10.0
) -> NDArray[np.int16]:
    """The DTMF tone for ``digit``, each of its two sines at ``level_dbfs`` (0 = full scale)."""
    if digit not in DTMF_FREQUENCIES:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    t = np.arange(duration_ms * sample_rate // 1000) / sample_rate
    amplitude = 32767 * 10 ** (level_dbfs / 20)
    low, high = DTMF_FREQUENCIES[digit]
    wave = np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)
    return np.clip(np.round(amplitude * wave), -32768, 32767).astype(np.int16)
