"""What both Whisper backends share: biasing around one decode pass, and the warm-up decode.

A backend implements :meth:`WhisperDecoder._run` (one pass, with or without a bias); the
biasing policy (:func:`~.biasing.transcribe_with_bias`: retry without the prompt when it was
echoed) and the warm-up stay in one place.
"""

from __future__ import annotations

import numpy as np

from voicetyped_speech.asr.base import SAMPLE_RATE, AbortCheck, Audio, DecodeOptions, Transcription
from voicetyped_speech.asr.biasing import Bias, transcribe_with_bias


class WhisperDecoder:
    name = "whisper"

    def transcribe(
        self, audio: Audio, abort: AbortCheck | None = None, options: DecodeOptions | None = None
    ) -> Transcription:
        context = options.context if options is not None else None
        return transcribe_with_bias(context, lambda bias: self._run(audio, abort, options, bias))

    def _run(
        self,
        audio: Audio,
        abort: AbortCheck | None,
        options: DecodeOptions | None,
        bias: Bias | None,
    ) -> Transcription:
        raise NotImplementedError

    def warm_up(self) -> None:
        """One decode, so the first call's is not the process's first (a second of low noise:
        the encoder and a few decoder steps run)."""
        self.transcribe(np.random.default_rng(0).normal(0, 0.01, SAMPLE_RATE).astype(np.float32))
