"""Requests this gateway sends inside a call's dialog (BYE, REFER, re-INVITE-free), with
RFC 3261 §17.1.2 non-INVITE client transactions: retransmitted over UDP from T1 doubling to T2
until a final response, given up after Timer F (64 x T1). aiosipua's UAS sends such requests once
and drops the responses; over UDP a lost BYE would then leave the far end in the call.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from aiosipua import SipRequest, SipResponse, SipTransport, parse_uri

T1 = 0.5
T2 = 4.0
TIMER_F = 64 * T1


@dataclass
class _Pending:
    request: SipRequest
    final: asyncio.Future[SipResponse]
    provisional: bool = False


@dataclass
class ClientTransactions:
    transport: SipTransport
    _pending: dict[str, _Pending] = field(default_factory=dict)

    async def send(
        self, request: SipRequest, destination: tuple[str, int], timeout_s: float = TIMER_F
    ) -> SipResponse | None:
        """Send ``request``; its final response, or None after ``timeout_s`` without one."""
        vias = request.via
        branch = vias[0].branch if vias else None
        if not branch:
            raise ValueError("request without a Via branch")
        loop = asyncio.get_running_loop()
        pending = _Pending(request, loop.create_future())
        self._pending[branch] = pending
        try:
            self.transport.send(request, destination)
            interval = T1
            deadline = loop.time() + timeout_s
            while not pending.final.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(pending.final), min(interval, remaining))
                if pending.final.done():
                    break
                if not self.transport.reliable:
                    self.transport.send(request, destination)
                interval = T2 if pending.provisional else min(interval * 2, T2)
            return pending.final.result()
        except (OSError, RuntimeError):
            return None  # the transport or connection is gone
        finally:
            self._pending.pop(branch, None)

    def on_response(self, response: SipResponse) -> bool:
        """Match a response to a pending request; True when it was ours."""
        vias = response.via
        branch = vias[0].branch if vias else None
        pending = self._pending.get(branch or "")
        if pending is None:
            return False
        if response.status_code < 200:
            pending.provisional = True
        elif not pending.final.done():
            pending.final.set_result(response)
        return True


def in_dialog_destination(
    remote_target: str, route_set: list[str], source: tuple[str, int], reliable: bool
) -> tuple[str, int]:
    """Where an in-dialog request goes: the remote target (Contact) when no proxy stays in the
    path and the transport is UDP; otherwise back to the hop the INVITE came from (the
    record-routing proxy, or the TCP connection it arrived on)."""
    if route_set or reliable or not remote_target:
        return source
    try:
        uri = parse_uri(remote_target.strip("<>"))
    except (ValueError, IndexError):
        return source
    if not uri.host:
        return source
    return uri.host.strip("[]"), uri.port or 5060
