"""The recogniser interface every backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

Audio = NDArray[np.float32]  # 16 kHz mono, [-1, 1]
SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Transcription:
    text: str
    confidence: float  # 0..1
    compute_s: float  # wall time the decode took


class Recognizer(Protocol):
    """One loaded model; ``transcribe`` blocks and is called from one worker thread at a time."""

    name: str

    def transcribe(self, audio: Audio) -> Transcription: ...
