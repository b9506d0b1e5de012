"""IntegrationGateway over gRPC."""

from __future__ import annotations

import json
import time

import grpc
from voicetyped.service import tracing
from voicetyped.service.app import GrpcRegistration
from voicetyped.v1 import integration_pb2, integration_pb2_grpc

from voicetyped_integration.executor import Action, Executor, Outcome

tracer = tracing.tracer("voicetyped.integration")
SERVICE_NAME = "voicetyped.v1.IntegrationGateway"
DEFAULT_DEADLINE_S = 10.0
MARGIN_S = 0.02  # answer a little before the caller's deadline so the answer arrives

_R = integration_pb2.ActionResult
_OUTCOMES = {
    "timeout": _R.OUTCOME_TIMEOUT,
    "circuit_open": _R.OUTCOME_REJECTED,
    "rate_limited": _R.OUTCOME_REJECTED,
    "invalid_request": _R.OUTCOME_INVALID,
}


def to_proto(key: str, outcome: Outcome, deduplicated: bool) -> integration_pb2.ActionResult:
    return integration_pb2.ActionResult(
        idempotency_key=key,
        outcome=_R.OUTCOME_SUCCESS
        if outcome.ok
        else _OUTCOMES.get(outcome.error, _R.OUTCOME_BACKEND_ERROR),
        response_json=json.dumps(outcome.response) if outcome.ok else "",
        http_status=outcome.http_status,
        error_code=outcome.error,
        error_message=outcome.message,
        attempts=0 if deduplicated else outcome.attempts,
        deduplicated=deduplicated,
        latency_ms=0 if deduplicated else outcome.latency_ms,
    )


class IntegrationGatewayServicer(integration_pb2_grpc.IntegrationGatewayServicer):
    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    async def Execute(  # noqa: N802 - gRPC method name
        self,
        request: integration_pb2.ActionRequest,
        context: grpc.aio.ServicerContext[
            integration_pb2.ActionRequest, integration_pb2.ActionResult
        ],
    ) -> integration_pb2.ActionResult:
        remaining = context.time_remaining()
        budget = DEFAULT_DEADLINE_S if remaining is None else max(remaining - MARGIN_S, 0.0)
        try:
            payload = json.loads(request.payload_json) if request.payload_json else {}
        except json.JSONDecodeError as exc:
            payload = None
            problem = f"payload_json is not JSON: {exc.msg}"
        else:
            problem = "" if isinstance(payload, dict) else "payload_json must be a JSON object"
        if problem:
            return to_proto(
                request.idempotency_key, Outcome(False, None, "invalid_request", problem), False
            )
        assert isinstance(payload, dict)
        action = Action(
            service=request.service,
            method=request.method,
            payload=payload,
            idempotency_key=request.idempotency_key,
            session_id=request.session_id,
        )
        started = tracing.wall_ns()
        outcome, deduplicated = await self.executor.execute(action, time.monotonic() + budget)
        tracing.record(
            tracer,
            "integration.execute",
            tracing.from_metadata(context.invocation_metadata()),
            started,
            service=request.service,
            method=request.method,
            ok=outcome.ok,
            deduplicated=deduplicated,
        )
        return to_proto(request.idempotency_key, outcome, deduplicated)


def register(executor: Executor) -> GrpcRegistration:
    def add(server: grpc.aio.Server) -> list[str]:
        integration_pb2_grpc.add_IntegrationGatewayServicer_to_server(
            IntegrationGatewayServicer(executor), server
        )
        return [SERVICE_NAME]

    return add
