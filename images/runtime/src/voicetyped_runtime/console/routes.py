"""The console's HTTP routes on the runtime's HTTP port. Read-only: GET only.

- ``GET /console/``                       the page (static HTML, CSS, JS; no data in them)
- ``GET /v1/console/calls``               calls listed: live here, recently ended, and the
                                          store's live calls driven by other replicas
- ``GET /v1/console/calls/{id}``          one call: summary, events so far, its dialog's graph
- ``GET /v1/console/calls/{id}/events``   that call's events as Server-Sent Events (backlog
                                          first), ending when the call ends or is dropped
- ``GET /v1/console/events``              the call list's changes as Server-Sent Events
- ``GET /v1/console/graphs/{version}``    a dialog version's graph

With ``console.token_file`` every ``/v1/console`` route needs ``Authorization: Bearer <token>``
(the page sends it with fetch(), also for the event streams); a wrong or missing one is a 401.
The console off: every route answers 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import web
from pydantic import JsonValue
from voicetyped.service.http import bearer_guard, static_page
from voicetyped.service.logs import get_logger

from voicetyped_runtime.calls import CallManager
from voicetyped_runtime.config import ConsoleSettings
from voicetyped_runtime.console.feed import CallFeeds, Event, Subscription, mask
from voicetyped_runtime.console.graph import dialog_graph
from voicetyped_runtime.dialogs import DialogRegistry
from voicetyped_runtime.state import CallState
from voicetyped_runtime.store.base import StoreError

log = get_logger("voicetyped.runtime.console")

HEARTBEAT_S = 15.0
ELSEWHERE_MAX = 50
"""Calls of other replicas read from the store per listing (each is one store read)."""
STATIC = {
    "": "index.html",
    "index.html": "index.html",
    "console.js": "console.js",
    "console.css": "console.css",
}
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def console_off_routes() -> list[web.RouteDef]:
    async def off(_: web.Request) -> web.Response:
        return web.json_response(
            {"error": "the console is off (VOICETYPED_CONSOLE__ENABLED=true turns it on)"},
            status=404,
        )

    return [web.get("/console{tail:.*}", off), web.get("/v1/console{tail:.*}", off)]


class ConsoleRoutes:
    def __init__(
        self,
        settings: ConsoleSettings,
        feeds: CallFeeds,
        calls: CallManager,
        registry: DialogRegistry,
    ) -> None:
        self.settings = settings
        self.feeds = feeds
        self.calls = calls
        self.registry = registry
        self.page = static_page("voicetyped_runtime.console", "static", STATIC, _HEADERS)
        self._graphs: dict[str, JsonValue] = {}

    def routes(self) -> list[web.RouteDef]:
        guarded = bearer_guard(self.settings.token_file)
        return [
            web.get("/console", self.to_page),
            web.get("/console/{name:[a-z.]*}", self.page),
            web.get("/v1/console/calls", guarded(self.list_calls)),
            web.get("/v1/console/calls/{session_id}", guarded(self.get_call)),
            web.get("/v1/console/calls/{session_id}/events", guarded(self.call_events)),
            web.get("/v1/console/events", guarded(self.list_events)),
            web.get("/v1/console/graphs/{version}", guarded(self.get_graph)),
            web.get("/v1/console{tail:.*}", guarded(self.unknown)),
        ]

    # -- the page --

    async def to_page(self, _: web.Request) -> web.Response:
        raise web.HTTPFound("/console/")

    async def unknown(self, _: web.Request) -> web.Response:
        return web.json_response({"error": "no such console resource"}, status=404)

    # -- JSON --

    async def list_calls(self, _: web.Request) -> web.Response:
        return self._json(
            {
                "calls": list[JsonValue](self.feeds.summaries()),
                "elsewhere": await self._elsewhere(),
                "recent_calls": self.settings.recent_calls,
                "masked": self.settings.mask_callers,
            }
        )

    async def get_call(self, request: web.Request) -> web.Response:
        feed = self.feeds.get(request.match_info["session_id"])
        if feed is None:
            return web.json_response({"error": "no such call on this replica"}, status=404)
        return self._json(
            {
                "call": dict(feed.summary),
                "events": list[JsonValue](feed.events),
                "graph": self._graph(str(feed.summary["version"])),
            }
        )

    async def get_graph(self, request: web.Request) -> web.Response:
        graph = self._graph(request.match_info["version"])
        if graph is None:
            return web.json_response({"error": "no such dialog version"}, status=404)
        return self._json(graph)

    # -- event streams --

    async def call_events(self, request: web.Request) -> web.StreamResponse:
        feed = self.feeds.get(request.match_info["session_id"])
        if feed is None:
            return web.json_response({"error": "no such call on this replica"}, status=404)
        if not feed.has_data:  # ended and dropped: the stream has nothing to say
            dropped: Event = {"kind": "dropped", "note": feed.summary["note"]}
            return await self._stream(request, None, [dropped])
        if feed.summary["status"] != "live":
            return await self._stream(request, None, [*feed.events, {"kind": "closed"}])
        sub = feed.subscribe()
        try:
            return await self._stream(request, sub, sub.backlog)
        finally:
            feed.topic.unsubscribe(sub)

    async def list_events(self, request: web.Request) -> web.StreamResponse:
        sub = self.feeds.subscribe_list()
        try:
            return await self._stream(request, sub, [{"kind": "hello"}, *sub.backlog])
        finally:
            self.feeds.list_topic.unsubscribe(sub)

    async def _stream(
        self, request: web.Request, sub: Subscription | None, backlog: list[Event]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                **_HEADERS,
                "Content-Type": "text/event-stream",
                "X-Accel-Buffering": "no",  # proxies: pass each event on at once
            }
        )
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):
            for event in backlog:
                await response.write(_sse(event))
            while sub is not None:
                try:
                    item = await asyncio.wait_for(sub.queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    await response.write(b": heartbeat\n\n")
                    continue
                if item is None:
                    break
                await response.write(_sse(item))
                if item["kind"] == "overflow":
                    break
        return response

    # -- helpers --

    def _graph(self, version_hash: str) -> JsonValue:
        graph = self._graphs.get(version_hash)
        if graph is None:
            version = self.registry.version(version_hash)
            if version is None:
                return None
            graph = dialog_graph(version.compiled)
            if len(self._graphs) >= 64:
                self._graphs.pop(next(iter(self._graphs)))
            self._graphs[version_hash] = graph
        return graph

    async def _elsewhere(self) -> list[JsonValue]:
        """Live calls in the shared store that another replica drives: their stored summary."""
        here = set(self.feeds.live)
        found: list[JsonValue] = []
        try:
            ids = [i for i in await self.calls.store.list_live() if i not in here]
            for sid in ids[:ELSEWHERE_MAX]:
                document = await self.calls.store.load(sid)
                if document is None:
                    continue
                state = CallState.model_validate_json(document)
                found.append(self._stored_summary(state))
        except (StoreError, ValueError) as exc:
            log.warning("console: other replicas' calls unreadable", error=str(exc))
        return found

    def _stored_summary(self, state: CallState) -> dict[str, JsonValue]:
        caller = state.session.caller.caller_id
        return {
            "session_id": state.session_id,
            "caller": mask(caller) if self.settings.mask_callers else caller,
            "dialog": state.dialog,
            "version": state.dialog_hash,
            "state": state.fsm_state,
            "started_ms": state.started_ms,
            "turn": state.turn,
            "status": "elsewhere",
        }

    @staticmethod
    def _json(body: JsonValue) -> web.Response:
        return web.json_response(body, headers=_HEADERS)


def _sse(event: Event) -> bytes:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()
