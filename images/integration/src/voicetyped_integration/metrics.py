"""Prometheus metrics of the integration gateway."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.latency = Histogram(
            "voicetyped_integration_request_seconds",
            "Backend request latency per attempt",
            ["integration", "operation"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.actions = Counter(
            "voicetyped_integration_actions_total",
            "Actions by final outcome (success or error kind)",
            ["integration", "operation", "outcome"],
            registry=registry,
        )
        self.attempts = Counter(
            "voicetyped_integration_attempts_total",
            "HTTP attempts made (retries included)",
            ["integration", "operation"],
            registry=registry,
        )
        self.deduplicated = Counter(
            "voicetyped_integration_deduplicated_total",
            "Actions answered from the idempotency store",
            ["integration"],
            registry=registry,
        )
        self.breaker = Gauge(
            "voicetyped_integration_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            ["integration"],
            registry=registry,
        )
