"""Run one action against a backend: dedup, rate limit, breaker, retries, auth, extraction.

Order of the checks, and why:

1. **Deduplication** by idempotency key first: a repeat gets the stored result
   and costs the backend nothing, even while its breaker is open.
2. **Rate limits** (per integration, per call), waiting at most ``maxWaitMs``.
3. **Circuit breaker**: an open circuit fails fast instead of adding load.
4. **Attempts** with full-jitter backoff on connect errors, timeouts, 5xx and
   429 (honouring Retry-After), only for idempotent operations or when an
   idempotency key is sent, and never past the caller's deadline. A 401 makes
   OAuth2 fetch a new token and try once more.

Final results (success, not found, a client error, an unusable response) are
remembered for the retention period; transient failures (timeouts, 5xx after
retries, open circuit, rate limit) are not, so a later retry can still succeed.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from pydantic import JsonValue
from voicetyped.service.logs import get_logger
from voicetyped_specs.integration import Operation

from voicetyped_integration.auth import AuthError
from voicetyped_integration.dedup import IdempotencyStore
from voicetyped_integration.limits import RateLimited
from voicetyped_integration.metrics import GatewayMetrics
from voicetyped_integration.registry import IntegrationHandle, IntegrationRegistry
from voicetyped_integration.requests import InvalidResponse, PayloadError, build_request, extract
from voicetyped_integration.retry import may_retry, next_delay_s, retryable_status

log = get_logger("voicetyped.integration")

MIN_ATTEMPT_S = 0.01  # not worth starting an attempt with less time than this
BOOKKEEPING_S = 0.05  # kept back from the deadline for the idempotency store's write
REMEMBERED = frozenset({"", "not_found", "http_status", "invalid_response", "invalid_request"})


@dataclass(frozen=True)
class Action:
    service: str
    method: str
    payload: dict[str, JsonValue]
    idempotency_key: str = ""
    session_id: str = ""


@dataclass(frozen=True)
class Outcome:
    """An action's result. ``error`` is empty on success, else the error kind:
    timeout, circuit_open, rate_limited, http_status, invalid_response, not_found,
    invalid_request, unavailable, auth."""

    ok: bool
    response: JsonValue = None
    error: str = ""
    message: str = ""
    http_status: int = 0
    attempts: int = 0
    latency_ms: int = 0

    @property
    def remembered(self) -> bool:
        """Whether a repeat of this action should get this result without calling again."""
        if self.error == "http_status":
            return 400 <= self.http_status < 500 and not retryable_status(self.http_status)
        return self.error in REMEMBERED

    def dumps(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def loads(cls, data: bytes) -> Outcome:
        return cls(**json.loads(data))


def redact(value: Any, fields: frozenset[str]) -> Any:
    """``value`` with every key named in ``fields`` masked, at any depth (for logs)."""
    if isinstance(value, dict):
        return {k: "[REDACTED]" if k in fields else redact(v, fields) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, fields) for v in value]
    return value


def _fail(error: str, message: str, **kw: Any) -> Outcome:
    return Outcome(False, None, error, message, **kw)


class Executor:
    def __init__(
        self,
        registry: IntegrationRegistry,
        store: IdempotencyStore,
        metrics: GatewayMetrics,
        owner: str,
        retention_s: float,
    ) -> None:
        self.registry = registry
        self.store = store
        self.metrics = metrics
        self.owner = owner
        self.retention_s = retention_s

    async def execute(self, action: Action, deadline: float) -> tuple[Outcome, bool]:
        """The outcome, and whether it came from the store (``deadline``: monotonic s)."""
        handle = self.registry.get(action.service)
        if handle is None:
            known = ", ".join(self.registry.names()) or "none"
            return _fail(
                "invalid_request", f"no integration {action.service!r} (loaded: {known})"
            ), False
        operation = handle.spec.operations.get(action.method)
        if operation is None:
            known = ", ".join(handle.spec.operations)
            return _fail(
                "invalid_request",
                f"integration {action.service!r} has no operation {action.method!r} (has: {known})",
            ), False
        if not action.idempotency_key:
            outcome = await self._run(handle, action.method, operation, action, deadline)
            self._count(action, outcome)
            return outcome, False

        key = f"{action.service}:{action.method}:{action.idempotency_key}"
        lease_s = max(deadline - time.monotonic(), 0) + 5.0
        begin = await self.store.begin(key, self.owner, lease_s)
        if begin.status == "in_progress":
            # The same action is running elsewhere (a retry that overtook the first try):
            # wait for its result rather than calling the backend a second time.
            begin = await self.store.wait(key, max(deadline - time.monotonic(), 0))
            if begin.status == "new":
                begin = await self.store.begin(key, self.owner, lease_s)
        if begin.status == "done":
            assert begin.result is not None
            self.metrics.deduplicated.labels(action.service).inc()
            return Outcome.loads(begin.result), True
        if begin.status == "in_progress":
            return _fail("timeout", "the same action is still in progress elsewhere"), False
        try:
            work_deadline = deadline - BOOKKEEPING_S  # leave time to store the result
            outcome = await self._run(handle, action.method, operation, action, work_deadline)
        except BaseException:
            await asyncio.shield(self.store.abandon(key, self.owner))
            raise
        if outcome.remembered:
            await self.store.complete(key, self.owner, outcome.dumps(), self.retention_s)
        else:
            await self.store.abandon(key, self.owner)
        self._count(action, outcome)
        return outcome, False

    def _count(self, action: Action, outcome: Outcome) -> None:
        self.metrics.actions.labels(action.service, action.method, outcome.error or "success").inc()
        handle = self.registry.get(action.service)
        hidden = frozenset(handle.spec.redact) if handle else frozenset()
        log.info(
            "action",
            integration=action.service,
            operation=action.method,
            key=action.idempotency_key,
            session_id=action.session_id,
            outcome=outcome.error or "success",
            http_status=outcome.http_status,
            attempts=outcome.attempts,
            latency_ms=outcome.latency_ms,
            error=outcome.message,
            payload=redact(action.payload, hidden),
            response=redact(outcome.response, hidden),
        )

    async def _run(
        self, handle: IntegrationHandle, name: str, op: Operation, action: Action, deadline: float
    ) -> Outcome:
        started = time.monotonic()

        def done(outcome: Outcome) -> Outcome:
            took = int((time.monotonic() - started) * 1000)
            return Outcome(**{**asdict(outcome), "latency_ms": took})

        try:
            await handle.limiter.acquire(action.session_id or "-")
        except RateLimited as exc:
            return done(_fail("rate_limited", str(exc)))
        permit = handle.breaker.allow()
        if permit is None:
            wait = handle.breaker.retry_after_s()
            return done(
                _fail(
                    "circuit_open", f"circuit open for {handle.spec.name!r}; retry in {wait:.1f}s"
                )
            )
        healthy: bool | None = None
        try:
            outcome, healthy = await self._attempts(handle, name, op, action, deadline)
            return done(outcome)
        finally:
            if healthy is None:
                permit.release()
            else:
                permit.record(healthy)

    async def _attempts(
        self, handle: IntegrationHandle, name: str, op: Operation, action: Action, deadline: float
    ) -> tuple[Outcome, bool | None]:
        """Returns the outcome and the backend's health for the breaker (None: no signal)."""
        spec = handle.spec
        timeout_s = (op.timeout_ms or spec.timeout_ms) / 1000
        has_key = bool(action.idempotency_key)
        attempts = 0
        reauthenticated = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining < MIN_ATTEMPT_S:
                return _fail("timeout", "deadline reached", attempts=attempts), (
                    None if attempts == 0 else False
                )
            try:
                request = build_request(
                    handle.client, name, op, action.payload, action.idempotency_key or None
                )
                await handle.auth.apply(request)
            except PayloadError as exc:
                return _fail("invalid_request", str(exc), attempts=attempts), None
            except AuthError as exc:
                return _fail("auth", str(exc), attempts=attempts), None
            attempts += 1
            self.metrics.attempts.labels(spec.name, name).inc()
            retry_after: str | None = None
            t0 = time.perf_counter()
            budget = min(timeout_s, remaining)
            try:
                # httpx's timeouts are per read: a body dripping in slowly would never trip
                # them, so the whole exchange also runs under one overall timeout.
                request.extensions["timeout"] = httpx.Timeout(budget).as_dict()
                async with asyncio.timeout(budget):
                    response = await handle.client.send(request)
                    await response.aread()
            except (httpx.TimeoutException, TimeoutError):
                failure = _fail(
                    "timeout",
                    f"no answer within {budget:.2f}s",
                    attempts=attempts,
                )
            except httpx.TransportError as exc:
                failure = _fail(
                    "unavailable", f"{type(exc).__name__}: connection failed", attempts=attempts
                )
            else:
                self.metrics.latency.labels(spec.name, name).observe(time.perf_counter() - t0)
                status = response.status_code
                if (
                    status == 401
                    and not reauthenticated
                    and await handle.auth.on_unauthorized(request)
                ):
                    reauthenticated = True
                    continue
                if status in op.expected_status:
                    try:
                        return Outcome(
                            True, extract(op, response), http_status=status, attempts=attempts
                        ), True
                    except InvalidResponse as exc:
                        return _fail(
                            "invalid_response", str(exc), http_status=status, attempts=attempts
                        ), False
                if status in op.not_found_status:
                    return _fail(
                        "not_found",
                        f"{spec.name}.{name}: not found",
                        http_status=status,
                        attempts=attempts,
                    ), True
                if not retryable_status(status):
                    return _fail(
                        "http_status",
                        f"{spec.name}.{name}: HTTP {status}",
                        http_status=status,
                        attempts=attempts,
                    ), True
                failure = _fail(
                    "http_status",
                    f"{spec.name}.{name}: HTTP {status}",
                    http_status=status,
                    attempts=attempts,
                )
                retry_after = response.headers.get("Retry-After")
            if not may_retry(op.is_idempotent, has_key):
                return failure, False
            delay = next_delay_s(
                attempts,
                spec.retry,
                retry_after,
                deadline - time.monotonic(),
                reserve_s=MIN_ATTEMPT_S,
            )
            if delay is None:
                return failure, False
            await asyncio.sleep(delay)
