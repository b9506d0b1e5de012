"""gRPC server with the standard health and reflection services and metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor

MAX_MESSAGE_BYTES = 8 * 1024 * 1024

SERVER_OPTIONS: list[tuple[str, int]] = [
    # Never share a port silently with another process (grpc defaults to SO_REUSEPORT).
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Per-call streams live for minutes: detect dead peers, allow client keepalives.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]

# A GOAWAY after max connection age never cuts a running stream: calls last minutes.
_NO_GRACE_LIMIT_MS = 2**31 - 1


def server_options(max_connection_age_s: float = 0.0) -> list[tuple[str, int]]:
    """SERVER_OPTIONS plus, when ``max_connection_age_s`` > 0, a maximum connection age:
    gRPC clients hold one long-lived connection per address, so without it a client keeps
    every new stream on the replicas it first found (a Kubernetes ClusterIP picks a pod per
    connection; a headless Service's DNS is resolved again only when a connection ends)."""
    if max_connection_age_s <= 0:
        return list(SERVER_OPTIONS)
    return [
        *SERVER_OPTIONS,
        ("grpc.max_connection_age_ms", round(max_connection_age_s * 1000)),
        ("grpc.max_connection_age_grace_ms", _NO_GRACE_LIMIT_MS),
    ]


class GrpcServer:
    """A grpc.aio server plus its health servicer.

    Health status is NOT_SERVING until :meth:`set_serving`; :meth:`begin_shutdown`
    flips every service to NOT_SERVING so clients and load balancers move away.
    """

    def __init__(
        self,
        host: str,
        port: int,
        interceptors: Sequence[_ServerInterceptor] = (),
        max_connection_age_s: float = 0.0,
    ) -> None:
        self.server = grpc.aio.server(
            interceptors=list(interceptors), options=server_options(max_connection_age_s)
        )
        # grpc-stubs predates the asyncio health servicer.
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"gRPC server could not bind {host}:{port}")
        self.service_names: list[str] = []

    def add_service(self, full_name: str) -> None:
        """Record a registered service (``package.Service``) for health and reflection."""
        self.service_names.append(full_name)

    async def start(self) -> None:
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()

    async def set_serving(self) -> None:
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def begin_shutdown(self) -> None:
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls now; give in-flight calls ``grace_s`` to finish, then cancel them."""
        await self.server.stop(grace_s)
