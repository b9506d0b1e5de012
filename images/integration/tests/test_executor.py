"""The gateway's action pipeline against a real HTTP backend on loopback.

Retries and their timing, no retries for unsafe calls, Retry-After, the
circuit breaker's states, rate limits, typed errors, deadlines, deduplication
and log redaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import CollectorRegistry
from voicetyped.service.logs import configure_logging
from voicetyped_integration.dedup import SqliteIdempotencyStore
from voicetyped_integration.executor import Action, Executor
from voicetyped_integration.metrics import GatewayMetrics
from voicetyped_integration.registry import IntegrationRegistry
from voicetyped_specs.integration import Integration

if TYPE_CHECKING:
    from images.integration.tests.backend_server import Backend

Build = Callable[..., Executor]


def spec(base_url: str, **overrides: Any) -> Integration:
    doc: dict[str, Any] = {
        "name": "shop",
        "baseURL": base_url,
        "timeoutMs": 1000,
        "retry": {"maxAttempts": 3, "initialBackoffMs": 50, "maxBackoffMs": 200},
        "redact": ["email", "card"],
        "operations": {
            "get_order": {
                "method": "GET",
                "path": "/orders/{order_id}",
                "expectedStatus": [200],
                "notFoundStatus": [404],
                "extract": {"status": "status", "eta": "delivery.eta_days"},
            },
            "create_order": {"method": "POST", "path": "/orders", "expectedStatus": [201]},
            "broken": {"method": "GET", "path": "/orders/{order_id}", "extract": {"x": "no.such"}},
        },
    }
    doc.update(overrides)
    return Integration.model_validate(doc)


@pytest.fixture
async def build(tmp_path: Path) -> AsyncIterator[Build]:
    made: list[tuple[IntegrationRegistry, SqliteIdempotencyStore]] = []

    async def noop() -> None:
        return None

    def make(integration: Integration, store_path: Path | None = None) -> Executor:
        metrics = GatewayMetrics(CollectorRegistry())
        registry = IntegrationRegistry(metrics)
        registry.add(integration)
        store = SqliteIdempotencyStore(store_path or tmp_path / "idem.db")
        made.append((registry, store))
        return Executor(registry, store, metrics, owner="gw-1", retention_s=3600)

    yield make
    for registry, store in made:
        await registry.close()
        await store.close()


def breaker_state(handle: Any) -> str:
    return str(handle.breaker.state.value)


async def run(ex: Executor, action: Action, budget_s: float = 5.0) -> Any:
    await ex.store.open()
    return await ex.execute(action, time.monotonic() + budget_s)


def order(order_id: str = "48213", key: str = "") -> Action:
    return Action("shop", "get_order", {"order_id": order_id}, key, "call-1")


async def test_success_extracts_fields(backend: Backend, build: Build) -> None:
    outcome, dedup = await run(build(spec(backend.base_url)), order())
    assert outcome.ok
    assert outcome.response == {"status": "shipped", "eta": 2}
    assert (outcome.http_status, outcome.attempts, dedup) == (200, 1, False)


async def test_retries_with_backoff_then_succeed(backend: Backend, build: Build) -> None:
    backend.fail_next(2, status=503)
    started = time.monotonic()
    outcome, _ = await run(build(spec(backend.base_url)), order())
    took = time.monotonic() - started
    assert outcome.ok
    assert outcome.attempts == 3
    assert len(backend.requests_to("/orders/48213")) == 3
    # Full jitter: each wait is uniform in [0, min(200, 50 * 2**(n-1))] ms.
    assert took < 0.05 + 0.1 + 0.5


async def test_gives_up_after_max_attempts_with_a_typed_error(
    backend: Backend, build: Build
) -> None:
    backend.fail_next(5, status=502)
    outcome, _ = await run(build(spec(backend.base_url)), order())
    assert (outcome.ok, outcome.error, outcome.http_status, outcome.attempts) == (
        False,
        "http_status",
        502,
        3,
    )


async def test_no_retry_for_unsafe_call_without_key(backend: Backend, build: Build) -> None:
    backend.fail_next(1, status=503, after_handler=True)
    ex = build(spec(backend.base_url))
    outcome, _ = await run(ex, Action("shop", "create_order", {"sku": "kettle"}))
    assert (outcome.error, outcome.attempts) == ("http_status", 1)
    assert backend.side_effects[None] == 1, "charged exactly once, never retried"


async def test_unsafe_call_with_key_is_retried_and_backend_dedups(
    backend: Backend, build: Build
) -> None:
    backend.honor_idempotency_key = True
    backend.reset_next(1, after_handler=True)  # charged, but the answer is lost
    ex = build(spec(backend.base_url))
    outcome, _ = await run(ex, Action("shop", "create_order", {"sku": "kettle"}, "call-1:4"))
    assert outcome.ok
    assert outcome.attempts == 2
    assert backend.side_effects["call-1:4"] == 1
    sent = backend.requests_to("/orders", "POST")
    assert {r.headers["Idempotency-Key"] for r in sent} == {"call-1:4"}


async def test_retry_after_is_honoured(backend: Backend, build: Build) -> None:
    backend.throttle_next(1, retry_after_s=1)
    started = time.monotonic()
    outcome, _ = await run(build(spec(backend.base_url)), order())
    assert outcome.ok
    assert time.monotonic() - started >= 1.0


async def test_retry_after_beyond_the_deadline_fails_fast(backend: Backend, build: Build) -> None:
    backend.throttle_next(1, retry_after_s=30)
    started = time.monotonic()
    outcome, _ = await run(build(spec(backend.base_url)), order(), budget_s=2)
    assert (outcome.error, outcome.http_status) == ("http_status", 429)
    assert time.monotonic() - started < 0.5


async def test_deadline_is_never_exceeded(backend: Backend, build: Build) -> None:
    backend.latency_s = 3.0
    started = time.monotonic()
    outcome, _ = await run(build(spec(backend.base_url, timeoutMs=10000)), order(), budget_s=0.6)
    took = time.monotonic() - started
    assert outcome.error == "timeout"
    assert took < 0.75


async def test_typed_errors(backend: Backend, build: Build) -> None:
    ex = build(spec(backend.base_url))
    assert (await run(ex, order("nope")))[0].error == "not_found"
    assert (await run(ex, Action("shop", "broken", {"order_id": "48213"})))[
        0
    ].error == "invalid_response"
    assert (await run(ex, Action("shop", "get_order", {})))[0].error == "invalid_request"
    unknown, _ = await run(ex, Action("shop", "refund", {}))
    assert unknown.error == "invalid_request"
    assert "has no operation 'refund'" in unknown.message
    backend.invalid_json_next(1)
    assert (await run(ex, order()))[0].error == "invalid_response"


async def test_circuit_breaker_opens_half_opens_and_closes(backend: Backend, build: Build) -> None:
    breaker = {
        "minimumCalls": 4,
        "failureRateThreshold": 0.5,
        "windowSeconds": 30,
        "openSeconds": 0.5,
        "halfOpenProbes": 1,
    }
    ex = build(spec(backend.base_url, retry={"maxAttempts": 1}, circuitBreaker=breaker))
    handle = ex.registry.get("shop")
    assert handle is not None
    backend.fail_next(4, status=500)
    for _ in range(4):
        assert (await run(ex, order()))[0].error == "http_status"
    assert breaker_state(handle) == "open"
    seen = len(backend.requests)
    rejected, _ = await run(ex, order())
    assert rejected.error == "circuit_open"
    assert len(backend.requests) == seen, "an open circuit sends nothing"
    await asyncio.sleep(0.55)
    assert breaker_state(handle) == "half_open"
    probe, _ = await run(ex, order())
    assert probe.ok
    assert breaker_state(handle) == "closed"
    # And a failing probe opens it again.
    backend.fail_next(4, status=500)
    for _ in range(4):
        await run(ex, order())
    await asyncio.sleep(0.55)
    backend.fail_next(1, status=500)
    assert (await run(ex, order()))[0].error == "http_status"
    assert breaker_state(handle) == "open"


async def test_rate_limits_fail_fast(backend: Backend, build: Build) -> None:
    limits = {"perCall": {"rps": 1, "burst": 2}, "maxWaitMs": 100}
    ex = build(spec(backend.base_url, rateLimit=limits))
    results = [(await run(ex, order()))[0] for _ in range(3)]
    assert [r.error for r in results] == ["", "", "rate_limited"]
    assert "perCall" in results[2].message or "per_call" in results[2].message
    other_call = Action("shop", "get_order", {"order_id": "48213"}, "", "call-2")
    assert (await run(ex, other_call))[0].ok, "limits are per call"


async def test_repeat_returns_the_stored_result(
    backend: Backend, build: Build, tmp_path: Path
) -> None:
    store = tmp_path / "restart.db"
    first, dedup = await run(build(spec(backend.base_url), store), order(key="call-9:2"))
    assert (first.ok, dedup) == (True, False)
    # A new gateway process (same store file) answers the repeat from the store.
    again, dedup = await run(build(spec(backend.base_url), store), order(key="call-9:2"))
    assert (again, dedup) == (first, True)
    assert len(backend.requests_to("/orders/48213")) == 1
    # Transient failures are not remembered: a later retry may still succeed.
    backend.fail_next(3, status=503)
    failed, _ = await run(build(spec(backend.base_url), store), order(key="call-9:3"))
    assert failed.error == "http_status"
    ok, dedup = await run(build(spec(backend.base_url), store), order(key="call-9:3"))
    assert (ok.ok, dedup) == (True, False)


async def test_logs_redact_configured_fields_and_auth(
    backend: Backend, build: Build, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("test-api-key-0123456789\n")
    backend.auth = "api_key"
    auth = {"type": "apiKey", "header": "X-API-Key", "valueFile": str(key_file)}
    ex = build(spec(backend.base_url, auth=auth))
    configure_logging("integration", "debug")
    logging.getLogger("httpx").setLevel(logging.DEBUG)
    outcome, _ = await run(
        ex,
        Action(
            "shop", "create_order", {"email": "ada@example.com", "card": "4242", "sku": "x"}, "k1"
        ),
    )
    assert outcome.ok
    out = capsys.readouterr().out
    assert "ada@example.com" not in out
    assert "4242" not in out
    assert "test-api-key-0123456789" not in out
    action = next(json.loads(line) for line in out.splitlines() if '"event": "action"' in line)
    assert action["payload"] == {"email": "[REDACTED]", "card": "[REDACTED]", "sku": "x"}


async def test_optional_extract_fields_take_their_default(backend: Backend, build: Build) -> None:
    # A legitimate answer without the field ({"status": "rejected"}) is a result, not an error.
    backend.orders["48299"] = {"id": "48299", "status": "rejected"}
    operations = spec(backend.base_url).model_dump(by_alias=True)["operations"]
    operations["get_order"]["extract"]["ready"] = "ready"
    operations["get_order"]["extractDefaults"] = {"ready": False, "eta": None}
    ex = build(spec(backend.base_url, operations=operations))
    rejected, _ = await run(ex, order("48299"))
    assert rejected.ok, rejected.message
    assert rejected.response == {"status": "rejected", "eta": None, "ready": False}
    backend.orders["48299"]["ready"] = True  # present: its value, not the default
    backend.orders["48299"]["delivery"] = {"eta_days": None}  # a present null is a value
    assert (await run(ex, order("48299")))[0].response == {
        "status": "rejected", "eta": None, "ready": True,
    }  # fmt: skip
    shipped, _ = await run(ex, order("48213"))
    assert shipped.response == {"status": "shipped", "eta": 2, "ready": False}
    # A field without a default stays required.
    del backend.orders["48299"]["status"]
    missing, _ = await run(ex, order("48299"))
    assert missing.error == "invalid_response"
    assert "response has no 'status' (nothing at 'status')" in missing.message


def test_extract_defaults_must_name_extracted_fields() -> None:
    with pytest.raises(ValueError, match=r"extractDefaults names 'redy', not extracted"):
        spec(
            "http://backend",
            operations={"get": {"path": "/x", "extract": {"ready": "ready"},
                                "extractDefaults": {"redy": False}}},
        )  # fmt: skip
