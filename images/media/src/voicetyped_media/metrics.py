"""Prometheus metrics of the media gateway."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from voicetyped_media.rtp.stream import StreamReport


class MediaMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.active_calls = Gauge(
            "voicetyped_media_active_calls",
            "Calls in progress (the autoscaling signal: CPU is the wrong one for call load)",
            registry=registry,
        )
        self.capacity = Gauge(
            "voicetyped_media_call_capacity", "Calls this replica admits at most", registry=registry
        )
        self.calls_answered = Counter(
            "voicetyped_media_calls_answered_total",
            "Calls answered, by codec",
            ["codec"],
            registry=registry,
        )
        self.calls_ended = Counter(
            "voicetyped_media_calls_ended_total",
            "Calls ended, by reason",
            ["reason"],
            registry=registry,
        )
        self.speech_restores = Counter(
            "voicetyped_media_speech_restores_total",
            "Speech streams that failed mid-call, by outcome: restored (reopened on a ready "
            "replica) or failed (not within speech_restore_s: the call was hung up)",
            ["outcome"],
            registry=registry,
        )
        self.refused = Counter(
            "voicetyped_media_calls_refused_total",
            "INVITEs (and browser calls) refused: capacity, draining, forbidden, unauthenticated, "
            "bad SDP, speech_unavailable, speech_capacity (the speech gateway at capacity "
            "refused a new call: 503 with Retry-After)...",
            ["reason"],
            registry=registry,
        )
        self.sip_rejected = Counter(
            "voicetyped_media_sip_rejected_total",
            "Malformed or unsupported SIP requests answered with an error, by status",
            ["status"],
            registry=registry,
        )
        self.sip_refused = Counter(
            "voicetyped_media_sip_requests_refused_total",
            "SIP requests refused by the scanner and flood defence, by reason: rate_limited "
            "(503), banned (dropped unread), auth_failed (digest failure), call_ceiling (503: "
            "too many calls at once from the source or on the route), trunk_ceiling (503: "
            "too many calls at once from one trunk, its max_calls)",
            ["reason"],
            registry=registry,
        )
        self.sip_bans = Counter(
            "voicetyped_media_sip_bans_total",
            "Sources banned (each ban once), by reason: rate_limited, auth_failed",
            ["reason"],
            registry=registry,
        )
        self.sip_bans_active = Gauge(
            "voicetyped_media_sip_bans_active", "Sources banned now", registry=registry
        )
        self.sip_sources_tracked = Gauge(
            "voicetyped_media_sip_sources_tracked",
            "Source addresses the defence keeps state for (bounded by max_sources)",
            registry=registry,
        )
        self.dtmf = Counter(
            "voicetyped_media_dtmf_total",
            "DTMF digits received, by method",
            ["source"],
            registry=registry,
        )
        self.transfers = Counter(
            "voicetyped_media_transfers_total",
            "Blind transfers, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.barge_in_flushed = Counter(
            "voicetyped_media_barge_in_frames_dropped_total",
            "Playback frames dropped at a barge-in stop",
            registry=registry,
        )
        self.playback_dropped = Counter(
            "voicetyped_media_playback_dropped_total",
            "Playback audio dropped (caller on hold too long)",
            registry=registry,
        )
        self.call_loss = Histogram(
            "voicetyped_media_call_packet_loss_ratio",
            "Per call: RTP packets lost (after reordering) / expected",
            buckets=(0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1),
            registry=registry,
        )
        self.call_jitter = Histogram(
            "voicetyped_media_call_jitter_ms",
            "Per call: RFC 3550 interarrival jitter of the caller's stream",
            buckets=(1, 2, 5, 10, 20, 30, 50, 100, 200),
            registry=registry,
        )
        self.remote_loss = Histogram(
            "voicetyped_media_call_remote_loss_ratio",
            "Per call: loss of our stream as the caller reports it in RTCP",
            buckets=(0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1),
            registry=registry,
        )
        self.packets = Counter(
            "voicetyped_media_rtp_packets_total",
            "RTP packets by direction and fate",
            ["kind"],
            registry=registry,
        )
        self.uplink_delay = Histogram(
            "voicetyped_media_uplink_queue_seconds",
            "Caller audio: from leaving the RTP path to being taken by the speech stream",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.5, 1),
            registry=registry,
        )
        self.pacer_late = Gauge(
            "voicetyped_media_pacer_late_ticks",
            "20 ms playout ticks that ran a whole frame (> 20 ms) late",
            registry=registry,
        )

        self.trunk_registered = Gauge(
            "voicetyped_media_trunk_registered",
            "1 while the trunk's registration holds (last REGISTER answered 200, not expired)",
            ["trunk"],
            registry=registry,
        )
        self.trunk_register = Counter(
            "voicetyped_media_trunk_register_total",
            "REGISTERs to a trunk by outcome (registered, timeout, server_error, rejected, "
            "auth_failed, interval_too_brief, unregistered) and unanswered keepalives",
            ["trunk", "outcome"],
            registry=registry,
        )

    def observe_stream(self, report: StreamReport) -> None:
        expected = report.packets_received + report.packets_lost
        if expected:
            self.call_loss.observe(report.packets_lost / expected)
        self.call_jitter.observe(report.jitter_ms)
        if report.remote_fraction_lost is not None:
            self.remote_loss.observe(report.remote_fraction_lost)
        self.packets.labels("received").inc(report.packets_received)
        self.packets.labels("lost").inc(report.packets_lost)
        self.packets.labels("late").inc(report.late)
        self.packets.labels("concealed").inc(report.concealed)

    def track(self, active: Callable[[], int], late_ticks: Callable[[], int]) -> None:
        self.active_calls.set_function(lambda: float(active()))
        self.pacer_late.set_function(lambda: float(late_ticks()))
