"""The integration gateway's admin API (on the HTTP port next to /healthz).

- ``GET /v1/integrations``          every integration: breaker state, operations
- ``GET /v1/integrations/{name}``   one of them
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from voicetyped.service.http import bearer_guard

from voicetyped_integration.registry import IntegrationRegistry


def admin_routes(registry: IntegrationRegistry, token_file: Path | None) -> list[web.RouteDef]:
    guarded = bearer_guard(token_file)

    async def list_all(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "integrations": [h.status() for h in registry.handles.values()],
                "rejected_files": registry.file_errors,
            }
        )

    async def get_one(request: web.Request) -> web.Response:
        handle = registry.get(request.match_info["name"])
        if handle is None:
            return web.json_response({"error": "no such integration"}, status=404)
        return web.json_response(handle.status())

    return [
        web.get("/v1/integrations", guarded(list_all)),
        web.get("/v1/integrations/{name}", guarded(get_one)),
    ]
