"""Runs call hooks through the integration gateway, at least once, until their deadline.

The same idempotency key is sent on every attempt (and after a restart), so
the gateway answers repeats from its store instead of calling the backend twice.
"""

from __future__ import annotations

import json
import time

import grpc
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_random_exponential
from voicetyped.service import tracing
from voicetyped.service.grpc_client import create_channel
from voicetyped.v1 import integration_pb2, integration_pb2_grpc

from voicetyped_runtime.engine_io import BackendAnswer, ExecuteHook

_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
_OUTCOME_CODES = {
    integration_pb2.ActionResult.OUTCOME_BACKEND_ERROR: "backend_error",
    integration_pb2.ActionResult.OUTCOME_TIMEOUT: "timeout",
    integration_pb2.ActionResult.OUTCOME_REJECTED: "rejected",
    integration_pb2.ActionResult.OUTCOME_INVALID: "invalid",
}


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _RETRYABLE


class IntegrationClient:
    def __init__(self, target: str) -> None:
        self._target = target
        self._channel: grpc.aio.Channel | None = None
        self._stub_: integration_pb2_grpc.IntegrationGatewayAsyncStub | None = None

    @property
    def _stub(self) -> integration_pb2_grpc.IntegrationGatewayAsyncStub:
        # Created on first use: a grpc.aio channel belongs to the running event loop.
        if self._stub_ is None:
            self._channel = create_channel(self._target)
            self._stub_ = integration_pb2_grpc.IntegrationGatewayStub(self._channel)
        return self._stub_

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)

    async def execute(self, session_id: str, hook: ExecuteHook) -> BackendAnswer:
        request = integration_pb2.ActionRequest(
            session_id=session_id,
            action_id=hook.action_id,
            idempotency_key=hook.key,
            service=hook.service,
            method=hook.method,
            payload_json=json.dumps(hook.payload, separators=(",", ":")),
        )
        remaining = hook.deadline_ms / 1000 - time.time()
        if remaining <= 0:
            return BackendAnswer(
                hook.key, False, None, "timeout", "deadline passed before the call"
            )
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_retryable),
                wait=wait_random_exponential(multiplier=0.1, max=2.0),
                stop=stop_after_delay(remaining),
                reraise=True,
            ):
                with attempt:
                    left = max(hook.deadline_ms / 1000 - time.time(), 0.001)
                    result = await self._stub.Execute(
                        request,
                        timeout=left,
                        wait_for_ready=True,
                        metadata=tracing.metadata(None) or None,  # the call's trace, if any
                    )
        except grpc.aio.AioRpcError as exc:
            code = "timeout" if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED else "unavailable"
            return BackendAnswer(
                hook.key, False, None, code, f"integration gateway: {exc.code().name}"
            )
        if result.outcome == integration_pb2.ActionResult.OUTCOME_SUCCESS:
            response = json.loads(result.response_json) if result.response_json else None
            return BackendAnswer(hook.key, True, response)
        code = result.error_code or _OUTCOME_CODES.get(result.outcome, "error")
        return BackendAnswer(hook.key, False, None, code, result.error_message)
