"""Prometheus metrics of the speech gateway."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 2, 5)
_RTF = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5)


class SpeechMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.asr_rtf = Histogram(
            "voicetyped_speech_asr_rtf",
            "Recognition real-time factor per decode (compute seconds / audio seconds)",
            ["backend", "kind"],
            buckets=_RTF,
            registry=registry,
        )
        self.asr_wait = Histogram(
            "voicetyped_speech_asr_queue_wait_seconds",
            "Time a decode waited for a recognition worker",
            ["kind"],
            buckets=_LATENCY,
            registry=registry,
        )
        self.asr_queue_depth = Gauge(
            "voicetyped_speech_asr_queue_depth",
            "Decodes waiting for a recognition worker",
            registry=registry,
        )
        self.time_to_final = Histogram(
            "voicetyped_speech_time_to_final_seconds",
            "From the VAD's end-of-speech to the final transcript",
            ["speculative"],
            buckets=_LATENCY,
            registry=registry,
        )
        self.asr_cut = Counter(
            "voicetyped_speech_asr_cut_total",
            "Decodes bounded by a guard: reason repetition (a loop written once), length (more "
            "words than the audio holds) or deadline (stopped: the call's best hypothesis used)",
            ["kind", "reason"],
            registry=registry,
        )
        self.empty_finals = Counter(
            "voicetyped_speech_empty_finals_total",
            "Final transcripts sent empty: reason no_speech (nothing heard), deadline (the "
            "decode ran out of time, no partial to fall back on) or overloaded",
            ["reason"],
            registry=registry,
        )
        self.overloaded = Counter(
            "voicetyped_speech_asr_overloaded_total",
            "Utterances refused because recognition could not keep up",
            registry=registry,
        )
        self.turn_decisions = Counter(
            "voicetyped_speech_turn_decisions_total",
            "Semantic end-of-turn decisions at a caller's pause: end the turn or wait; basis: "
            "what decided (text: the transcript and the state's expectation; model: Smart Turn; "
            "none: no verdict)",
            ["decision", "basis"],
            registry=registry,
        )
        self.turn_model_seconds = Histogram(
            "voicetyped_speech_turn_model_seconds",
            "Smart Turn inference time, queueing included",
            buckets=_LATENCY,
            registry=registry,
        )
        self.utterances = Counter(
            "voicetyped_speech_utterances_total", "Utterances segmented", registry=registry
        )
        self.barge_ins = Counter(
            "voicetyped_speech_barge_ins_total",
            "The caller stopped the prompts: reason immediate (speech started over an immediate "
            "prompt), words (a transcript of speech over an allow prompt had words that are not "
            "a backchannel or noise) or voiced (it went on longer than backchannels do)",
            ["reason"],
            registry=registry,
        )
        self.barge_in_ignored = Counter(
            "voicetyped_speech_barge_in_ignored_total",
            "Utterances over an allow prompt that did not stop it and were dropped: reason "
            "backchannel (uh-huh, okay, ...), noise (no words: a cough, a door) or unrecognised "
            "(empty because recognition was overloaded)",
            ["reason"],
            registry=registry,
        )
        self.tts_ttfa = Histogram(
            "voicetyped_speech_tts_time_to_first_audio_seconds",
            "From a synthesis request to its first audio frame",
            ["cached"],
            buckets=_LATENCY,
            registry=registry,
        )
        self.tts_rtf = Histogram(
            "voicetyped_speech_tts_rtf",
            "Synthesis real-time factor per unit (compute seconds / audio seconds)",
            buckets=_RTF,
            registry=registry,
        )
        self.tts_requests = Counter(
            "voicetyped_speech_tts_requests_total",
            "Synthesis requests by outcome",
            ["outcome"],
            registry=registry,
        )
        self.load = Gauge(
            "voicetyped_speech_load",
            "Recognition load: decode seconds of finals per worker-second over the capacity "
            "window (0.8: finals keep the workers 80 % busy); the autoscaling signal",
            registry=registry,
        )
        self.asr_busy_ratio = Gauge(
            "voicetyped_speech_asr_busy_ratio",
            "Fraction of recognition workers decoding (partials included), averaged over the "
            "capacity window",
            registry=registry,
        )
        self.saturated = Gauge(
            "voicetyped_speech_saturated",
            "1 while this replica refuses new calls because recognition is at capacity",
            registry=registry,
        )
        self.streams_refused = Counter(
            "voicetyped_speech_streams_refused_total",
            "New audio streams (calls) refused: reason queue_full (finals refused already), "
            "queue (finals kept waiting), load (finals' decode time near the workers'), "
            "max_streams (capacity.max_streams calls open) or draining",
            ["reason"],
            registry=registry,
        )
        self.partials_shed = Counter(
            "voicetyped_speech_partials_shed_total",
            "Partial decodes given up under load: reason replaced (a newer one of the call "
            "took its place while it waited) or aborted (stopped for a final)",
            ["reason"],
            registry=registry,
        )
        self.asr_compute = Counter(
            "voicetyped_speech_asr_compute_seconds",
            "Compute seconds of decodes by kind and outcome: done, or abandoned (stopped while "
            "it ran: a speculative final decoded at a pause when the caller went on, a partial "
            "that gave way)",
            ["kind", "outcome"],
            registry=registry,
        )
        self.streams = Gauge(
            "voicetyped_speech_active_streams", "Calls with an open audio stream", registry=registry
        )

    def track_queue_depth(self, depth: Callable[[], int]) -> None:
        self.asr_queue_depth.set_function(lambda: float(depth()))
