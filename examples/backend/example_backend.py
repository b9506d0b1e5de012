"""The example customer backend used by `make demo` and the integration examples.

A small shop + clinic REST API on aiohttp, with API-key auth and
Idempotency-Key support (a repeated POST with the same key returns the first
response and performs nothing again), the way a well-behaved backend does.
``GET /_requests`` lists the API requests it answered (the demo shows them).

    python examples/backend/example_backend.py --port 8090 \
        --api-key-file examples/backend/demo-api-key
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ORDERS: dict[str, dict[str, Any]] = {
    "48213": {"status": "shipped", "delivery": {"eta_days": 2}, "items": ["kettle"]},
    "48214": {"status": "processing", "delivery": {"eta_days": 5}, "items": ["toaster", "mugs"]},
    "70001": {"status": "delivered", "delivery": {"eta_days": 0}, "items": ["lamp"]},
}
APPOINTMENTS: dict[str, dict[str, str]] = {
    "123456": {"when": "Thursday at 9 am", "doctor": "Dr. Osei"},
}


def build_app(api_key: str) -> web.Application:
    seen: dict[str, tuple[int, dict[str, Any]]] = {}
    ids = itertools.count(1)
    received: list[dict[str, Any]] = []  # what the demo shows as "backend calls"

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in ("/healthz", "/_requests"):
            return await handler(request)
        response = await handler(request)
        received.append(
            {
                "method": request.method,
                "path": request.path,
                "idempotency_key": request.headers.get("Idempotency-Key", ""),
                "status": response.status,
                "replayed": response.headers.get("Idempotent-Replayed") == "true",
                "at": time.time(),
            }
        )
        return response

    async def requests_seen(_: web.Request) -> web.Response:
        return web.json_response(received)

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/healthz":
            return await handler(request)
        given = request.headers.get("X-API-Key") or request.headers.get(
            "Authorization", ""
        ).removeprefix("Bearer ")
        if given != api_key:
            return web.json_response({"error": "unauthorized"}, status=401)
        return await handler(request)

    @web.middleware
    async def idempotent(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or not key:
            return await handler(request)
        if key in seen:
            status, body = seen[key]
            return web.json_response(body, status=status, headers={"Idempotent-Replayed": "true"})
        response = await handler(request)
        if isinstance(response, web.Response) and response.body is not None:
            seen[key] = (response.status, json.loads(bytes(response.body)))  # type: ignore[arg-type]
        return response

    async def get_order(request: web.Request) -> web.Response:
        order = ORDERS.get(request.match_info["order_id"])
        if order is None:
            return web.json_response({"error": "no such order"}, status=404)
        return web.json_response({"id": request.match_info["order_id"], **order})

    async def request_callback(request: web.Request) -> web.Response:
        if request.match_info["order_id"] not in ORDERS:
            return web.json_response({"error": "no such order"}, status=404)
        callback = {"id": f"cb-{next(ids)}", "scheduled_for": "today, 4 pm"}
        return web.json_response(callback, status=201)

    async def next_appointment(request: web.Request) -> web.Response:
        appointment = APPOINTMENTS.get(request.match_info["patient"])
        if appointment is None:
            return web.json_response({"error": "no appointment"}, status=404)
        return web.json_response(appointment)

    async def appointment_action(request: web.Request) -> web.Response:
        body = await request.json()
        action = request.match_info["action"]
        reply: dict[str, Any] = {"ok": True, "action": action}
        reply["appointment"] = body.get("appointment")
        if action == "reschedule":
            reply["new_slot"] = f"{body.get('preferred_day', 'Monday')} at 11 am"
        return web.json_response(reply)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(middlewares=[authenticate, record, idempotent])
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/_requests", requests_seen),  # behind the API key too
            web.get("/api/orders/{order_id}", get_order),
            web.post("/api/orders/{order_id}/callbacks", request_callback),
            web.get("/clinic/patients/{patient}/appointments/next", next_appointment),
            web.post("/clinic/appointments/{action:confirm|cancel|reschedule}", appointment_action),
        ]
    )
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--api-key-file", type=Path, required=True)
    args = parser.parse_args()
    api_key = args.api_key_file.read_text().strip()
    web.run_app(build_app(api_key), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
