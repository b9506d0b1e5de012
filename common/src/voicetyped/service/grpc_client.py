"""gRPC client helpers: channels with default deadlines, retries and health waits."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Retry unary calls that failed before reaching the server (UNAVAILABLE). Streams
# are per call and are re-opened by their owners, never retried blindly.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.service_config", _SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
]


if TYPE_CHECKING:  # grpc-stubs types are generic; the runtime class is not subscriptable
    _UnaryUnaryClientInterceptor = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
else:
    _UnaryUnaryClientInterceptor = grpc.aio.UnaryUnaryClientInterceptor


class DefaultDeadlineInterceptor(_UnaryUnaryClientInterceptor):
    """Give every unary call a deadline unless the caller set one: nothing waits forever."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        if client_call_details.timeout is None:
            client_call_details = grpc.aio.ClientCallDetails(
                method=client_call_details.method,
                timeout=self._timeout_s,
                metadata=client_call_details.metadata,
                credentials=client_call_details.credentials,
                wait_for_ready=client_call_details.wait_for_ready,
            )
        return await continuation(client_call_details, request)


def create_channel(
    target: str, *, default_timeout_s: float = 5.0, round_robin: bool = False
) -> grpc.aio.Channel:
    """An insecure channel (in-cluster traffic; mTLS is the service mesh's job). With
    ``round_robin`` calls go to each address the target resolves to in turn (gRPC's default
    keeps to the first that connects)."""
    options = CHANNEL_OPTIONS + ([("grpc.lb_policy_name", "round_robin")] if round_robin else [])
    return grpc.aio.insecure_channel(
        target,
        options=options,
        interceptors=cast(Any, [DefaultDeadlineInterceptor(default_timeout_s)]),
    )


async def wait_until_serving(
    channel: grpc.aio.Channel, service: str = "", *, timeout_s: float = 30.0
) -> None:
    """Poll the standard health service until ``service`` is SERVING or time runs out."""
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"gRPC service {service!r} not serving after {timeout_s}s: {last}")
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=min(remaining, 1.0)
            )
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
            last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.aio.AioRpcError as exc:
            last = f"{exc.code().name}: {exc.details()}"
        await asyncio.sleep(min(0.1, max(remaining, 0)))
