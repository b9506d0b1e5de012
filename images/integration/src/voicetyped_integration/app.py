"""Assembles the integration service process."""

from __future__ import annotations

import asyncio
import contextlib

from voicetyped.service.app import ServiceApp
from voicetyped.service.logs import get_logger

from voicetyped_integration.admin import admin_routes
from voicetyped_integration.config import IntegrationSettings
from voicetyped_integration.dedup import open_idempotency_store
from voicetyped_integration.executor import Executor
from voicetyped_integration.grpc_service import register
from voicetyped_integration.metrics import GatewayMetrics
from voicetyped_integration.registry import IntegrationRegistry

SERVICE_NAME = "integration"

log = get_logger("voicetyped.integration")


def build_app(settings: IntegrationSettings) -> ServiceApp:
    metrics = GatewayMetrics()
    registry = IntegrationRegistry(metrics)
    store = open_idempotency_store(settings.store_url, settings.redis_password_file)
    executor = Executor(registry, store, metrics, settings.owner_id, settings.retention_s)
    background: list[asyncio.Task[None]] = []

    async def watch() -> None:
        assert settings.integrations_dir is not None
        while True:
            await asyncio.sleep(settings.integrations_poll_s)
            try:
                await registry.sync_directory(settings.integrations_dir)
            except OSError as exc:
                log.error("integrations directory unreadable", error=str(exc))

    async def startup() -> None:
        await store.open()
        if settings.integrations_dir is not None:
            await registry.sync_directory(settings.integrations_dir)
            background.append(asyncio.create_task(watch()))

    async def shutdown() -> None:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await registry.close()
        await store.close()

    async def store_ready() -> str | None:
        return await store.check()

    async def integrations_ready() -> str | None:
        return None if registry.names() else "no integration loaded"

    return ServiceApp(
        name=SERVICE_NAME,
        settings=settings,
        grpc_registrations=[register(executor)],
        readiness_checks={"idempotency-store": store_ready, "integrations": integrations_ready},
        http_routes=admin_routes(registry, settings.admin_token_file),
        on_startup=[startup],
        on_shutdown=[shutdown],
    )
