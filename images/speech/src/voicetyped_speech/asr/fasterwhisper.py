"""faster-whisper (CTranslate2): the second backend; ``device="cuda"`` on GPU nodes."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from voicetyped_speech.asr.base import AbortCheck, Aborted, Audio, DecodeOptions, Transcription
from voicetyped_speech.asr.biasing import Bias, transcribe_with_bias


class FasterWhisperRecognizer:
    name = "faster-whisper"

    def __init__(
        self,
        model_dir: Path,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 2,
        beam_size: int = 1,
        language: str = "en",
    ) -> None:
        from faster_whisper import WhisperModel

        self._model: Any = WhisperModel(
            str(model_dir), device=device, compute_type=compute_type, cpu_threads=cpu_threads
        )
        self._beam_size = beam_size
        self._language = language

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
        # CTranslate2 cannot stop inside a decode: the check is polled before and between
        # segments (one segment for a phone utterance), so it mostly saves nothing.
        if abort is not None and abort():
            raise Aborted
        started = time.perf_counter()
        segments, _ = self._model.transcribe(
            audio,
            language=options.language if options and options.language else self._language,
            beam_size=self._beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
            initial_prompt=(bias.core or None) if bias is not None else None,
            hotwords=(bias.hotwords or None) if bias is not None else None,
        )
        parts = []
        for segment in segments:  # a lazy generator: decoding happens here
            parts.append(segment)
            if abort is not None and abort():
                raise Aborted
        text = " ".join(s.text.strip() for s in parts).strip()
        logprobs = [s.avg_logprob for s in parts]
        confidence = math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0
        return Transcription(text, min(max(confidence, 0.0), 1.0), time.perf_counter() - started)
