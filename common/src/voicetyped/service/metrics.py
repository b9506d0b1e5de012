"""Prometheus metrics shared by every service: build info and gRPC server metrics."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info

from voicetyped import __version__

if TYPE_CHECKING:  # grpc-stubs types are generic; the runtime classes are not subscriptable
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor
    _Handler = grpc.RpcMethodHandler

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ServiceMetrics:
    """The metrics every service exports, registered once per registry."""

    def __init__(self, service: str, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.build_info = Info(
            "voicetyped_build", "voicetyped build information", registry=registry
        )
        self.build_info.info({"service": service, "version": __version__})
        self.up = Gauge(
            "voicetyped_service_ready", "1 while the service accepts new work", registry=registry
        )
        self.grpc_started = Counter(
            "voicetyped_grpc_server_started_total",
            "gRPC calls started",
            ["grpc_method"],
            registry=registry,
        )
        self.grpc_handled = Counter(
            "voicetyped_grpc_server_handled_total",
            "gRPC calls completed, by status code",
            ["grpc_method", "grpc_code"],
            registry=registry,
        )
        self.grpc_in_flight = Gauge(
            "voicetyped_grpc_server_in_flight",
            "gRPC calls in progress",
            ["grpc_method"],
            registry=registry,
        )
        self.grpc_seconds = Histogram(
            "voicetyped_grpc_server_handling_seconds",
            "gRPC call duration (streams: until the stream ends)",
            ["grpc_method"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )


class ServerMetricsInterceptor(_ServerInterceptor):
    """Counts, times and tracks in-flight gRPC calls of every kind (unary and streaming)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._m = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(method, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(method, handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _begin(self, method: str) -> float:
        self._m.grpc_started.labels(method).inc()
        self._m.grpc_in_flight.labels(method).inc()
        return time.perf_counter()

    def _end(self, method: str, started: float, context: Any, error: BaseException | None) -> None:
        code = _status_code(context, error)
        self._m.grpc_in_flight.labels(method).dec()
        self._m.grpc_handled.labels(method, code).inc()
        self._m.grpc_seconds.labels(method).observe(time.perf_counter() - started)

    def _wrap_unary(self, method: str, behavior: Any) -> Any:
        async def wrapped(request: Any, context: Any) -> Any:
            started = self._begin(method)
            error: BaseException | None = None
            try:
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    result = await result
                return result
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._end(method, started, context, error)

        return wrapped

    def _wrap_stream(self, method: str, behavior: Any) -> Any:
        async def wrapped(request: Any, context: Any) -> AsyncIterator[Any]:
            started = self._begin(method)
            error: BaseException | None = None
            try:
                result = behavior(request, context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                elif inspect.isawaitable(result):
                    await result  # the servicer writes with context.write()
                else:
                    for item in result:
                        yield item
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._end(method, started, context, error)

        return wrapped


def _status_code(context: Any, error: BaseException | None) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if error is None:
        return "OK"
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN"
