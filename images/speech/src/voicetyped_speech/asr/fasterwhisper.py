"""faster-whisper (CTranslate2): the second backend; ``device="cuda"`` on GPU nodes.

Bounded like whisper.cpp (:mod:`.guards`): at most two temperature fallbacks, a token cap from
the audio length, the text guards. CTranslate2 cannot stop inside a decode, so the
pool's deadline only takes effect between segments (one segment for a phone utterance): the
token cap is what bounds its cost.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from voicetyped_speech.asr.base import AbortCheck, Aborted, Audio, DecodeOptions, Transcription
from voicetyped_speech.asr.biasing import Bias
from voicetyped_speech.asr.guards import (
    FALLBACK_TEMPERATURE,
    bound_text,
    fallback_temperatures,
    max_tokens,
)
from voicetyped_speech.asr.whisper_decoder import WhisperDecoder

_MAX_NEW_TOKENS = 200


class FasterWhisperRecognizer(WhisperDecoder):
    name = "faster-whisper"

    def __init__(
        self,
        model_dir: Path,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 2,
        beam_size: int = 1,
        language: str = "en",
        fallback_temperature: float = FALLBACK_TEMPERATURE,
    ) -> None:
        from faster_whisper import WhisperModel

        self._model: Any = WhisperModel(
            str(model_dir), device=device, compute_type=compute_type, cpu_threads=cpu_threads
        )
        self._beam_size = beam_size
        self._language = language
        self._fallback = fallback_temperature

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
            # Two retries at most (when the greedy decode fails Whisper's compression or
            # log-probability checks), not Whisper's five.
            temperature=fallback_temperatures(self._fallback),
            # faster-whisper refuses a prompt plus max_new_tokens over the model's 448 tokens;
            # the prompt takes at most 224 of them.
            max_new_tokens=min(max_tokens(len(audio)), _MAX_NEW_TOKENS),
        )
        parts = []
        for segment in segments:  # a lazy generator: decoding happens here
            parts.append(segment)
            if abort is not None and abort():
                raise Aborted
        text, cut = bound_text(" ".join(s.text.strip() for s in parts).strip(), len(audio))
        logprobs = [s.avg_logprob for s in parts]
        confidence = math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0
        return Transcription(
            text, min(max(confidence, 0.0), 1.0), time.perf_counter() - started, cut=cut
        )
