"""aiosipua's UDP and TCP transports, and TLS on the TCP one, with :mod:`.gate` and
:mod:`.validate` in front of the parser.

The scanner and flood defence (:class:`~.gate.SipGate`) sees every message first: a banned
source's is dropped before anything but its source address is looked at (over TCP its
connections are closed), and a request over its source's rate gets 503 with Retry-After.
Every incoming request is then checked; a bad one is answered here (or dropped when it cannot
be answered) and never reaches the UAS, so the gateway keeps serving whatever it receives.
Requests that pass are normalized for the stack: a multipart/mixed body is reduced to its
application/sdp part (the only part a UAS acts on).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosipua import SipRequest, SipResponse, TcpSipTransport, UdpSipTransport

from voicetyped_media.sip.gate import SipGate
from voicetyped_media.sip.responses import error_response
from voicetyped_media.sip.validate import Invalid, Parsed, Problem, body_of, check_request, parse

log = logging.getLogger(__name__)

RejectHook = Callable[[Problem, tuple[str, int]], None]
_BOUNDARY = re.compile(r'boundary\s*=\s*"?([^";]+)"?', re.IGNORECASE)


def sdp_from_multipart(content_type: str, body: bytes) -> bytes | None:
    """The application/sdp part of a multipart/mixed body (RFC 2046), or None."""
    found = _BOUNDARY.search(content_type)
    if found is None:
        return None
    delimiter = b"--" + found.group(1).strip().encode()
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        if not content:
            head, _, content = part.lstrip(b"\n").partition(b"\n\n")
        if b"application/sdp" in head.lower():
            return content.rstrip(b"\r\n") + b"\r\n"
    return None


def normalize(data: bytes, parsed: Parsed) -> bytes:
    """The request as the stack should see it (see the module doc)."""
    content_type = parsed.headers.first("content-type") or ""
    if not content_type.lower().startswith("multipart/mixed"):
        return data
    sdp = sdp_from_multipart(content_type, body_of(parsed))
    if sdp is None:
        return data
    head = data.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in data else data.split(b"\n\n", 1)[0]
    lines = [
        line
        for line in head.replace(b"\r\n", b"\n").split(b"\n")
        if not line.lower().startswith((b"content-type", b"content-length", b"c:", b"l:"))
    ]
    lines += [b"Content-Type: application/sdp", b"Content-Length: %d" % len(sdp)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + sdp


def is_request(data: bytes) -> bool:
    """Whether a message is a request, from its first line alone."""
    return not data.lstrip(b"\r\n")[:4].upper().startswith(b"SIP/")


def _answer(data: bytes, problem: Problem, user_agent: str | None) -> bytes | None:
    """The stateless answer to a request refused before it was checked."""
    try:
        parsed: Parsed | None = parse(data)
    except Invalid as exc:
        parsed = exc.parsed
    return error_response(parsed, problem, user_agent) if parsed is not None else None


@dataclass
class _Guard:
    user_agent: str | None = None
    on_reject: RejectHook | None = None
    gate: SipGate | None = None

    def dropped(self, source: str) -> bool:
        """Whether ``source`` is banned (counted as a refusal)."""
        return self.gate is not None and self.gate.dropped(source)

    def banned(self, source: str) -> bool:
        """Whether ``source`` is banned (not counted: asked after :meth:`screen`)."""
        return self.gate is not None and self.gate.defence.banned(source)

    def screen(self, data: bytes, addr: tuple[str, int]) -> tuple[bytes | None, bytes | None]:
        """(data for the stack, or None) and (an error response to send back, or None)."""
        if self.dropped(addr[0]):
            return None, None  # banned: nothing of it is read
        if not data.strip():
            return None, None  # keep-alive (RFC 5626 CRLF ping)
        if self.gate is not None and is_request(data):
            refused = self.gate.request(addr[0])
            if refused is not None:
                if refused.problem is None:
                    return None, None
                return None, _answer(data, refused.problem, self.user_agent)
        parsed, problem = check_request(data)
        if problem is None:
            return (
                normalize(data, parsed) if parsed is not None and parsed.is_request else data
            ), None
        if self.on_reject is not None:
            self.on_reject(problem, addr)
        log.info(
            "SIP request refused",
            extra={
                "status": problem.status,
                "detail": problem.detail,
                "peer": f"{addr[0]}:{addr[1]}",
            },
        )
        reply = error_response(parsed, problem, self.user_agent) if parsed is not None else None
        return None, reply


class _UdpProtocol(asyncio.DatagramProtocol):
    """aiosipua's protocol asserts a transport class that Python 3.11's selector loop does not
    use (an error logged at every start); this one just keeps the transport."""

    def __init__(self, owner: GuardedUdpTransport) -> None:
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner._udp_transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int] | Any) -> None:
        self._owner._dispatch(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP UDP error: %s", exc)  # ICMP unreachable from a peer that left


@dataclass
class GuardedUdpTransport(UdpSipTransport):
    guard: _Guard = field(default_factory=_Guard)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), local_addr=self.local_addr)

    def _dispatch(self, data: bytes, addr: tuple[str, int]) -> None:
        accepted, reply = self.guard.screen(data, addr)
        if reply is not None and self._udp_transport is not None:
            self._udp_transport.sendto(reply, addr)  # to the source, as with rport
        if accepted is not None:
            super()._dispatch(accepted, addr)


@dataclass
class GuardedTcpTransport(TcpSipTransport):
    guard: _Guard = field(default_factory=_Guard)

    async def _handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        if peer and self.guard.dropped(str(peer[0])):
            writer.transport.abort()  # a banned source: closed before a byte is read
            return
        await super()._handle_connection(reader, writer)

    def _dispatch(self, data: bytes, addr: tuple[str, int]) -> None:
        conn = self._connections.get(addr)
        accepted, reply = self.guard.screen(data, addr)
        if conn is not None and self.guard.banned(addr[0]):
            conn[1].transport.abort()  # banned on this connection: it ends here
            return
        if reply is not None and conn is not None:
            conn[1].write(reply)
        if accepted is not None:
            super()._dispatch(accepted, addr)


def _never(call_id: str) -> bool:
    return False


@dataclass
class GuardedTlsTransport(GuardedTcpTransport):
    """SIP over TLS (RFC 3261 §26.2): the TCP transport on an ``ssl`` server socket.

    A client that does not finish its handshake within ``handshake_timeout_s``, offers only
    older TLS versions than the context allows, or (with a client CA) presents no certificate
    or one not issued by that CA is dropped by ``ssl`` before any SIP is read.

    aiosipua writes its Contact as ``<sip:host:port>``; a UA reaching that over UDP would lose
    the encryption, so what this transport sends says TLS: ``<sips:host:port>`` in a dialog whose
    INVITE was for a SIPS URI (RFC 3261 §12.1.1, ``secure_dialog`` tells by Call-ID), otherwise
    ``<sip:host:port;transport=tls>`` (RFC 5630 §3.2)."""

    ssl_context: ssl.SSLContext | None = None
    handshake_timeout_s: float = 10.0
    secure_dialog: Callable[[str], bool] = _never

    async def start(self) -> None:
        if self.ssl_context is None:
            raise RuntimeError("the TLS transport needs an ssl_context")
        self._server = await asyncio.start_server(
            self._handle_connection,
            host=self.local_addr[0],
            port=self.local_addr[1],
            ssl=self.ssl_context,
            ssl_handshake_timeout=self.handshake_timeout_s,
        )

    def send(self, message: SipRequest | SipResponse, addr: tuple[str, int]) -> None:
        contact = message.headers.get_first("contact")
        if contact:
            message.headers.set_single(
                "Contact", tls_contact(contact, self.secure_dialog(message.call_id or ""))
            )
        super().send(message, addr)


def tls_contact(contact: str, sips: bool) -> str:
    """``contact`` (one of our ``<sip:...>`` Contacts) as reached over TLS."""
    if not contact.startswith("<sip:"):
        return contact  # already sips:, or not a form we wrote
    if sips:
        return "<sips:" + contact[len("<sip:") :]
    uri, sep, rest = contact.partition(">")
    if ";transport=" in uri.lower():
        return contact
    return f"{uri};transport=tls{sep}{rest}"


def guard(
    user_agent: str | None, on_reject: RejectHook | None, gate: SipGate | None = None
) -> _Guard:
    return _Guard(user_agent, on_reject, gate)
