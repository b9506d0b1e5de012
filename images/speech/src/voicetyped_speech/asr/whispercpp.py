"""whisper.cpp through pywhispercpp: the default backend (a ggml model file).

Whisper always encodes a 30 s window (1500 encoder positions); for a 1-5 s phone utterance that
is 0.7-1.0 s of compute on 2 cores, most of it encoding silence. whisper.cpp can encode a shorter
window (``audio_ctx``), but stock Whisper weights need a few seconds of silence after the speech
in the window or the decoder starts over and repeats itself, and whisper.cpp 1.8.5's flash
attention attends to stale rows when ``audio_ctx`` is not a multiple of 256
(docs/decisions/2026-11-24-speech-latency-research.md). So the window is chosen per utterance:
the smallest multiple of 256 positions that holds the speech plus ``ctx_margin`` positions
(64 = 1.28 s) of silence, at least ``min_audio_ctx`` (512 = 10.24 s), and the full window beyond
1280. For utterances under ~9 s that is 512: 0.2-0.26 s here instead of 0.7-1.0 s, with the same
transcripts on our call-style phrase sets.

Each decode is bounded by the audio (:mod:`.guards`): at most two temperature fallbacks
instead of whisper.cpp's five (it re-decoded up to 25 times: "Inference time: 2.984 s" for
"Goodbye."), a token cap and the text guards. The pool's abort check (a cancelled job or its
deadline) is polled by whisper.cpp before the encoder and at every decoder step.
"""

from __future__ import annotations

import atexit
import math
import threading
import time
from pathlib import Path
from typing import Any

from voicetyped.service.logs import get_logger

from voicetyped_speech.asr.base import AbortCheck, Aborted, Audio, DecodeOptions, Transcription
from voicetyped_speech.asr.biasing import Bias
from voicetyped_speech.asr.guards import FALLBACK_TEMPERATURE, bound_text, max_tokens
from voicetyped_speech.asr.whisper_decoder import WhisperDecoder

log = get_logger("voicetyped.speech.whispercpp")
_WHISPER_ERROR = 4  # ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continuation
_decode = threading.local()  # .aborting: this thread's decode was cancelled by us


def _whisper_log(level: int, text: str) -> None:
    """whisper.cpp's own log lines, into the service's JSON log (it writes plain text to fd 2
    otherwise). An error is a warning, unless it is the decode we cancelled reporting so."""
    message = text.rstrip()
    if not message:
        return
    if level == _WHISPER_ERROR and not getattr(_decode, "aborting", False):
        log.warning("whisper.cpp", message=message)
    else:
        log.debug("whisper.cpp", message=message)


def route_whisper_logs() -> None:
    """Send whisper.cpp's log through :func:`_whisper_log` (the service calls this once its
    JSON logging is configured; whisper.cpp keeps one callback per process)."""
    import _pywhispercpp

    _pywhispercpp.whisper_log_set(_whisper_log)
    # Models still alive when the interpreter finalizes log as they are freed; a callback
    # into Python then aborts the process ("PyThreadState_Get: ... GIL is released").
    atexit.register(_pywhispercpp.whisper_log_set, None)


FULL_CTX = 1500  # Whisper's 30 s window, in encoder positions (20 ms each)
_SAMPLES_PER_POSITION = 320  # 16 kHz, hop 160, stride-2 conv
_CTX_STEP = 256


def audio_ctx_for(n_samples: int, min_ctx: int = 512, margin: int = 64) -> int:
    """The encoder window for an utterance of ``n_samples`` (0 means whisper.cpp's full one)."""
    if min_ctx <= 0:
        return 0
    needed = math.ceil(n_samples / _SAMPLES_PER_POSITION) + margin
    ctx = max(min_ctx, _CTX_STEP * math.ceil(needed / _CTX_STEP))
    return 0 if ctx >= FULL_CTX else ctx


class WhisperCppRecognizer(WhisperDecoder):
    name = "whispercpp"

    def __init__(
        self,
        model_path: Path,
        n_threads: int = 2,
        language: str = "en",
        min_audio_ctx: int = 512,
        ctx_margin: int = 64,
        fallback_temperature: float = FALLBACK_TEMPERATURE,
    ) -> None:
        from voicetyped_speech.asr.factory import prepare_environment

        prepare_environment()  # before libgomp loads with pywhispercpp
        from pywhispercpp.model import Model

        if not model_path.is_file():
            raise FileNotFoundError(
                f"ggml model {model_path} not found (run `voicetyped models prepare`)"
            )
        if min_audio_ctx % _CTX_STEP:
            raise ValueError(f"min_audio_ctx must be a multiple of {_CTX_STEP} (or 0: full window)")
        self._model: Any = Model(
            str(model_path),
            n_threads=n_threads,
            print_progress=False,
            language=language,
            redirect_whispercpp_logs_to=None,
            # whisper.cpp re-decodes at every multiple of this up to 1.0 when a decode fails
            # its entropy or log-probability checks (0.4: two retries; 0: none).
            temperature_inc=fallback_temperature,
        )
        self._language = language
        self._threads = n_threads
        self._min_ctx = min_audio_ctx
        self._margin = ctx_margin

    def _run(
        self,
        audio: Audio,
        abort: AbortCheck | None,
        options: DecodeOptions | None,
        bias: Bias | None,
    ) -> Transcription:
        started = time.perf_counter()
        aborted = False

        def check() -> bool:
            nonlocal aborted
            aborted = aborted or (abort is not None and abort())
            _decode.aborting = aborted
            return aborted

        _decode.aborting = False
        # Short phone utterances: one segment, no context carried between utterances.
        segments = self._model.transcribe(
            audio,
            extract_probability=True,
            no_context=True,
            single_segment=True,
            audio_ctx=audio_ctx_for(len(audio), self._min_ctx, self._margin),
            max_tokens=max_tokens(len(audio)),
            abort_callback=check if abort is not None else None,
            # pywhispercpp keeps parameters between calls: always say which language and
            # prompt (it refuses None: "" is no prompt).
            language=options.language if options and options.language else self._language,
            initial_prompt=bias.prompt if bias is not None else "",
            n_threads=options.threads if options and options.threads else self._threads,
        )
        if aborted:
            raise Aborted
        text, cut = bound_text(" ".join(s.text.strip() for s in segments).strip(), len(audio))
        probs = [float(getattr(s, "probability", math.nan)) for s in segments]
        known = [p for p in probs if not math.isnan(p)]
        confidence = min(max(sum(known) / len(known), 0.0), 1.0) if known else 1.0
        return Transcription(text, confidence, time.perf_counter() - started, cut=cut)
