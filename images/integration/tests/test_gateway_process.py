"""The integration gateway as a real process over gRPC: typed results, deadlines, the
admin API, and deduplication that survives SIGKILL of the gateway."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import httpx
from voicetyped.v1 import integration_pb2, integration_pb2_grpc
from voicetyped_testkit.processes import ServiceProcess, eventually, free_port

if TYPE_CHECKING:
    from images.integration.tests.backend_server import Backend

R = integration_pb2.ActionResult


def integration_yaml(base_url: str) -> str:
    return f"""
name: shop
baseURL: {base_url}
timeoutMs: 3000
retry: {{maxAttempts: 2, initialBackoffMs: 20, maxBackoffMs: 50}}
operations:
  get_order:
    path: /orders/{{order_id}}
    expectedStatus: [200]
    notFoundStatus: [404]
    extract: {{status: status}}
  charge:
    method: POST
    path: /orders
    expectedStatus: [201]
"""


def _gateway(backend: Backend, tmp_path: Path, **env: str) -> tuple[ServiceProcess, int, int]:
    """The gateway process (not started) serving the shop integration on ``backend``, with
    its gRPC and HTTP ports."""
    integrations = tmp_path / "integrations"
    integrations.mkdir()
    (integrations / "shop.yaml").write_text(integration_yaml(backend.base_url))
    grpc_port, http_port = free_port(), free_port()
    gateway = ServiceProcess(
        "voicetyped_integration",
        {
            **os.environ,
            "VOICETYPED_INTEGRATIONS_DIR": str(integrations),
            "VOICETYPED_STORE_URL": f"sqlite:///{tmp_path / 'idem.db'}",
            "VOICETYPED_GRPC_HOST": "127.0.0.1",
            "VOICETYPED_GRPC_PORT": str(grpc_port),
            "VOICETYPED_HTTP_HOST": "127.0.0.1",
            "VOICETYPED_HTTP_PORT": str(http_port),
            **env,
        },
        tmp_path / "gateway.log",
    )
    return gateway, grpc_port, http_port


async def test_gateway_process(backend: Backend, tmp_path: Path) -> None:
    backend.honor_idempotency_key = False  # the gateway alone must prevent the second charge
    gateway, grpc_port, http_port = _gateway(backend, tmp_path)

    def request(
        service: str, method: str, payload: object, key: str = ""
    ) -> integration_pb2.ActionRequest:
        return integration_pb2.ActionRequest(
            session_id="call-1",
            action_id="3",
            idempotency_key=key,
            service=service,
            method=method,
            payload_json=json.dumps(payload),
        )

    try:
        gateway.start()
        await gateway.wait_ready(http_port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = integration_pb2_grpc.IntegrationGatewayStub(channel)
            charged = await stub.Execute(
                request("shop", "charge", {"amount": 12}, "call-1:3"), timeout=5
            )
            assert charged.outcome == R.OUTCOME_SUCCESS, charged
            assert (charged.http_status, charged.attempts, charged.deduplicated) == (201, 1, False)
            created = json.loads(charged.response_json)
            assert created["request"] == {"amount": 12}

            found = await stub.Execute(
                request("shop", "get_order", {"order_id": "48213"}), timeout=5
            )
            assert json.loads(found.response_json) == {"status": "shipped"}
            missing = await stub.Execute(request("shop", "get_order", {"order_id": "1"}), timeout=5)
            assert (missing.outcome, missing.error_code) == (R.OUTCOME_BACKEND_ERROR, "not_found")
            unknown = await stub.Execute(request("crm", "lookup", {}), timeout=5)
            assert (unknown.outcome, unknown.error_code) == (R.OUTCOME_INVALID, "invalid_request")
            bad = await stub.Execute(
                integration_pb2.ActionRequest(service="shop", method="charge", payload_json="[1"),
                timeout=5,
            )
            assert bad.outcome == R.OUTCOME_INVALID
            assert "not JSON" in bad.error_message

            # The gateway answers within the caller's deadline, with a typed timeout.
            backend.latency_s = 3.0
            slow = await stub.Execute(
                request("shop", "get_order", {"order_id": "48213"}), timeout=0.5
            )
            assert (slow.outcome, slow.error_code) == (R.OUTCOME_TIMEOUT, "timeout")
            backend.latency_s = 0.0

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as admin:
            listed = (await admin.get("/v1/integrations")).json()["integrations"]
            assert [(i["name"], i["breaker"]) for i in listed] == [("shop", "closed")]
            metrics = (await admin.get("/metrics")).text
            success = 'integration="shop",operation="charge",outcome="success"} 1.0'
            assert f"voicetyped_integration_actions_total{{{success}" in metrics

        # SIGKILL, restart: the repeat is answered from the store, the card is not charged again.
        gateway.kill()
        gateway.start()
        await gateway.wait_ready(http_port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = integration_pb2_grpc.IntegrationGatewayStub(channel)
            again = await stub.Execute(
                request("shop", "charge", {"amount": 12}, "call-1:3"), timeout=5
            )
        assert again.deduplicated
        assert again.outcome == R.OUTCOME_SUCCESS
        assert json.loads(again.response_json) == created
        assert backend.side_effects["call-1:3"] == 1
        assert len(backend.requests_to("/orders", "POST")) == 1
    finally:
        gateway.stop()


async def test_sigterm_lets_a_request_in_flight_finish_and_exits_0(
    backend: Backend, tmp_path: Path
) -> None:
    """A rollout while a backend call is on its way: the call is answered (the caller's turn
    is not lost), new calls are refused, the gateway exits 0 with nothing but JSON info lines."""
    gateway, grpc_port, http_port = _gateway(backend, tmp_path, VOICETYPED_SHUTDOWN_GRACE_S="10")
    lookup = integration_pb2.ActionRequest(
        session_id="call-1",
        action_id="1",
        service="shop",
        method="get_order",
        payload_json=json.dumps({"order_id": "48213"}),
    )
    try:
        gateway.start()
        await gateway.wait_ready(http_port)
        backend.delay_next(delay_s=2.0)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = integration_pb2_grpc.IntegrationGatewayStub(channel)
            answer = asyncio.ensure_future(stub.Execute(lookup, timeout=10))
            await eventually(
                lambda: backend.requests_to("/orders/48213"), 5, "the backend request", gateway
            )
            assert gateway.proc is not None
            gateway.proc.send_signal(signal.SIGTERM)
            result = await answer
        assert (result.outcome, result.http_status) == (R.OUTCOME_SUCCESS, 200), result
        code = await asyncio.to_thread(gateway.proc.wait, 15)
    finally:
        gateway.stop()
    assert code == 0, gateway.tail()
    records = [json.loads(line) for line in gateway.log.read_text().splitlines()]
    assert [r for r in records if r["level"] not in ("debug", "info")] == []
    events = [r["event"] for r in records]
    assert events[-2:] == ["drained", "service stopped"], events
    # The lookup finished while the gateway drained, not after it stopped waiting.
    assert events.index("draining") < events.index("action") < events.index("drained"), events
