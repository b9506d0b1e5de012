"""Settings of the speech service (see voicetyped.service.config for the common ones).

Nested groups map to environment variables with ``__``: ``VOICETYPED_ASR__BACKEND=faster-whisper``,
``VOICETYPED_VAD__HANGOVER_MS=250``, ``VOICETYPED_TTS__VOICES='{"anna": "/voices/anna.onnx"}'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from voicetyped.service.config import ServiceSettings

from voicetyped_speech.asr.guards import FALLBACK_TEMPERATURE
from voicetyped_speech.load import CapacityRule
from voicetyped_speech.models.catalog import DEFAULT_WHISPER, WhisperName
from voicetyped_speech.streaming import StreamingSettings
from voicetyped_speech.tts.voices import DEFAULT_VOICE
from voicetyped_speech.vad import VadSettings


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AsrConfig(_Group):
    backend: Literal["whispercpp", "faster-whisper"] = Field(
        "whispercpp", description="Recognition backend."
    )
    model_name: WhisperName = Field(
        DEFAULT_WHISPER,
        description="Bundled Whisper model: tiny.en (English only, fastest) or base "
        "(multilingual, 99 languages; slower). `voicetyped models prepare` prepares the "
        "configured one. Ignored when `model` is set.",
    )
    model: Path | None = Field(
        None,
        description="whispercpp: a ggml file; faster-whisper: a CTranslate2 model directory. "
        "Default: model_name as prepared in models_dir (tiny.en for faster-whisper: the "
        "package's own directory).",
    )
    quantization: Literal["f16", "q8_0"] = Field(
        "q8_0",
        description="whispercpp: which prepared weights of model_name to load: q8_0 (weight "
        "matrices in 8-bit blocks; ~13-24 % more audio decoded per core than float16 at the "
        "same WER, bench/asr_capacity.py) or f16. Ignored when `model` is set and by "
        "faster-whisper (compute_type).",
    )
    models_dir: Path | None = Field(
        None,
        description="Where `voicetyped models prepare` put the models (default: "
        "$VOICETYPED_MODELS_DIR, else the user's cache directory).",
    )
    language: str = Field(
        "en",
        max_length=16,
        description="Recognition language of calls that do not name one (a dialog's "
        "settings.language does): a Whisper language code (en, de, es, ...) or a BCP 47 tag "
        "(de-DE). An English-only model accepts only en: anything else fails at start.",
    )
    workers: int = Field(
        2,
        ge=1,
        le=64,
        description="Recognition threads, one model each. Two (even on two cores) let a "
        "short final run beside a long decode instead of waiting behind it (bench/turn_stalls.py"
        "; docs/decisions/2026-12-03-decode-bounds.md); each costs one more loaded model.",
    )
    threads: int = Field(2, ge=1, le=64, description="Compute threads per worker.")
    share_threads: bool = Field(
        True,
        description="whispercpp: the running decodes share `threads` compute threads: a decode "
        "alone uses them all, two running get half each (at least one). Under load this keeps "
        "whisper.cpp's spinning threads from outnumbering the cores; false gives every decode "
        "`threads` of its own (bench/asr_capacity.py).",
    )
    max_waiting: int = Field(
        8, ge=1, description="Finals allowed to wait for a worker before new ones are refused."
    )
    min_audio_ctx: int = Field(
        512,
        ge=0,
        le=1280,
        multiple_of=256,
        description="whispercpp: smallest encoder window in 20 ms positions (0: always the "
        "full 30 s window).",
    )
    deadline_ms: int = Field(
        2000,
        ge=0,
        description="How long one decode may run (plus deadline_ms_per_audio_s for each second "
        "of audio, or deadline_factor times the recent typical decode if longer) before it is "
        "stopped and the call's best hypothesis is used instead (0: no limit). See "
        "docs/decisions/2026-12-03-decode-bounds.md.",
    )
    deadline_ms_per_audio_s: int = Field(100, ge=0)
    deadline_factor: float = Field(3.0, ge=0.0, description="0: the fixed budget only.")
    fallback_temperature: float = Field(
        FALLBACK_TEMPERATURE,
        ge=0.0,
        le=1.0,
        description="A decode that fails Whisper's own checks is retried at each multiple of "
        "this up to 1.0 (0.4: two retries; 0: none; Whisper's own 0.2: five).",
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="faster-whisper device.")
    compute_type: str = Field("int8", description="faster-whisper compute type.")
    beam_size: int = Field(1, ge=1, le=10, description="faster-whisper beam size.")


class CapacityConfig(_Group):
    """When this replica refuses new calls (StreamAudio RESOURCE_EXHAUSTED; the media gateway
    answers 503) so that the calls it has keep their turn latency (see voicetyped_speech.load)."""

    max_streams: int = Field(
        0, ge=0, description="Calls at once on this replica (0: no fixed ceiling, load decides)."
    )
    load_threshold: float = Field(
        0.8,
        ge=0,
        le=10,
        description="Refuse new calls while finals' decode seconds per worker-second over "
        "window_s reach this (0: never for load).",
    )
    queue_threshold: int = Field(
        2,
        ge=0,
        description="Refuse new calls while at least this many finals waited for a worker "
        "throughout sustain_s (0: never for the queue).",
    )
    window_s: float = Field(5.0, gt=0, le=300, description="Load averaging window.")
    sustain_s: float = Field(2.0, gt=0, le=300, description="How long a backlog must last.")
    sample_s: float = Field(0.25, gt=0, le=10, description="Pool sampling interval.")

    def rule(self) -> CapacityRule:
        return CapacityRule(
            self.max_streams,
            self.load_threshold,
            self.queue_threshold,
            self.window_s,
            self.sustain_s,
        )


class VadConfig(_Group):
    aggressiveness: int = Field(3, ge=0, le=3)
    frame_ms: Literal[10, 20, 30] = 20
    start_required_ms: int = Field(60, gt=0)
    hangover_ms: int = Field(300, gt=0, description="Silence that ends an utterance.")
    pre_roll_ms: int = Field(200, ge=0)
    max_utterance_ms: int = Field(30_000, ge=1000)
    min_speech_dbfs: float | None = None

    def settings(self) -> VadSettings:
        return VadSettings(**self.model_dump())


class StreamingConfig(_Group):
    partial_interval_ms: int = Field(700, ge=100)
    partial_min_ms: int = Field(400, ge=0)
    speculate: bool = True

    def settings(self) -> StreamingSettings:
        return StreamingSettings(**self.model_dump())


class TurnConfig(_Group):
    """End of turn: the defaults for calls whose dialog state does not say (a dialog state's
    ``endpointing`` overrides them), and the Smart Turn model."""

    mode: Literal["semantic", "silence"] = Field(
        "silence",
        description="semantic: Smart Turn and the state's expectation decide at each pause; "
        "silence: min_ms of silence ends the turn.",
    )
    min_ms: int | None = Field(
        None, ge=20, le=30_000, description="Silence before a turn may end (vad.hangover_ms)."
    )
    max_ms: int = Field(2000, ge=20, le=30_000, description="semantic: silence that ends a turn.")
    threshold: float = Field(
        0.5, ge=0, le=1, description="Smart Turn probability at or above which a pause ends it."
    )
    sentence_threshold: float = Field(
        0.05,
        ge=0,
        le=1,
        description="The same when Whisper punctuated the words as a finished sentence.",
    )
    model: bool = Field(
        True, description="Load Smart Turn (without it semantic mode falls back to silence)."
    )
    threads: int = Field(1, ge=1, le=8, description="Smart Turn inference threads.")


class TtsConfig(_Group):
    default_voice: str = DEFAULT_VOICE
    voices: dict[str, Path] = Field(
        default_factory=dict, description="Extra Piper voices: name -> .onnx file or directory."
    )
    workers: int = Field(2, ge=1, le=64, description="Piper synthesis threads.")
    cache_max_mb: int = Field(64, ge=0, description="Prompt cache size.")
    max_active: int = Field(64, ge=1, description="Syntheses running or queued at once.")
    lead_in_ms: int | None = Field(
        10,
        ge=0,
        le=1000,
        description="Silence kept before the first sound of each reply; the voice's own "
        "leading silence beyond it is cut (null keeps it all).",
    )
    lead_ms: int = Field(
        100, ge=20, le=2000, description="Audio handed to the media gateway ahead of playout."
    )
    first_unit_max_words: int = Field(
        4,
        ge=0,
        le=50,
        description="A new (uncached) reply's first sentence longer than this is cut after its "
        "opening phrase of at most this many words, voiced first for fast first audio; the cut "
        "falls at punctuation, a conjunction or a phrase start, never inside a number, time or "
        "date (0: voice first sentences whole).",
    )
    first_unit_min_words: int = Field(2, ge=1, le=50, description="Shortest such opening.")
    first_unit_min_rest_words: int = Field(
        3, ge=1, le=50, description="Fewest words of the sentence left after the opening."
    )
    warmup_dialogs_dir: Path | None = Field(
        None,
        description="Dialog documents (the Dialog ConfigMap mount) whose fixed prompts are "
        "synthesized into the cache at start and whenever they change.",
    )
    warmup_rates: list[Literal[8000, 16000]] = Field(
        default=[8000], description="Playback rates to warm the cache for."
    )
    warmup_poll_s: float = Field(5.0, gt=0)


class SpeechSettings(ServiceSettings):
    # Distinct default ports let all four services run side by side on one machine.
    http_port: int = Field(8082, ge=0, le=65535)
    grpc_port: int = Field(50062, ge=0, le=65535)

    asr: AsrConfig = Field(default_factory=AsrConfig)
    vad: VadConfig = Field(default_factory=VadConfig)
    streaming: StreamingConfig = Field(default_factory=StreamingConfig)
    tts: TtsConfig = Field(default_factory=TtsConfig)
    turn: TurnConfig = Field(default_factory=TurnConfig)
    capacity: CapacityConfig = Field(default_factory=CapacityConfig)
    converse_wait_s: float = Field(
        5.0, gt=0, description="How long a Converse stream waits for its call's audio stream."
    )
    buffered_updates: int = Field(
        256, ge=16, description="Updates kept for a call while no runtime stream is attached."
    )
