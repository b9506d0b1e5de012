"""Chaos: 1,000 actions against a backend failing 30 % of requests with mixed faults.

Every action ends in success or a typed error within its deadline, and the
backend performs each idempotency key's side effect exactly once, with the
runtime's at-least-once behaviour (resend the same key after a transient
error) on top of the gateway's retries and deduplication.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from voicetyped_integration.dedup import SqliteIdempotencyStore
from voicetyped_integration.executor import Action, Executor, Outcome
from voicetyped_integration.metrics import GatewayMetrics
from voicetyped_integration.registry import IntegrationRegistry
from voicetyped_specs.integration import Integration

if TYPE_CHECKING:
    from images.integration.tests.backend_server import Backend

ACTIONS = 1000
FAULT_RATE = 0.30
DEADLINE_S = 1.5
TYPED = {
    "timeout",
    "circuit_open",
    "rate_limited",
    "http_status",
    "invalid_response",
    "unavailable",
}


LAG: list[float] = []


async def _loop_lag(tick_s: float = 0.01) -> None:
    """How late the event loop wakes a 10 ms sleeper, recorded into LAG."""
    LAG.clear()
    while True:
        started = time.monotonic()
        await asyncio.sleep(tick_s)
        LAG.append(time.monotonic() - started - tick_s)


def _faults(backend: Backend, count: int, rng: random.Random) -> Counter[str]:
    fault_type = type(backend).__module__
    module = __import__(fault_type, fromlist=["Fault"])
    Fault = module.Fault  # noqa: N806 - the class from the helper module
    made: Counter[str] = Counter()
    for _ in range(count):
        if rng.random() >= FAULT_RATE:
            backend.faults.append(Fault("delay", delay_s=0.0))  # no fault
            continue
        kind = rng.choice(["503", "500-after", "reset", "reset-after", "429", "slow", "latency"])
        made[kind] += 1
        backend.faults.append(
            {
                "503": Fault("status", status=503),
                "500-after": Fault("status", status=500, after_handler=True),
                "reset": Fault("reset"),
                "reset-after": Fault("reset", after_handler=True),
                "429": Fault("throttle", retry_after_s=None),
                "slow": Fault("slow_body", delay_s=0.01, chunk_bytes=16),
                "latency": Fault("delay", delay_s=0.7),
            }[kind]
        )
    return made


async def test_chaos(backend: Backend, tmp_path: Path) -> None:
    rng = random.Random(20261124)
    made = _faults(backend, ACTIONS * 4, rng)
    backend.honor_idempotency_key = True
    integration = Integration.model_validate(
        {
            "name": "shop",
            "baseURL": backend.base_url,
            "timeoutMs": 500,
            "retry": {"maxAttempts": 4, "initialBackoffMs": 20, "maxBackoffMs": 200},
            "circuitBreaker": {"minimumCalls": 50, "failureRateThreshold": 0.9, "openSeconds": 0.5},
            "operations": {
                "charge": {"method": "POST", "path": "/orders", "expectedStatus": [201]}
            },
        }
    )
    metrics = GatewayMetrics(CollectorRegistry())
    registry = IntegrationRegistry(metrics)
    registry.add(integration)
    store = SqliteIdempotencyStore(tmp_path / "idem.db")
    await store.open()
    executor = Executor(registry, store, metrics, owner="gw-1", retention_s=3600)
    limit = asyncio.Semaphore(50)
    overruns: list[float] = []
    finals: dict[str, Outcome] = {}
    tries: Counter[int] = Counter()

    async def one(i: int) -> None:
        key = f"call-{i}:0"
        action = Action("shop", "charge", {"amount": 1000 + i, "currency": "EUR"}, key, f"call-{i}")
        async with limit:
            for attempt in range(1, 30):
                started = time.monotonic()
                outcome, _ = await executor.execute(action, started + DEADLINE_S)
                overruns.append(time.monotonic() - started - DEADLINE_S)
                assert outcome.ok or outcome.error in TYPED, outcome
                # The runtime resends transient failures with the same key (at least once).
                if outcome.ok or outcome.remembered:
                    finals[key] = outcome
                    tries[attempt] += 1
                    return
        raise AssertionError(f"{key} never settled")

    lag = asyncio.ensure_future(_loop_lag())
    try:
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(ACTIONS))), 240)
    finally:
        lag.cancel()
        await registry.close()
        await store.close()

    assert sum(made.values()) > ACTIONS * 0.8, made
    # The backend shares this test's event loop and 50 actions run at once: allow for
    # scheduling delay, and for the loop itself falling behind (a loaded machine), which is
    # not the gateway overrunning.
    stalled = max(LAG, default=0.0)
    assert max(overruns) < 0.3 + stalled, (
        f"an action overran its deadline by {max(overruns):.3f}s (the loop stalled {stalled:.3f}s)"
    )
    assert len(finals) == ACTIONS
    assert all(o.ok for o in finals.values()), Counter(o.error for o in finals.values())
    # Exactly one side effect per key: every retry was deduplicated somewhere.
    assert set(backend.side_effects) == set(finals)
    assert set(backend.side_effects.values()) == {1}
    # The faults really forced retries and resends.
    attempts = sum(o.attempts for o in finals.values())
    assert attempts > ACTIONS
    assert sum(n for t, n in tries.items() if t > 1) > 0
