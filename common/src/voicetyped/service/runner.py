"""Run a ServiceApp: serve, then shut down gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable

from prometheus_client import REGISTRY, CollectorRegistry

from voicetyped.service import tracing
from voicetyped.service.app import ServiceApp
from voicetyped.service.grpc_server import GrpcServer
from voicetyped.service.http import OpsServer
from voicetyped.service.logs import configure_logging, get_logger
from voicetyped.service.metrics import ServerMetricsInterceptor, ServiceMetrics
from voicetyped.service.probes import Readiness

log = get_logger("voicetyped.service")


class ServiceRunner:
    """Owns a service's servers and lifecycle; :meth:`serve` returns when it has stopped."""

    def __init__(self, app: ServiceApp, registry: CollectorRegistry = REGISTRY) -> None:
        self.app = app
        self.metrics = ServiceMetrics(app.name, registry)
        self.readiness = Readiness(checks=dict(app.readiness_checks))
        self.stop_requested = asyncio.Event()
        self.started = asyncio.Event()
        self.grpc: GrpcServer | None = None
        self.ops: OpsServer | None = None

    def request_stop(self) -> None:
        if not self.stop_requested.is_set():
            log.info("shutdown requested")
            self.stop_requested.set()

    async def serve(self, install_signal_handlers: bool = True) -> None:
        s = self.app.settings
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        try:
            await self._start()
            await self.stop_requested.wait()
            await self._drain(s.shutdown_grace_s, s.shutdown_delay_s)
        finally:
            await self._close()
            if install_signal_handlers:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    async def _start(self) -> None:
        s = self.app.settings
        for hook in self.app.on_startup:
            await hook()
        self.grpc = GrpcServer(
            s.grpc_host,
            s.grpc_port,
            interceptors=[ServerMetricsInterceptor(self.metrics)],
            max_connection_age_s=s.grpc_max_connection_age_s,
        )
        for register in self.app.grpc_registrations:
            for name in register(self.grpc.server):
                self.grpc.add_service(name)
        for listening in self.app.on_listening:
            listening(self.grpc.port)
        self.ops = OpsServer(
            s.http_host, s.http_port, self.readiness, self.metrics.registry, self.app.http_routes
        )
        await self.grpc.start()
        await self.ops.start()
        await self.grpc.set_serving()
        self.readiness.started = True
        self.metrics.up.set(1)
        self.started.set()
        log.info(
            "service started",
            http_port=self.ops.port,
            grpc_port=self.grpc.port,
            grpc_services=self.grpc.service_names,
        )

    async def _drain(self, grace_s: float, delay_s: float) -> None:
        deadline = time.monotonic() + grace_s
        self.readiness.draining = True
        self.metrics.up.set(0)
        if self.grpc is not None:
            await self.grpc.begin_shutdown()
        log.info("draining", grace_s=grace_s, delay_s=delay_s)
        if delay_s > 0:
            await asyncio.sleep(min(delay_s, grace_s))
        remaining = max(deadline - time.monotonic(), 0.0)
        hooks = [hook(remaining) for hook in self.app.on_drain]
        if self.app.accept_during_drain:
            # The service refuses new work itself and needs new RPCs for work in progress
            # (a client reconnecting to its call): stop the server after the hooks.
            await self._wait(hooks, remaining)
            hooks = []
        stop = [self.grpc.stop(max(deadline - time.monotonic(), 0.0))] if self.grpc else []
        await self._wait([*hooks, *stop], max(deadline - time.monotonic(), 0.0))
        log.info("drained", took_s=round(grace_s - max(deadline - time.monotonic(), 0.0), 3))

    @staticmethod
    async def _wait(work: list[Awaitable[None]], timeout_s: float) -> None:
        if not work:
            return
        done, pending = await asyncio.wait(
            [asyncio.ensure_future(w) for w in work], timeout=timeout_s + 0.5
        )
        for task in pending:
            task.cancel()
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("drain step failed", exc_info=task.exception())
        if pending:
            log.warning("drain cut short at the grace period", unfinished=len(pending))

    async def _close(self) -> None:
        for hook in self.app.on_shutdown:
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook failed")
        if self.ops is not None:
            await self.ops.stop()
        if self.grpc is not None:
            await self.grpc.stop(0)
        log.info("service stopped")


def run(app: ServiceApp) -> int:
    """Configure logging and run ``app`` until SIGTERM/SIGINT; returns the exit code."""
    configure_logging(app.name, app.settings.log_level, app.settings.log_format)
    tracing.configure(app.name, app.settings.trace_file, app.settings.otlp_endpoint)
    try:
        with asyncio.Runner(loop_factory=app.loop_factory) as runner:
            runner.run(ServiceRunner(app).serve())
    except Exception:
        log.exception("service failed")
        return 1
    finally:
        tracing.shutdown()
    return 0
