"""espeak-ng voices as callers the recogniser was never tuned on (accents, male and female).

Piper's joe voice is what the project's own tests speak with; Whisper hears it almost
perfectly, so it says little about other people's voices. espeak-ng's formant voices are far
from Piper and from each other (US, British, Scottish, Caribbean English; ``+f2``/``+f3``/``+f4``
are its female variants) and come from a Debian package (``make system-deps``).

``espeak-ng --stdout`` writes a WAV stream (22050 Hz mono s16le). Synthesis runs as a
subprocess: :func:`speak_16k` blocks (worker threads, scripts), :func:`speak_16k_async` is for
the event loop. An unknown voice name is an error; beware that a voice name followed by a
variant may quietly drop the variant (``en-gb+f2`` speaks as ``en-gb``; the tests check that
the female variants really are higher).
"""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import wave
from dataclasses import dataclass

import numpy as np

from voicetyped_testkit.speech import SAMPLE_RATE, Pcm, resample, to_pcm

ESPEAK = "espeak-ng"


@dataclass(frozen=True)
class EspeakVoice:
    voice: str
    """espeak-ng voice, with an optional variant: ``en-gb``, ``en-us+f3``."""
    speed: int = 160
    """Words per minute (espeak-ng's default is 175; the issue's trial spoke at 160)."""
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.voice

    def argv(self, text: str) -> list[str]:
        return [ESPEAK, "-v", self.voice, "-s", str(self.speed), "--stdout", text]


VOICES: tuple[EspeakVoice, ...] = (
    EspeakVoice("en-us", label="en-us-male"),
    EspeakVoice("en-us+f3", label="en-us-female"),
    EspeakVoice("en-gb", label="en-gb-male"),
    # "en-gb+f2" silently drops the variant (same audio as en-gb); "en" is the same British
    # voice (gmw/en) and takes it.
    EspeakVoice("en+f2", label="en-gb-female"),
    EspeakVoice("en-gb-scotland", label="en-scotland-male"),
    EspeakVoice("en-029+f4", label="en-caribbean-female"),
)
"""The accent/gender spread measured by the accuracy research and benchmark."""


class EspeakError(RuntimeError):
    """espeak-ng is missing, failed, or wrote something that is not its WAV stream."""


def available() -> bool:
    return shutil.which(ESPEAK) is not None


def parse_wav(data: bytes) -> tuple[Pcm, int]:
    """espeak-ng's ``--stdout`` WAV: (int16 samples, sample rate). Its header's sizes are
    placeholders (it streams); ``wave`` reads the data chunk to the end of ``data``."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise EspeakError(f"unexpected WAV: {w.getnchannels()} ch, {w.getsampwidth()} B")
            rate, frames = w.getframerate(), w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise EspeakError(f"not a WAV stream ({data[:16]!r}): {exc}") from exc
    frames = frames[: len(frames) // 2 * 2]
    return np.frombuffer(frames, dtype="<i2").astype(np.int16), rate


def _to_16k(wav: bytes) -> Pcm:
    pcm, rate = parse_wav(wav)
    if not len(pcm):
        raise EspeakError("espeak-ng produced no audio")
    return to_pcm(resample(pcm.astype(np.float32) / 32768, rate, SAMPLE_RATE))


def _failed(voice: EspeakVoice, code: int, stderr: bytes) -> EspeakError:
    return EspeakError(f"{ESPEAK} -v {voice.voice} exited {code}: {stderr.decode().strip()}")


def speak_16k(text: str, voice: EspeakVoice) -> Pcm:
    """``text`` spoken by ``voice``, 16 kHz int16 (blocks: not for the event loop)."""
    try:
        done = subprocess.run(voice.argv(text), capture_output=True, check=False, timeout=60)
    except FileNotFoundError as exc:
        raise EspeakError(f"{ESPEAK} not installed (make system-deps)") from exc
    if done.returncode:
        raise _failed(voice, done.returncode, done.stderr)
    return _to_16k(done.stdout)


async def speak_16k_async(text: str, voice: EspeakVoice) -> Pcm:
    """:func:`speak_16k` without blocking the event loop (resampling in a worker thread)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *voice.argv(text), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except FileNotFoundError as exc:
        raise EspeakError(f"{ESPEAK} not installed (make system-deps)") from exc
    out, err = await proc.communicate()
    if proc.returncode:
        raise _failed(voice, proc.returncode, err)
    return await asyncio.to_thread(_to_16k, out)
