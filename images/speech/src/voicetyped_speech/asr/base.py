"""The recogniser interface every backend implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from voicetyped.recognition import RecognitionContext

Audio = NDArray[np.float32]  # 16 kHz mono, [-1, 1]
SAMPLE_RATE = 16_000

AbortCheck = Callable[[], bool]
"""Polled by a backend between decoding stages; True asks it to give up (a partial that a final
overtook). Backends that cannot stop early ignore it."""


class Aborted(Exception):  # noqa: N818 - a control-flow signal, not an error condition
    """The decode was given up because its abort check said so."""


@dataclass(frozen=True)
class DecodeOptions:
    """Per-decode settings a call chooses (its recogniser's defaults otherwise)."""

    language: str | None = None
    """Whisper language code, already checked against the model."""
    context: RecognitionContext | None = None
    """What the dialog expects the caller to say (biases the decode: :mod:`.biasing`); None is
    plain recognition."""
    threads: int | None = None
    """Compute threads for this decode (whisper.cpp; the pool sets it when it shares its threads
    between running decodes). None: the recogniser's own; faster-whisper fixes its threads when
    the model loads and ignores this."""


@dataclass(frozen=True)
class Transcription:
    text: str
    confidence: float  # 0..1
    compute_s: float  # wall time the decode took
    echoed: bool = False
    """A biased decode wrote its prompt back; this is the audio decoded again without it."""
    cut: str = ""
    """What bounded the text (:mod:`.guards`, :mod:`.pool`): "" nothing, "repetition" (a loop
    written once), "length" (more words than the audio can hold), "deadline" (the decode ran
    out of time: no text)."""


class Recognizer(Protocol):
    """One loaded model; ``transcribe`` blocks and is called from one worker thread at a time."""

    name: str

    def transcribe(
        self, audio: Audio, abort: AbortCheck | None = None, options: DecodeOptions | None = None
    ) -> Transcription: ...

    def warm_up(self) -> None:
        """Run the decode path once (the pool does, before the service reports ready)."""
