"""The REGISTER client on the event loop: drives one :class:`~.registration.RegistrationMachine`
per trunk through the gateway's own SIP socket (so the binding the carrier holds, and the NAT
mapping in front of it, are those of the port calls arrive on).

Digest challenges (401/407) are answered with aiosipua's RFC 7616 code (SHA-256 preferred when
offered, MD5 otherwise), once per REGISTER, again only for ``stale=true``. The password is read
from its file for each answer and never logged, kept or shown. Requests use the gateway's client
transactions (retransmitted over UDP); ``timeout_s`` bounds each.

Also here: which trunk an INVITE belongs to (for its dialog, and for admitting a carrier that
does not answer digest challenges), ``GET /v1/trunks`` and the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosipua import SipRequest, SipResponse, SipTransport, generate_tag
from aiosipua.auth import SipDigestAuth, build_credentials
from aiosipua.header_codec import parse_auth, stringify_auth
from aiosipua.utils import generate_branch, generate_call_id
from voicetyped.service.http import bearer_guard
from voicetyped.service.logs import get_logger

from voicetyped_media.metrics import MediaMetrics
from voicetyped_media.sip.client import ClientTransactions
from voicetyped_media.sip.registration import Change, Outcome, RegistrationMachine, Send, classify
from voicetyped_media.sip.trunk_config import Registrar, TrunkSettings

log = get_logger("voicetyped.media.trunks")

_OUTCOME_LABEL = {
    "ok": "registered",
    "timeout": "timeout",
    "server_error": "server_error",
    "rejected": "rejected",
    "auth_failed": "auth_failed",
    "too_brief": "interval_too_brief",
}


@dataclass
class Sender:
    """Where a trunk's requests leave from: the gateway's SIP transport of that kind, its
    client transactions, and the address written into Via and Contact."""

    transport: SipTransport
    client: ClientTransactions
    host: str
    port: int
    user_agent: str


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


@dataclass
class TrunkClient:
    settings: TrunkSettings
    sender: Sender
    metrics: MediaMetrics
    clock: Callable[[], float] = time.monotonic
    machine: RegistrationMachine = field(init=False)
    addresses: set[str] = field(default_factory=set)
    """The registrars' IP addresses (as resolved so far): an INVITE from one is this trunk's."""

    def __post_init__(self) -> None:
        s = self.settings
        self.registrars = s.parsed_registrars()
        self.machine = RegistrationMachine(
            len(self.registrars),
            expires_s=s.expires_s,
            keepalive=s.keepalive,
            keepalive_s=s.keepalive_s,
            backoff_min_s=s.backoff_min_s,
            backoff_max_s=s.backoff_max_s,
        )
        self._call_ids = [generate_call_id(self.sender.host) for _ in self.registrars]
        self._from_tag = generate_tag()
        self._cseq = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        for registrar in self.registrars:
            with contextlib.suppress(ValueError):
                self.addresses.add(str(ipaddress.ip_address(registrar.host)))
        self.metrics.trunk_registered.labels(s.name).set(0)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def contact_uri(self) -> str:
        transport = ";transport=tcp" if self.settings.transport == "tcp" else ""
        host = f"[{self.sender.host}]" if ":" in self.sender.host else self.sender.host
        return f"sip:{self.settings.contact}@{host}:{self.sender.port}{transport}"

    # -- running -----------------------------------------------------------------------------

    def start(self) -> None:
        self.machine.start(self.clock())
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"trunk-{self.name}")

    async def _run(self) -> None:
        m = self.machine
        while m.state == "running":
            self._report()
            send = m.poll(self.clock())
            if send is None:
                wake = m.wake_at()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    timeout = None if wake is None else max(wake - self.clock(), 0.0)
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            if send.method == "OPTIONS":
                answered = await self._keepalive(send)
                m.on_keepalive(self.clock(), answered)
            else:
                outcome = await self._register(send)
                m.on_register(self.clock(), outcome)

    async def stop(self, timeout_s: float) -> None:
        """Stop registering; unregister (Expires: 0) where a binding is held, within
        ``timeout_s``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        send = self.machine.stop(self.clock())
        if send is not None:
            try:
                async with asyncio.timeout(timeout_s):
                    outcome = await self._register(send, timeout_s)
            except TimeoutError:
                outcome = Outcome("timeout", reason=f"no answer in {timeout_s:.1f}s")
            self.machine.on_register(self.clock(), outcome)
        self._report()

    def _report(self) -> None:
        for change in self.machine.take_changes():
            self._log(change)
        self.metrics.trunk_registered.labels(self.name).set(1 if self.machine.registered else 0)

    def _log(self, change: Change) -> None:
        registrar = self.registrars[change.registrar].uri
        if change.kind == "registered":
            log.info(
                "trunk registered",
                trunk=self.name,
                registrar=registrar,
                expires_s=self._granted_s(),
                contact=self.contact_uri,
            )
        elif change.kind == "unregistered":
            log.info("trunk unregistered", trunk=self.name, registrar=registrar)
        elif change.kind == "failover":
            previous = self.registrars[change.previous or 0].uri
            log.warning(
                "trunk registrar failover",
                trunk=self.name,
                registrar=registrar,
                previous=previous,
                reason=change.reason,
            )
        else:
            log.warning(
                "trunk registration failed" if change.kind == "failed" else "trunk binding expired",
                trunk=self.name,
                registrar=registrar,
                reason=change.reason,
                retry_in_s=None if change.retry_in_s is None else round(change.retry_in_s, 1),
            )

    def _granted_s(self) -> int:
        m = self.machine
        return 0 if m.expires_at is None else round(m.expires_at - self.clock())

    # -- requests ----------------------------------------------------------------------------

    async def _destination(self, registrar: Registrar) -> tuple[str, int]:
        kind = socket.SOCK_STREAM if self.settings.transport == "tcp" else socket.SOCK_DGRAM
        infos = await asyncio.get_running_loop().getaddrinfo(
            registrar.host, registrar.port, type=kind
        )
        address = str(infos[0][4][0])
        self.addresses.add(address)
        return address, registrar.port

    def _request(
        self, method: str, registrar: int, expires: int, auth: tuple[str, str] | None
    ) -> SipRequest:
        s, sender = self.settings, self.sender
        target = self.registrars[registrar]
        uri = target.uri.split(";", 1)[0]
        aor = f"sip:{s.username}@{s.aor_domain}"
        self._cseq += 1
        request = SipRequest(method=method, uri=uri)
        via_host = f"[{sender.host}]" if ":" in sender.host else sender.host
        request.headers.append(
            "Via",
            f"SIP/2.0/{s.transport.upper()} {via_host}:{sender.port};"
            f"branch={generate_branch()};rport",
        )
        request.headers.set_single("Max-Forwards", "70")
        request.headers.set_single("From", f"<{aor}>;tag={self._from_tag}")
        request.headers.set_single("To", f"<{aor}>")
        request.headers.set_single("Call-ID", self._call_ids[registrar])
        request.headers.set_single("CSeq", f"{self._cseq} {method}")
        request.headers.set_single("Contact", f"<{self.contact_uri}>")
        if method == "REGISTER":
            request.headers.set_single("Expires", str(expires))
        request.headers.set_single("User-Agent", sender.user_agent)
        if auth is not None:
            request.headers.set_single(auth[0], auth[1])
        request.headers.set_single("Content-Length", "0")
        return request

    async def _transact(
        self, request: SipRequest, destination: tuple[str, int], timeout_s: float
    ) -> SipResponse | None:
        transport = self.sender.transport
        if transport.reliable:
            connections = getattr(transport, "_connections", {})
            if destination not in connections:
                try:
                    async with asyncio.timeout(timeout_s):
                        await transport.connect(destination)  # type: ignore[attr-defined]
                except (OSError, TimeoutError):
                    return None
        return await self.sender.client.send(request, destination, timeout_s=timeout_s)

    async def _register(self, send: Send, timeout_s: float | None = None) -> Outcome:
        outcome = await self._register_once(send, timeout_s or self.settings.timeout_s)
        label = "unregistered" if send.expires == 0 and outcome.kind == "ok" else None
        self.metrics.trunk_register.labels(self.name, label or _OUTCOME_LABEL[outcome.kind]).inc()
        return outcome

    async def _register_once(self, send: Send, timeout_s: float) -> Outcome:
        registrar = self.registrars[send.registrar]
        try:
            destination = await self._destination(registrar)
        except OSError as exc:
            return Outcome("timeout", reason=f"cannot resolve {registrar.host}: {exc.strerror}")
        auth: tuple[str, str] | None = None
        refused = Outcome("auth_failed", 401, "credentials refused")
        for _ in range(3):  # the request, its challenge answered, a stale nonce answered
            request = self._request("REGISTER", send.registrar, send.expires, auth)
            response = await self._transact(request, destination, timeout_s)
            if response is None:
                return Outcome("timeout", reason=f"no answer from {registrar.uri} in {timeout_s}s")
            status = response.status_code
            if status not in (401, 407):
                return classify(
                    status,
                    response.reason_phrase,
                    granted_s=self._granted(response, send.expires),
                    retry_after_s=_int((response.get_header("retry-after") or "").split(";")[0]),
                    min_expires_s=_int(response.get_header("min-expires")),
                )
            refused = classify(status, response.reason_phrase)
            if auth is not None and not _stale(response, status):
                break  # our answer was refused
            auth = self._answer(response, status, request.uri)
            if auth is None:
                return Outcome("auth_failed", status, "no digest challenge we can answer")
        return refused

    def _answer(self, response: SipResponse, status: int, uri: str) -> tuple[str, str] | None:
        header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        challenges = [parse_auth(v) for v in response.get_header_values(header)]
        challenges.sort(key=lambda c: c.params.get("algorithm", "MD5").upper() != "SHA-256")
        s = self.settings
        secret = SipDigestAuth(s.auth_username or s.username, s.password())
        for challenge in challenges:
            credentials = build_credentials(secret, challenge, "REGISTER", uri)
            if credentials is not None:
                name = "Authorization" if status == 401 else "Proxy-Authorization"
                return name, stringify_auth(credentials)
        return None

    def _granted(self, response: SipResponse, asked: int) -> int:
        """The interval granted to our Contact: its ``expires`` parameter, else the Expires
        header, else what we asked for (RFC 3261 §10.2.4)."""
        ours = self.contact_uri.split(";", 1)[0]
        for contact in response.contact:
            uri = contact.uri
            port = f":{uri.port}" if uri.port else ""
            if f"sip:{uri.user}@{uri.host}{port}" == ours:
                granted = _int(contact.params.get("expires"))
                if granted is not None:
                    return granted
        return _int(response.get_header("expires")) or asked

    async def _keepalive(self, send: Send) -> bool:
        registrar = self.registrars[send.registrar]
        try:
            destination = await self._destination(registrar)
        except OSError:
            return False
        request = self._request("OPTIONS", send.registrar, 0, None)
        response = await self._transact(request, destination, self.settings.timeout_s)
        if response is None:
            self.metrics.trunk_register.labels(self.name, "keepalive_timeout").inc()
        return response is not None  # any answer, even 405, keeps the path open

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        m, now = self.machine, self.clock()
        expires_at = None
        if m.registered and m.expires_at is not None:
            wall = time.time() + (m.expires_at - now)
            expires_at = datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds")
        retry = m.retry_at
        return {
            "name": self.name,
            "registered": m.registered,
            "registrar": self.registrars[m.registrar].uri,
            "aor": f"sip:{self.settings.username}@{self.settings.aor_domain}",
            "contact": self.contact_uri,
            "expires_at": expires_at,
            "last_error": m.last_error,
            "last_status": m.last_status,
            "next_attempt_in_s": None if retry is None else round(max(retry - now, 0.0), 1),
        }


