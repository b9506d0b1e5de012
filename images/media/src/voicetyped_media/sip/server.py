"""The gateway's SIP user agent server on UDP, TCP and TLS.

aiosipua's :class:`~aiosipua.SipUAS` does dialogs, transactions, 2xx retransmission, CANCEL,
session timers and NOTIFY parsing; this layer adds what a trunk-facing gateway needs:

- admission before a call exists: draining or at capacity -> 503 with Retry-After; source not in
  the allowlist -> 403; digest authentication -> 401 challenge; unusable SDP -> 488 with a
  Warning naming the problem (all answered even when aiosipua would have raised);
- INFO (DTMF) and an OPTIONS answer with our Allow/Accept/Supported (503 while draining, so a
  trunk's keep-alive moves traffic elsewhere);
- responses to the requests *we* send (BYE, REFER) routed to :class:`~.client.ClientTransactions`;
- strict request checks in front of the parser (:mod:`.transport`, :mod:`.validate`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiosipua import IncomingCall, SipRequest, SipResponse, SipTransport, SipUAS, generate_tag
from aiosipua.dialog import DialogState, dialog_matches
from aiosipua.uas_requests import handle_ack

from voicetyped_media.dtmf.sip_info import InfoDtmfError, parse_info_dtmf
from voicetyped_media.sdp import Offer
from voicetyped_media.sip.client import ClientTransactions, in_dialog_destination
from voicetyped_media.sip.transport import GuardedTlsTransport
from voicetyped_media.sip.validate import IMPLEMENTED, Problem

log = logging.getLogger(__name__)

Admit = Callable[[SipRequest, tuple[str, int]], Problem | Offer | None]
"""Admission of a new INVITE: a :class:`Problem` refuses it; otherwise the caller's SDP offer as
read (None: the INVITE had none), handed to ``new_call`` with the call."""


@dataclass
class Handlers:
    """What the SIP layer tells the call layer (all called on the event loop)."""

    admit: Admit
    new_call: Callable[[IncomingCall, Offer | None], None]
    reinvite: Callable[[IncomingCall], None]
    acked: Callable[[IncomingCall, SipRequest], None]
    """An ACK of a 2xx: it carries the caller's answer when that 2xx had our offer."""
    ended: Callable[[str, str], None]
    """``(Call-ID, why)``; why: bye | cancel | ack_timeout | session_expired."""
    dtmf: Callable[[IncomingCall, str, int], None]
    transfer_progress: Callable[[str, int, str], None]
    draining: Callable[[], bool]


def encrypted(call: IncomingCall) -> bool:
    """Whether the call's signalling (and so an SDES key in its SDP) travels over TLS."""
    return isinstance(call.transport, GuardedTlsTransport)


def via_transport(transport: SipTransport) -> str:
    if isinstance(transport, GuardedTlsTransport):
        return "TLS"
    return "TCP" if transport.reliable else "UDP"


def refuse(
    call: IncomingCall,
    status: int,
    reason: str,
    warning: str = "",
    headers: dict[str, str] | None = None,
) -> None:
    """Refuse a call that was not answered yet, inside its dialog (aiosipua has no public way
    to send a final error response for an IncomingCall: this module is where its internals are
    touched)."""
    extra = dict(headers or {})
    if warning:
        extra["Warning"] = f'399 voicetyped "{warning}"'
    call._send_response(status, reason, extra_headers=extra or None)


def reply(
    uas: SipUAS, request: SipRequest, problem: Problem, call: IncomingCall | None = None
) -> None:
    """Answer ``request`` with ``problem`` (multi-line header values become repeated headers)."""
    if call is not None:
        resp = call.dialog.create_response(request, problem.status, problem.reason)
    else:
        resp = SipResponse(status_code=problem.status, reason_phrase=problem.reason)
        for v in request.headers.get("via"):
            resp.headers.append("Via", v)
        for name in ("from", "call-id", "cseq"):
            value = request.headers.get_first(name)
            if value:
                resp.headers.set_single(name.title() if name != "call-id" else "Call-ID", value)
        to_val = request.headers.get_first("to")
        if to_val:
            tag = "" if ";tag=" in to_val.replace(" ", "") else f";tag={generate_tag()}"
            resp.headers.set_single("To", to_val + tag)
    for name, value in problem.headers.items():
        for line in value.split("\n"):
            resp.headers.append(name, line)
    if problem.status >= 300 and problem.detail:
        resp.headers.set_single("Warning", problem.warning)
    if uas.user_agent:
        resp.headers.set_single("Server", uas.user_agent)
    uas.transport.send_reply(resp)


