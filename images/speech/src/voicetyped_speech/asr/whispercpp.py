"""whisper.cpp through pywhispercpp: the default backend (a ggml model file)."""

from __future__ import annotations

import math
import time
from pathlib import Path

from voicetyped_speech.asr.base import Audio, Transcription


class WhisperCppRecognizer:
    name = "whispercpp"

    def __init__(self, model_path: Path, n_threads: int = 2, language: str = "en") -> None:
        from pywhispercpp.model import Model

        if not model_path.is_file():
            raise FileNotFoundError(
                f"ggml model {model_path} not found (run `voicetyped models prepare`)"
            )
        self._model = Model(
            str(model_path),
            n_threads=n_threads,
            print_progress=False,
            language=language,
            redirect_whispercpp_logs_to=None,
        )

    def transcribe(self, audio: Audio) -> Transcription:
        started = time.perf_counter()
        # Short phone utterances: one segment, no context carried between utterances.
        segments = self._model.transcribe(
            audio, extract_probability=True, no_context=True, single_segment=True
        )
        text = " ".join(s.text.strip() for s in segments).strip()
        probs = [float(getattr(s, "probability", math.nan)) for s in segments]
        known = [p for p in probs if not math.isnan(p)]
        confidence = min(max(sum(known) / len(known), 0.0), 1.0) if known else 1.0
        return Transcription(text, confidence, time.perf_counter() - started)
