"""Speech synthesis for the gateway: Piper voices streamed as paced-size PCM frames.

See :mod:`.synth` for the streaming, threading, barge-in and caching design.
"""

from voicetyped_speech.tts.cache import PromptCache, cache_key
from voicetyped_speech.tts.first_unit import FirstUnitPolicy
from voicetyped_speech.tts.synth import (
    DEFAULT_FRAME_MS,
    SUPPORTED_RATES,
    DuplicateRequestError,
    SynthesisBusyError,
    SynthesisError,
    SynthesisOptions,
    Synthesizer,
    TTSError,
    TTSHooks,
    TTSStats,
    UnsupportedSampleRateError,
    WarmUpReport,
    is_fixed_prompt,
)
from voicetyped_speech.tts.voices import (
    DEFAULT_VOICE,
    InvalidVoiceError,
    UnknownVoiceError,
    Voice,
    VoiceError,
    VoiceRegistry,
    VoiceSpec,
)

__all__ = [
    "DEFAULT_FRAME_MS",
    "DEFAULT_VOICE",
    "SUPPORTED_RATES",
    "DuplicateRequestError",
    "FirstUnitPolicy",
    "InvalidVoiceError",
    "PromptCache",
    "SynthesisBusyError",
    "SynthesisError",
    "SynthesisOptions",
    "Synthesizer",
    "TTSError",
    "TTSHooks",
    "TTSStats",
    "UnknownVoiceError",
    "UnsupportedSampleRateError",
    "Voice",
    "VoiceError",
    "VoiceRegistry",
    "VoiceSpec",
    "WarmUpReport",
    "cache_key",
    "is_fixed_prompt",
]