class GatewayUAS(SipUAS):
    def __init__(
        self,
        transport: SipTransport,
        handlers: Handlers,
        client: ClientTransactions,
        **kwargs: Any,
    ) -> None:
        super().__init__(transport, **kwargs)
        self.handlers = handlers
        self.client = client
        self._handlers["INFO"] = self._handle_info
        self._handlers["ACK"] = self._handle_ack
        for method in ("REFER",):  # we send REFER; being transferred ourselves is not served
            self._handlers.pop(method, None)
        self._admitted: Offer | None = None  # set around aiosipua's (synchronous) on_invite
        self.on_invite = lambda call: handlers.new_call(call, self._admitted)
        self.on_reinvite = handlers.reinvite
        self.on_bye = lambda call, _req: handlers.ended(call.call_id, "bye")
        self.on_cancel = self._cancelled
        self.on_ack_timeout = lambda call: handlers.ended(call.call_id, "ack_timeout")
        self.on_session_expired = lambda call: handlers.ended(call.call_id, "session_expired")
        self.on_transfer_progress = handlers.transfer_progress
        self.on_options = self._options
        self.on_update = self._update
        if isinstance(transport, GuardedTlsTransport):
            transport.secure_dialog = self._sips_dialog

    def _sips_dialog(self, call_id: str) -> bool:
        call = self._calls.get(call_id)
        return call is not None and call.invite.uri.lower().startswith("sips:")

    def _on_message(self, msg: SipRequest | SipResponse, addr: tuple[str, int]) -> None:
        if isinstance(msg, SipResponse):
            self.client.on_response(msg)
            return
        super()._on_message(msg, addr)

    def _handle_invite(self, request: SipRequest, addr: tuple[str, int]) -> None:
        call_id = request.call_id or ""
        existing = self._calls.get(call_id)
        if existing is not None and existing.dialog.state == DialogState.CONFIRMED:
            super()._handle_invite(request, addr)  # re-INVITE: the call layer answers
            return
        if existing is not None:
            # A retransmitted INVITE of a call being set up: the 100/180 will be repeated by
            # the transaction; answering again would fork the dialog.
            return
        admitted = self.handlers.admit(request, addr)
        if isinstance(admitted, Problem):
            log.info("INVITE refused: %s %s", admitted.status, admitted.detail)
            reply(self, request, admitted)
            return
        self._admitted = admitted
        try:
            super()._handle_invite(request, addr)
        finally:
            self._admitted = None

    def _handle_ack(self, request: SipRequest, addr: tuple[str, int]) -> None:
        call = self._calls.get(request.call_id or "")
        handle_ack(self, request, addr)
        if (
            call is not None
            and call.dialog.state == DialogState.CONFIRMED
            and dialog_matches(call.dialog, request)
        ):
            self.handlers.acked(call, request)

    def _handle_info(self, request: SipRequest, addr: tuple[str, int]) -> None:
        call = self._calls.get(request.call_id or "")
        if call is None:
            self._send_error(request, 481, "Call/Transaction Does Not Exist")
            return
        if not self._validate_in_dialog(call.dialog, request):
            return
        if not request.body.strip():
            reply(self, request, Problem(200, "OK", ""), call)  # an INFO keep-alive
            return
        try:
            digit, duration = parse_info_dtmf(request.content_type or "", request.text)
        except InfoDtmfError as exc:
            reply(
                self,
                request,
                Problem(
                    415,
                    "Unsupported Media Type",
                    str(exc),
                    {"Accept": "application/dtmf-relay, application/dtmf"},
                ),
                call,
            )
            return
        reply(self, request, Problem(200, "OK", ""), call)
        self.handlers.dtmf(call, digit, duration)

    def _cancelled(self, request: SipRequest, addr: tuple[str, int]) -> None:
        # aiosipua already answered 200 to the CANCEL and 487 to the INVITE.
        self.handlers.ended(request.call_id or "", "cancel")

    def _options(self, request: SipRequest, addr: tuple[str, int]) -> None:
        if self.handlers.draining():
            reply(
                self,
                request,
                Problem(503, "Service Unavailable", "draining", {"Retry-After": "30"}),
            )
            return
        reply(
            self,
            request,
            Problem(
                200,
                "OK",
                "",
                {
                    "Allow": ", ".join(IMPLEMENTED),
                    "Accept": "application/sdp",
                    "Supported": "timer",
                },
            ),
        )

    def _update(self, call: IncomingCall, request: SipRequest) -> Any:
        return None  # session refresh UPDATEs are answered by the stack; offers get 488


class SipServer:
    """UDP, TCP and TLS listeners (as configured) sharing one set of handlers."""

    def __init__(
        self,
        transports: list[SipTransport],
        handlers: Handlers,
        *,
        user_agent: str,
        session_expires: int | None,
        min_se: int,
    ) -> None:
        self.uases: list[GatewayUAS] = []
        for transport in transports:
            client = ClientTransactions(transport)
            self.uases.append(
                GatewayUAS(
                    transport,
                    handlers,
                    client,
                    user_agent=user_agent,
                    session_expires=session_expires,
                    min_se=min_se,
                )
            )

    async def start(self) -> None:
        for uas in self.uases:
            await uas.start()

    async def stop(self) -> None:
        for uas in self.uases:
            with contextlib.suppress(Exception):
                await uas.stop()

    def uas_for(self, call: IncomingCall) -> GatewayUAS:
        for uas in self.uases:
            if uas.transport is call.transport:
                return uas
        return self.uases[0]

    async def send_in_dialog(
        self, call: IncomingCall, method: str, headers: dict[str, str], body: str
    ) -> SipResponse | None:
        """Send an in-dialog request (BYE, REFER) and wait for its final response."""
        uas = self.uas_for(call)
        addr = call._signaling_addr()
        request = call.dialog.create_request(
            method, via_host=addr[0], via_port=addr[1], via_transport=via_transport(uas.transport)
        )
        request.headers.set_single("Contact", f"<sip:{addr[0]}:{addr[1]}>")  # TLS: see transport
        for name, value in headers.items():
            request.headers.set_single(name, value)
        if body:
            request.text = body
        if uas.user_agent:
            request.headers.set_single("User-Agent", uas.user_agent)
        destination = in_dialog_destination(
            call.dialog.remote_target,
            call.dialog.route_set,
            call.source_addr,
            uas.transport.reliable,
        )
        timeout = 8.0 if method == "BYE" else 32.0
        return await uas.client.send(request, destination, timeout_s=timeout)
