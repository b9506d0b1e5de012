"""Graceful lifecycle of a service: ready, drain on stop, bounded by the grace period."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from voicetyped.service.app import ServiceApp
from voicetyped.service.config import ServiceSettings
from voicetyped.service.grpc_client import create_channel, wait_until_serving
from voicetyped.service.runner import ServiceRunner

if TYPE_CHECKING:
    Ctx = grpc.aio.ServicerContext[float, float]
    Handler = grpc.RpcMethodHandler[float, float]
    UnaryCall = grpc.aio.UnaryUnaryMultiCallable[float, float]

SERVICE = "test.Slow"


def _float(data: bytes) -> float:
    return float(struct.unpack("!d", data)[0])


def _encode(value: float) -> bytes:
    return struct.pack("!d", value)


async def _wait(request: float, context: Ctx) -> float:
    await asyncio.sleep(request)
    return request


async def _ticks(request: float, context: Ctx) -> AsyncIterator[float]:
    for i in range(3):
        await asyncio.sleep(request)
        yield float(i)


async def _fail(request: float, context: Ctx) -> float:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad")
    raise AssertionError("unreachable")


def _register(server: grpc.aio.Server) -> list[str]:
    def unary(fn: Callable[..., Awaitable[float]]) -> Handler:
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=_float, response_serializer=_encode
        )

    handlers = {
        "Wait": unary(_wait),
        "Fail": unary(_fail),
        "Ticks": grpc.unary_stream_rpc_method_handler(
            _ticks, request_deserializer=_float, response_serializer=_encode
        ),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    return [SERVICE]


def _settings(grace_s: float, delay_s: float = 0.0) -> ServiceSettings:
    return ServiceSettings(
        http_host="127.0.0.1",
        http_port=0,
        grpc_host="127.0.0.1",
        grpc_port=0,
        shutdown_grace_s=grace_s,
        shutdown_delay_s=delay_s,
    )


async def _start(app: ServiceApp) -> tuple[ServiceRunner, asyncio.Task[None]]:
    runner = ServiceRunner(app, registry=CollectorRegistry())
    task = asyncio.create_task(runner.serve(install_signal_handlers=False))
    await asyncio.wait_for(runner.started.wait(), 10)
    return runner, task


def _stub(channel: grpc.aio.Channel, method: str) -> UnaryCall:
    return channel.unary_unary(
        f"/{SERVICE}/{method}", request_serializer=_encode, response_deserializer=_float
    )


async def test_drain_finishes_in_flight_work_and_refuses_new_work() -> None:
    drained_with: list[float] = []

    async def drain(remaining: float) -> None:
        drained_with.append(remaining)

    app = ServiceApp("t", _settings(grace_s=5, delay_s=0.5), [_register], on_drain=[drain])
    runner, task = await _start(app)
    assert runner.grpc is not None and runner.ops is not None
    target = f"127.0.0.1:{runner.grpc.port}"
    async with (
        create_channel(target) as channel,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.ops.port}") as http,
    ):
        await wait_until_serving(channel, SERVICE, timeout_s=5)
        assert (await http.get("/readyz")).status_code == 200
        in_flight = asyncio.ensure_future(_stub(channel, "Wait")(1.5, timeout=10))
        stream = channel.unary_stream(
            f"/{SERVICE}/Ticks", request_serializer=_encode, response_deserializer=_float
        )(0.4, timeout=10)
        await asyncio.sleep(0.2)
        stopped_at = time.monotonic()
        runner.request_stop()
        await asyncio.sleep(0.1)
        # During the delay: not ready anywhere, but still serving.
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["draining"] == "shutting down"
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=2
        )
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await _stub(channel, "Wait")(0.0, timeout=2) == 0.0
        await asyncio.sleep(0.6)
        # After the delay: new calls are refused while in-flight ones finish.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _stub(channel, "Wait")(0.0, timeout=2, wait_for_ready=False)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await in_flight == 1.5
        assert [tick async for tick in stream] == [0.0, 1.0, 2.0]
    await asyncio.wait_for(task, 10)
    took = time.monotonic() - stopped_at
    assert 1.2 < took < 3.0
    assert len(drained_with) == 1 and 4.0 < drained_with[0] <= 4.5
    handled = runner.metrics.registry.get_sample_value(
        "voicetyped_grpc_server_handled_total",
        {"grpc_method": f"/{SERVICE}/Wait", "grpc_code": "OK"},
    )
    assert handled == 2.0
    in_flight_now = runner.metrics.registry.get_sample_value(
        "voicetyped_grpc_server_in_flight", {"grpc_method": f"/{SERVICE}/Ticks"}
    )
    assert in_flight_now == 0.0


async def test_work_longer_than_the_grace_period_is_cut_off() -> None:
    async def stuck_drain(remaining: float) -> None:
        await asyncio.sleep(60)

    app = ServiceApp("t", _settings(grace_s=1.0), [_register], on_drain=[stuck_drain])
    runner, task = await _start(app)
    assert runner.grpc is not None
    async with create_channel(f"127.0.0.1:{runner.grpc.port}") as channel:
        slow = asyncio.ensure_future(_stub(channel, "Wait")(30.0, timeout=60))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        runner.request_stop()
        await asyncio.wait_for(task, 10)
        assert time.monotonic() - started < 2.0
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await slow
        assert cut.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)


async def test_failing_readiness_check_is_reported_by_name() -> None:
    async def backend() -> str | None:
        return "redis unreachable"

    async def broken() -> str | None:
        raise ConnectionError("x")

    app = ServiceApp(
        "t", _settings(grace_s=1), readiness_checks={"state-store": backend, "models": broken}
    )
    runner, task = await _start(app)
    assert runner.ops is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.ops.port}") as http:
        ready = await http.get("/readyz")
        assert (await http.get("/healthz")).status_code == 200
    assert ready.status_code == 503
    assert ready.json()["checks"]["state-store"] == "redis unreachable"
    assert ready.json()["checks"]["models"] == "check failed: ConnectionError"
    runner.request_stop()
    await asyncio.wait_for(task, 5)


async def test_status_codes_are_counted() -> None:
    app = ServiceApp("t", _settings(grace_s=1), [_register])
    runner, task = await _start(app)
    assert runner.grpc is not None
    async with create_channel(f"127.0.0.1:{runner.grpc.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await _stub(channel, "Fail")(0.0)
    runner.request_stop()
    await asyncio.wait_for(task, 5)
    assert (
        runner.metrics.registry.get_sample_value(
            "voicetyped_grpc_server_handled_total",
            {"grpc_method": f"/{SERVICE}/Fail", "grpc_code": "INVALID_ARGUMENT"},
        )
        == 1.0
    )


async def test_default_deadline_applies_to_unary_calls() -> None:
    app = ServiceApp("t", _settings(grace_s=1), [_register])
    runner, task = await _start(app)
    assert runner.grpc is not None
    async with create_channel(f"127.0.0.1:{runner.grpc.port}", default_timeout_s=0.3) as channel:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _stub(channel, "Wait")(5.0)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2
        assert await _stub(channel, "Wait")(0.5, timeout=3) == 0.5
    runner.request_stop()
    await asyncio.wait_for(task, 5)


async def test_wait_until_serving_times_out_on_an_absent_server() -> None:
    async with create_channel("127.0.0.1:1") as channel:
        with pytest.raises(TimeoutError, match="not serving"):
            await wait_until_serving(channel, timeout_s=0.5)


async def test_accept_during_drain_serves_new_calls_until_the_hooks_finish() -> None:
    release = asyncio.Event()
    hook_done_at: list[float] = []

    async def drain(remaining: float) -> None:
        await release.wait()  # e.g. the last call of this replica still ends
        hook_done_at.append(time.monotonic())

    app = ServiceApp(
        "t", _settings(grace_s=5), [_register], on_drain=[drain], accept_during_drain=True
    )
    runner, task = await _start(app)
    assert runner.grpc is not None
    async with create_channel(f"127.0.0.1:{runner.grpc.port}") as channel:
        await wait_until_serving(channel, SERVICE, timeout_s=5)
        runner.request_stop()
        await asyncio.sleep(0.2)
        # Draining, yet a new call (a client reconnecting to its work) is still served.
        assert await _stub(channel, "Wait")(0.05, timeout=2) == 0.05
        release.set()
        await asyncio.wait_for(task, 5)
    assert hook_done_at, "the hook ran to its end before the server stopped"
