"""The operational HTTP endpoints: ``/healthz``, ``/readyz``, ``/metrics``.

aiohttp serves them on the service's event loop, so ``/healthz`` answering
also proves the loop is not blocked.
"""

from __future__ import annotations

import hmac
import socket
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from voicetyped.service.probes import Readiness


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 picks a free one; read it back with getsockname())."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class OpsServer:
    """Health, readiness and metrics over HTTP; services may add routes (admin APIs)."""

    def __init__(
        self,
        host: str,
        port: int,
        readiness: Readiness,
        registry: CollectorRegistry,
        routes: list[web.RouteDef] | None = None,
    ) -> None:
        self._readiness = readiness
        self._registry = registry
        self._sock = bind_tcp(host, port)
        self.port: int = self._sock.getsockname()[1]
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/metrics", self._metrics),
                *(routes or []),
            ]
        )
        self._runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )

    async def start(self) -> None:
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        ready, checks = await self._readiness.evaluate()
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer_guard(token_file: Path | None) -> Callable[[Handler], Handler]:
    """Wrap admin handlers to require ``Authorization: Bearer <token>`` (token from a file).

    With no file the handlers are returned unchanged (no authentication).
    """
    return require_bearer(token_file.read_text().strip() if token_file else None)


def require_bearer(
    token: str | None, refusal: str = "unauthorized"
) -> Callable[[Handler], Handler]:
    """Wrap handlers to require ``Authorization: Bearer <token>`` (compared in constant time);
    otherwise 401 ``{"error": refusal}``. ``None``: the handlers are returned unchanged."""

    def guarded(handler: Handler) -> Handler:
        if token is None:
            return handler

        async def check(request: web.Request) -> web.StreamResponse:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                return web.json_response({"error": refusal}, status=401)
            return await handler(request)

        return check

    return guarded


def static_page(
    package: str, folder: str, files: Mapping[str, str], headers: Mapping[str, str]
) -> Handler:
    """A handler serving a page's files (``files``: the ``{name}`` route part -> file name in
    ``package``/``folder``), read once here rather than per request; 404 JSON for any other
    name. The content type follows the file's suffix."""
    root = resources.files(package) / folder
    pages = {
        name: ((root / file).read_bytes(), _CONTENT_TYPES[Path(file).suffix])
        for name, file in files.items()
    }

    async def serve(request: web.Request) -> web.StreamResponse:
        found = pages.get(request.match_info["name"])
        if found is None:
            return web.json_response({"error": "no such file"}, status=404)
        body, content_type = found
        return web.Response(
            body=body, content_type=content_type, charset="utf-8", headers=dict(headers)
        )

    return serve


_CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
