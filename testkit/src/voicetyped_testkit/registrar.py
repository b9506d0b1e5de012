"""A small SIP registrar on UDP for the media gateway's trunk tests: a carrier's registrar as a
real peer on loopback, written independently of the gateway's SIP code (its own parsing, its own
digest check).

It challenges every REGISTER without credentials (401, ``Digest`` with a fresh nonce,
``qop="auth"``, MD5 or SHA-256), checks the answer (RFC 2617/7616: user, realm, a nonce it
issued, the response hash), grants at most ``grant_s`` seconds, answers ``Expires: 0`` by removing
the binding, answers OPTIONS 200, and records everything it was sent. ``script`` makes the next
REGISTERs get a given status instead (403, 503 with Retry-After...). :meth:`restart` is a
registrar process restarting: same address, bindings and nonces forgotten.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_PARAM = re.compile(r'([A-Za-z-]+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')
_HASH = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


@dataclass
class Message:
    first: str
    headers: list[tuple[str, str]]

    @classmethod
    def parse(cls, data: bytes) -> Message:
        head = data.decode("utf-8", "replace").split("\r\n\r\n", 1)[0]
        lines = head.split("\r\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        return cls(lines[0], headers)

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    def get(self, name: str) -> str:
        found = self.all(name)
        return found[0] if found else ""

    @property
    def method(self) -> str:
        return self.first.split(" ", 1)[0]

    @property
    def uri(self) -> str:
        return self.first.split(" ")[1]


@dataclass
class Received:
    """One request as the registrar saw it, and what it answered."""

    at: float
    method: str
    source: tuple[str, int]
    contact: str
    expires: int | None
    authorized: bool
    status: int = 0


@dataclass
class CarrierRegistrar:
    users: dict[str, str]
    host: str = "127.0.0.1"
    port: int = 0
    realm: str = "carrier.test"
    grant_s: int = 3
    algorithm: str = "MD5"
    script: list[int] = field(default_factory=list)
    """Statuses for the next REGISTERs (one each, before any challenge), then normal again."""
    retry_after_s: int | None = None
    received: list[Received] = field(default_factory=list)
    bindings: dict[str, float] = field(default_factory=dict)
    """Bound contact URI -> when the binding expires (time.monotonic())."""
    _nonces: set[str] = field(default_factory=set)
    _transport: asyncio.DatagramTransport | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, self.port)
        )
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def restart(self) -> None:
        """As a registrar process restarting: bindings and issued nonces are gone."""
        self.stop()
        self.bindings.clear()
        self._nonces.clear()
        await self.start()

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"

    def registers(self, **match: Any) -> list[Received]:
        return [
            r
            for r in self.received
            if r.method == "REGISTER" and all(getattr(r, k) == v for k, v in match.items())
        ]

    def bound(self) -> list[str]:
        now = time.monotonic()
        return [c for c, until in self.bindings.items() if until > now]

    async def wait_for(self, check: Callable[[], Any], timeout_s: float, what: str) -> Any:
        """Until ``check()`` is truthy after something arrived (or now); fails naming ``what``."""
        try:
            async with asyncio.timeout(timeout_s):
                while not (value := check()):
                    self._changed.clear()
                    await self._changed.wait()
                return value
        except TimeoutError:
            raise AssertionError(
                f"registrar: timed out after {timeout_s}s waiting for {what}; "
                f"received {self.received}"
            ) from None

    # -- the registrar -----------------------------------------------------------------------

    def handle(self, data: bytes, source: tuple[str, int]) -> None:
        if not data.strip() or data.startswith(b"SIP/2.0"):
            return
        request = Message.parse(data)
        contact = request.get("contact").strip()
        uri = contact[contact.find("<") + 1 : contact.find(">")] if "<" in contact else contact
        expires = _int(request.get("expires"))
        for param in contact.split(">", 1)[-1].split(";"):
            if param.strip().startswith("expires="):
                expires = _int(param.split("=", 1)[1])
        record = Received(time.monotonic(), request.method, source, uri, expires, False)
        self.received.append(record)
        if request.method == "OPTIONS":
            record.status = self._reply(request, source, 200, "OK")
        elif request.method != "REGISTER":
            record.status = self._reply(request, source, 405, "Method Not Allowed")
        elif self.script:
            status = self.script.pop(0)
            extra = [f"Retry-After: {self.retry_after_s}"] if self.retry_after_s else []
            record.status = self._reply(request, source, status, _REASONS[status], extra)
        elif not self._authorized(request):
            nonce = secrets.token_hex(16)
            self._nonces.add(nonce)
            challenge = (
                f'WWW-Authenticate: Digest realm="{self.realm}", nonce="{nonce}", '
                f'algorithm={self.algorithm}, qop="auth"'
            )
            record.status = self._reply(request, source, 401, "Unauthorized", [challenge])
        else:
            record.authorized = True
            if expires == 0:
                self.bindings.pop(uri, None)
                record.status = self._reply(request, source, 200, "OK")
            else:
                granted = min(expires if expires is not None else 3600, self.grant_s)
                self.bindings[uri] = time.monotonic() + granted
                record.status = self._reply(
                    request, source, 200, "OK", [f"Contact: <{uri}>;expires={granted}"]
                )
        self._changed.set()

    def _authorized(self, request: Message) -> bool:
        header = request.get("authorization")
        if not header.lower().startswith("digest "):
            return False
        params = {m[0].lower(): m[1] or m[2] for m in _PARAM.findall(header[7:])}
        password = self.users.get(params.get("username", ""))
        digest = _HASH.get(params.get("algorithm", "MD5").upper())
        nonce = params.get("nonce", "")
        if password is None or digest is None or nonce not in self._nonces:
            return False
        if params.get("realm") != self.realm or params.get("uri") != request.uri:
            return False

        def h(text: str) -> str:
            return digest(text.encode()).hexdigest()

        ha1 = h(f"{params['username']}:{self.realm}:{password}")
        ha2 = h(f"REGISTER:{params['uri']}")
        if params.get("qop") != "auth":
            return False
        expected = h(f"{ha1}:{nonce}:{params.get('nc')}:{params.get('cnonce')}:auth:{ha2}")
        return secrets.compare_digest(expected, params.get("response", ""))

    def _reply(
        self,
        request: Message,
        source: tuple[str, int],
        status: int,
        reason: str,
        extra: list[str] | None = None,
    ) -> int:
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"Via: {v}" for v in request.all("via")]
        to = request.get("to")
        lines += [
            f"From: {request.get('from')}",
            f"To: {to}" if "tag=" in to else f"To: {to};tag={secrets.token_hex(4)}",
            f"Call-ID: {request.get('call-id')}",
            f"CSeq: {request.get('cseq')}",
            *(extra or []),
            "Server: voicetyped-testkit-registrar",
            "Content-Length: 0",
        ]
        if self._transport is not None:
            self._transport.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), source)
        return status


_REASONS = {
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    423: "Interval Too Brief",
    500: "Server Internal Error",
    503: "Service Unavailable",
}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, registrar: CarrierRegistrar) -> None:
        self.registrar = registrar

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.registrar.handle(data, (str(addr[0]), int(addr[1])))
