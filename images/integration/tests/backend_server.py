"""A customer REST backend for the integration gateway's tests: real HTTP(S) on 127.0.0.1.

One :class:`Backend` per test (the ``backend`` / ``tls_backend`` fixtures of
conftest.py start and stop it). Everything is switched by setting attributes
or calling methods from the test; every request received, rejected ones
included, is kept in :attr:`Backend.requests` (:class:`Received`).

Routes
------
``GET /healthz``
    ``{"status": "ok"}``; never authenticated, never faulted.
``GET /orders/{order_id}``
    The order (see :data:`ORDERS`: status, ``delivery.eta_days``, ``items[i].id`` ...);
    404 ``{"error": "not_found"}`` for an unknown id.
``POST /orders``
    The "charge the card" endpoint, NOT idempotent: every request performs
    the side effect again, counted per ``Idempotency-Key`` in
    :attr:`Backend.side_effects` (``None`` for requests without a key) and
    answered 201 ``{"id", "status": "created", "idempotency_key", "request"}``.
    With :attr:`Backend.honor_idempotency_key` a repeated key is answered
    with the first answer (``Idempotent-Replayed: true``) and no new effect,
    as a well-behaved backend does.
``<any method> /echo`` and ``/echo/<anything>``
    200 with what arrived: ``{"method", "path" (raw, still percent-encoded),
    "query" ({name: [values]}), "headers", "json" (parsed body or null),
    "body" (text)}``.
``GET /status/{code}``
    Answers that status (``{"status": code}``; no body for 204).
``GET /cookie``
    200 with a ``Set-Cookie`` session cookie (a client must not keep it).
``POST /oauth/token``
    OAuth2 client credentials (RFC 6749 §4.4): the client authenticates with
    HTTP Basic (id and secret form-urlencoded first, §2.3.1) or with
    ``client_id``/``client_secret`` form fields; the answer is
    ``{"access_token", "token_type": "Bearer", "expires_in": token_ttl_s}``
    (no ``expires_in`` when ``token_ttl_s`` is None). Counts
    :attr:`Backend.tokens_issued`; :attr:`Backend.token_delay_s` slows it,
    :attr:`Backend.token_failure` breaks it (:data:`TokenFailure`).

Authentication of the other routes (:attr:`Backend.auth`)
------------------------------------------------------------
``"none"`` (default); ``"api_key"``: one of :attr:`Backend.api_keys` in the
header :attr:`Backend.api_key_header` (after :attr:`Backend.api_key_prefix`)
or, when :attr:`Backend.api_key_query` is set, in that query parameter;
``"bearer"``: a token this backend issued and that has not expired or been
revoked (:meth:`Backend.revoke_tokens`). Failures answer 401.

Faults
------
:attr:`Backend.latency_s` delays every faultable request (all but
``/healthz`` and ``/oauth/token``). One-shot faults queue up and each
faultable request takes the next one:

* :meth:`~Backend.fail_next`: an error status (default 503);
* :meth:`~Backend.reset_next`: the connection is reset (RST, no response);
* :meth:`~Backend.throttle_next`: 429 with ``Retry-After`` (seconds);
* :meth:`~Backend.slow_body_next`: the answer's body dripped in small chunks;
* :meth:`~Backend.invalid_json_next`: 200 with a truncated JSON body;
* :meth:`~Backend.delay_next`: an extra delay for that request only.

Status, reset and throttle faults hit before authentication and the route
run, unless ``after_handler=True``: then the route runs (its side effect
happens, e.g. the card is charged) and the fault replaces its answer, the
case where a retry without an idempotency key charges twice.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import itertools
import json
import secrets
import socket
import ssl
import struct
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote_plus

from aiohttp import web
from multidict import CIMultiDictProxy, MultiMapping

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

FaultKind = Literal["status", "reset", "throttle", "slow_body", "invalid_json", "delay"]
TokenFailure = Literal[
    "error_500",  # 500 {"error": "server_error"}
    "leaky_400",  # 400 whose error and description echo the client secret and Authorization
    "invalid_json",  # 200 with a body that is not JSON
    "no_token",  # 200 without access_token
    "reset",  # the connection is reset
]

CLIENT_ID = "voicetyped-gateway"
CLIENT_SECRET = "s3cr3t:with/special+chars=&"  # characters Basic auth must form-encode
UNFAULTED = frozenset({"/healthz", "/oauth/token"})

ORDERS: dict[str, dict[str, Any]] = {
    "48213": {
        "id": "48213",
        "status": "shipped",
        "delivery": {"eta_days": 2, "carrier": "DHL"},
        "items": [{"id": "sku-1", "name": "kettle", "qty": 1}],
        "customer": {"email": "ada@example.com"},
    },
    "48214": {
        "id": "48214",
        "status": "processing",
        "delivery": {"eta_days": 5, "carrier": None},
        "items": [
            {"id": "sku-2", "name": "toaster", "qty": 1},
            {"id": "sku-3", "name": "mugs", "qty": 4},
        ],
        "customer": {"email": "grace@example.com"},
    },
}


@dataclass
class Received:
    """One request as it arrived."""

    method: str
    path: str  # decoded, without the query
    raw_path: str  # as sent: percent-encoded, with the query
    query: MultiMapping[str]
    headers: CIMultiDictProxy[str]  # case-insensitive, as HTTP header names are
    body: bytes
    json: Any  # the parsed JSON body, or None
    form: dict[str, str]  # an application/x-www-form-urlencoded body, else {}
    client_cert_cn: str | None  # the verified client certificate's common name (mTLS)
    at: float = field(default_factory=time.monotonic)


@dataclass
class Fault:
    kind: FaultKind
    status: int = 503
    retry_after_s: float | None = 1
    delay_s: float = 0.0  # delay: the wait; slow_body: between chunks
    chunk_bytes: int = 4  # slow_body
    after_handler: bool = False


@dataclass
class Backend:
    """One backend on 127.0.0.1 (an ephemeral port); ``start`` / ``stop`` from a fixture."""

    auth: Literal["none", "api_key", "bearer"] = "none"
    api_keys: set[str] = field(default_factory=lambda: {"test-api-key-0123456789"})
    api_key_header: str = "X-API-Key"
    api_key_prefix: str = ""
    api_key_query: str | None = None  # set: the key is expected in this query parameter
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    token_ttl_s: float | None = 3600.0
    token_delay_s: float = 0.0
    token_failure: TokenFailure | None = None
    honor_idempotency_key: bool = False
    latency_s: float = 0.0
    faults: deque[Fault] = field(default_factory=deque)

    requests: list[Received] = field(default_factory=list)
    side_effects: Counter[str | None] = field(default_factory=Counter)
    tokens_issued: int = 0
    orders: dict[str, dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(ORDERS))
    port: int = 0
    scheme: str = "http"

    _tokens: dict[str, float] = field(default_factory=dict, repr=False)  # token -> expires at
    _replies: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)
    _runner: web.AppRunner | None = field(default=None, repr=False)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    # ---- lifecycle ------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth/token"

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/orders/{order_id}", self._get_order)
        app.router.add_post("/orders", self._create_order)
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_route("*", "/echo/{tail:.*}", self._echo)
        app.router.add_get("/status/{code:\\d{3}}", self._status)
        app.router.add_get("/cookie", self._cookie)
        app.router.add_post("/oauth/token", self._token)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.scheme = "https" if ssl_context is not None else "http"

    async def stop(self) -> None:
        self._stopping.set()  # ends delays and slow bodies at once
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- controls -------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 503, *, after_handler: bool = False) -> None:
        self.faults.extend(
            Fault("status", status=status, after_handler=after_handler) for _ in range(n)
        )

    def reset_next(self, n: int = 1, *, after_handler: bool = False) -> None:
        self.faults.extend(Fault("reset", after_handler=after_handler) for _ in range(n))

    def throttle_next(self, n: int = 1, retry_after_s: float | None = 1) -> None:
        self.faults.extend(
            Fault("throttle", status=429, retry_after_s=retry_after_s) for _ in range(n)
        )

    def slow_body_next(self, n: int = 1, interval_s: float = 0.05, chunk_bytes: int = 4) -> None:
        self.faults.extend(
            Fault("slow_body", delay_s=interval_s, chunk_bytes=chunk_bytes) for _ in range(n)
        )

    def invalid_json_next(self, n: int = 1) -> None:
        self.faults.extend(Fault("invalid_json") for _ in range(n))

    def delay_next(self, n: int = 1, delay_s: float = 1.0) -> None:
        self.faults.extend(Fault("delay", delay_s=delay_s) for _ in range(n))

    def revoke_tokens(self) -> None:
        """Every access token issued so far is rejected from now on."""
        self._tokens.clear()

    def requests_to(self, path: str, method: str | None = None) -> list[Received]:
        """The requests received for ``path`` (decoded, without query), optionally one method."""
        return [
            r for r in self.requests if r.path == path and (method is None or r.method == method)
        ]

    # ---- plumbing -------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        await self._record(request)
        if request.path in UNFAULTED:
            return await handler(request)
        if self.latency_s > 0:
            await self._sleep(self.latency_s)
        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault.kind == "delay":
            await self._sleep(fault.delay_s)
            fault = None
        early = fault is not None and fault.kind in ("status", "reset", "throttle")
        if fault is not None and early and not fault.after_handler:
            return await self._fault(request, fault, None)
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        response = await handler(request)
        if fault is not None:
            return await self._fault(request, fault, response)
        return response

    async def _record(self, request: web.Request) -> None:
        body = await request.read()
        parsed: Any = None
        if body:
            with contextlib.suppress(ValueError):
                parsed = json.loads(body)
        form: dict[str, str] = {}
        if request.content_type == "application/x-www-form-urlencoded":
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        cn: str | None = None
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        if isinstance(peer, dict):
            for rdn in peer.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        cn = value
        request["received"] = received = Received(
            method=request.method,
            path=request.path,
            raw_path=request.raw_path,
            query=request.query,
            headers=request.headers,
            body=body,
            json=parsed,
            form=form,
            client_cert_cn=cn,
        )
        self.requests.append(received)

    def _authenticate(self, request: web.Request) -> web.Response | None:
        if self.auth == "none":
            return None
        if self.auth == "api_key":
            if self.api_key_query is not None:
                given = request.query.get(self.api_key_query)
            else:
                header = request.headers.get(self.api_key_header)
                prefix = self.api_key_prefix
                given = header[len(prefix) :] if header and header.startswith(prefix) else None
            if given in self.api_keys:
                return None
            return web.json_response({"error": "unauthorized"}, status=401)
        authorization = request.headers.get("Authorization", "")
        token = authorization.removeprefix("Bearer ") if authorization.startswith("Bearer ") else ""
        expires_at = self._tokens.get(token)
        if expires_at is not None and time.monotonic() < expires_at:
            return None
        return web.json_response(
            {"error": "invalid_token"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )

    async def _fault(
        self, request: web.Request, fault: Fault, response: web.StreamResponse | None
    ) -> web.StreamResponse:
        if fault.kind == "status":
            return web.json_response({"error": "injected fault"}, status=fault.status)
        if fault.kind == "throttle":
            headers = {}
            if fault.retry_after_s is not None:
                headers["Retry-After"] = f"{fault.retry_after_s:g}"
            return web.json_response({"error": "rate limited"}, status=429, headers=headers)
        if fault.kind == "reset":
            return self._reset(request)
        assert isinstance(response, web.Response)
        body = bytes(response.body) if isinstance(response.body, bytes | bytearray) else b""
        if fault.kind == "invalid_json":
            cut = body[: max(1, len(body) // 2)] if body else b'{"status": "shipp'
            return web.Response(body=cut, status=200, content_type="application/json")
        # slow_body: headers at once, then the body a few bytes at a time
        slow = web.StreamResponse(
            status=response.status, headers={"Content-Type": "application/json"}
        )
        slow.content_length = len(body)
        await slow.prepare(request)
        try:
            for start in range(0, len(body), fault.chunk_bytes):
                await slow.write(body[start : start + fault.chunk_bytes])
                await self._sleep(fault.delay_s)
                if self._stopping.is_set():
                    break
        except ConnectionError:
            pass  # the client gave up (its read timeout): nothing to report
        return slow

    def _reset(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:  # linger 0: close() sends RST instead of FIN
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        # Never delivered: aiohttp finds the transport closed and drops the connection quietly.
        return web.Response(status=500)

    # ---- routes ---------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def _get_order(self, request: web.Request) -> web.StreamResponse:
        order = self.orders.get(request.match_info["order_id"])
        if order is None:
            return web.json_response({"error": "not_found"}, status=404)
        return web.json_response(order)

    async def _create_order(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key")
        if self.honor_idempotency_key and key is not None and key in self._replies:
            return web.json_response(
                self._replies[key], status=201, headers={"Idempotent-Replayed": "true"}
            )
        self.side_effects[key] += 1
        order_id = f"ord-{next(self._ids)}"
        reply = {
            "id": order_id,
            "status": "created",
            "idempotency_key": key,
            "request": _received(request).json,
        }
        self.orders[order_id] = {"id": order_id, "status": "created"}
        if key is not None:
            self._replies[key] = reply
        return web.json_response(reply, status=201)

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        received = _received(request)
        query: dict[str, list[str]] = {}
        for name, value in request.query.items():
            query.setdefault(name, []).append(value)
        return web.json_response(
            {
                "method": request.method,
                "path": request.raw_path.split("?", 1)[0],
                "query": query,
                "headers": dict(request.headers),
                "json": received.json,
                "body": received.body.decode("utf-8", "replace"),
            }
        )

    async def _status(self, request: web.Request) -> web.StreamResponse:
        code = int(request.match_info["code"])
        if code == 204:
            return web.Response(status=204)
        return web.json_response({"status": code}, status=code)

    async def _cookie(self, request: web.Request) -> web.StreamResponse:
        response = web.json_response({"status": "ok"})
        response.set_cookie("session", secrets.token_hex(8), path="/")
        return response

    async def _token(self, request: web.Request) -> web.StreamResponse:
        if self.token_delay_s > 0:
            await self._sleep(self.token_delay_s)
        form = _received(request).form
        authorization = request.headers.get("Authorization", "")
        if self.token_failure == "reset":
            return self._reset(request)
        if self.token_failure == "error_500":
            return web.json_response({"error": "server_error"}, status=500)
        if self.token_failure == "leaky_400":
            presented = form.get("client_secret") or authorization
            return web.json_response(
                {
                    "error": f"invalid_request {presented}",
                    "error_description": f"rejected {authorization} {form}",
                },
                status=400,
            )
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        client = _basic_credentials(authorization) or (
            form.get("client_id", ""),
            form.get("client_secret", ""),
        )
        if client != (self.client_id, self.client_secret):
            return web.json_response(
                {"error": "invalid_client"},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="token"'},
            )
        if self.token_failure == "invalid_json":
            return web.Response(text="<html>gateway error</html>", content_type="text/html")
        if self.token_failure == "no_token":
            return web.json_response({"token_type": "Bearer", "expires_in": 60})
        token = f"at-{secrets.token_urlsafe(24)}"
        ttl = self.token_ttl_s
        self._tokens[token] = time.monotonic() + (ttl if ttl is not None else 3600.0)
        self.tokens_issued += 1
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if ttl is not None:
            answer["expires_in"] = int(ttl) if float(ttl).is_integer() else ttl
        return web.json_response(answer, headers={"Cache-Control": "no-store"})


def _received(request: web.Request) -> Received:
    received: Received = request["received"]
    return received


def _basic_credentials(authorization: str) -> tuple[str, str] | None:
    """RFC 6749 §2.3.1: base64 of form-urlencoded id ":" form-urlencoded secret."""
    if not authorization.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(authorization[6:], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, client_secret = decoded.partition(":")
    if not sep:
        return None
    return unquote_plus(client_id), unquote_plus(client_secret)
