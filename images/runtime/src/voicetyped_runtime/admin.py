"""The runtime's REST/JSON admin API (served next to /healthz on the HTTP port).

- ``GET  /v1/sessions``            live calls on this replica (``?all=1``: every stored one)
- ``GET  /v1/sessions/{id}``       one call: state, variables, history, events, actions
- ``GET  /v1/dialogs``             loaded dialogs (current versions) and rejected files
- ``GET  /v1/dialogs/{name}``      one dialog: status and document
- ``PUT  /v1/dialogs/{name}``      load or replace a dialog (YAML or JSON body, UTF-8, at most
                                   MAX_DOCUMENT_BYTES: 413 beyond); live calls keep the
                                   version they started with

Session data holds transcripts: set ``admin_token_file`` so the API needs
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from voicetyped.documents import MAX_DOCUMENT_BYTES, too_large
from voicetyped.service.http import bearer_guard
from voicetyped_specs.dialog.compiled import DialogError, parse_yaml

from voicetyped_runtime.calls import CallManager
from voicetyped_runtime.dialogs import DialogRegistry
from voicetyped_runtime.state import CallState


def _summary(state: CallState) -> dict[str, object]:
    return {
        "session_id": state.session_id,
        "dialog": state.dialog,
        "dialog_hash": state.dialog_hash,
        "state": state.fsm_state,
        "caller_id": state.session.caller.caller_id,
        "turn": state.turn,
        "started_ms": state.started_ms,
        "updated_ms": state.updated_ms,
        "ended": state.ended,
    }


def admin_routes(
    calls: CallManager, registry: DialogRegistry, token_file: Path | None
) -> list[web.RouteDef]:
    guarded = bearer_guard(token_file)

    async def list_sessions(request: web.Request) -> web.Response:
        if request.query.get("all") in ("1", "true"):
            ids = await calls.store.list_live()
            return web.json_response({"sessions": ids})
        return web.json_response({"sessions": [_summary(s) for s in calls.live()]})

    async def get_session(request: web.Request) -> web.Response:
        state = await calls.get(request.match_info["session_id"])
        if state is None:
            return web.json_response({"error": "no such live session"}, status=404)
        return web.json_response(state.model_dump(mode="json"))

    async def list_dialogs(_: web.Request) -> web.Response:
        current = [v.status() for n in registry.names() if (v := registry.current(n))]
        return web.json_response({"dialogs": current, "rejected_files": registry.file_errors})

    async def get_dialog(request: web.Request) -> web.Response:
        version = registry.current(request.match_info["name"])
        if version is None:
            return web.json_response({"error": "no such dialog"}, status=404)
        return web.json_response({**version.status(), "document": version.compiled.document})

    async def put_dialog(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        source = f"PUT /v1/dialogs/{name}"
        if (request.content_length or 0) > MAX_DOCUMENT_BYTES:
            return web.json_response(
                {"error": "invalid dialog", "issues": [too_large(source)]}, status=413
            )
        try:
            # A chunked body without a length is cut by aiohttp's client_max_size (1 MiB).
            document = parse_yaml(await request.read(), source)
            if document.get("name") != name:
                return web.json_response(
                    {"error": f"document name {document.get('name')!r} does not match {name!r}"},
                    status=400,
                )
            version = await registry.load_document(document, "admin api")
        except DialogError as exc:
            return web.json_response(
                {"error": "invalid dialog", "issues": [str(i) for i in exc.issues]}, status=422
            )
        return web.json_response(version.status())

    return [
        web.get("/v1/sessions", guarded(list_sessions)),
        web.get("/v1/sessions/{session_id}", guarded(get_session)),
        web.get("/v1/dialogs", guarded(list_dialogs)),
        web.get("/v1/dialogs/{name}", guarded(get_dialog)),
        web.put("/v1/dialogs/{name}", guarded(put_dialog)),
    ]