def _stale(response: SipResponse, status: int) -> bool:
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    return any(
        str(parse_auth(v).params.get("stale", "")).lower() == "true"
        for v in response.get_header_values(header)
    )


class Trunks:
    """Every configured trunk: start, stop (unregistering), and the inbound side."""

    def __init__(self, clients: list[TrunkClient]) -> None:
        self.clients = clients

    def start(self) -> None:
        for client in self.clients:
            client.start()

    async def stop(self, timeout_s: float) -> None:
        await asyncio.gather(*(c.stop(timeout_s) for c in self.clients))

    def for_call(self, user: str, source_ip: str) -> TrunkClient | None:
        """The trunk an INVITE belongs to: called at its contact user or one of its DIDs, or
        sent from one of its registrars."""
        for client in self.clients:
            s = client.settings
            if user == s.contact or user in s.dids or source_ip in client.addresses:
                return client
        return None

    def trusted_source(self, source_ip: str) -> TrunkClient | None:
        """The trunk whose registrar sent this, when that trunk admits its calls unchallenged."""
        for client in self.clients:
            if client.settings.trust_registrar_source and source_ip in client.addresses:
                return client
        return None

    def routes(self, token_file: Path | None) -> list[web.RouteDef]:
        guarded = bearer_guard(token_file)

        async def list_all(_: web.Request) -> web.Response:
            return web.json_response({"trunks": [c.status() for c in self.clients]})

        return [web.get("/v1/trunks", guarded(list_all))]
