"""Assembles the runtime service process."""

from __future__ import annotations

import asyncio
import contextlib

from voicetyped.service.app import ServiceApp
from voicetyped.service.logs import get_logger

from voicetyped_runtime.admin import admin_routes
from voicetyped_runtime.calls import CallManager
from voicetyped_runtime.config import RuntimeSettings
from voicetyped_runtime.console.feed import CallFeeds
from voicetyped_runtime.console.routes import ConsoleRoutes, console_off_routes
from voicetyped_runtime.dialogs import DialogRegistry
from voicetyped_runtime.grpc_service import register
from voicetyped_runtime.store.factory import store_from_url

SERVICE_NAME = "runtime"
CONSOLE_PRUNE_S = 30.0

log = get_logger("voicetyped.runtime")


def build_app(settings: RuntimeSettings) -> ServiceApp:
    store = store_from_url(settings.store_url, redis_password_file=settings.redis_password_file)
    registry = DialogRegistry(settings.intent_model_dir)
    feeds = CallFeeds(settings.console.recent_calls) if settings.console.enabled else None
    calls = CallManager(settings, store, registry, feeds)
    console = (
        ConsoleRoutes(settings.console, feeds, calls, registry).routes()
        if feeds is not None
        else console_off_routes()
    )
    background: list[asyncio.Task[None]] = []

    async def watch_dialogs() -> None:
        assert settings.dialogs_dir is not None
        while True:
            await asyncio.sleep(settings.dialog_poll_s)
            try:
                await registry.sync_directory(settings.dialogs_dir)
            except OSError as exc:
                log.error("dialog directory unreadable", error=str(exc))

    async def prune_console() -> None:
        """Forget archived calls' console events once their retention passes, read or not."""
        assert feeds is not None
        while True:
            await asyncio.sleep(CONSOLE_PRUNE_S)
            feeds.prune()

    async def startup() -> None:
        await store.open()
        if settings.dialogs_dir is not None:
            await registry.sync_directory(settings.dialogs_dir)
            background.append(asyncio.create_task(watch_dialogs()))
        await calls.resume_all()
        background.append(asyncio.create_task(calls.run_lease_renewal()))
        if feeds is not None:
            background.append(asyncio.create_task(prune_console()))

    async def drain(remaining_s: float) -> None:
        await calls.drain(remaining_s)

    async def shutdown() -> None:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if feeds is not None:
            feeds.shutdown()  # ends the console's event streams
        await calls.close()
        await store.close()

    async def store_ready() -> str | None:
        return await store.check()

    async def dialogs_ready() -> str | None:
        return None if registry.names() else "no dialog loaded"

    return ServiceApp(
        name=SERVICE_NAME,
        settings=settings,
        grpc_registrations=[register(calls)],
        readiness_checks={"session-store": store_ready, "dialogs": dialogs_ready},
        http_routes=admin_routes(calls, registry, settings.admin_token_file) + console,
        on_startup=[startup],
        on_drain=[drain],
        on_shutdown=[shutdown],
    )
