"""Blind transfer (RFC 3515/5589): REFER the caller to the runtime's target and follow the
NOTIFYs with its progress; the command's result goes back to the runtime, and on success the
gateway leaves the call (RFC 5589 §6.1)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiosipua import IncomingCall
from voicetyped.service.logs import get_logger
from voicetyped.v1 import runtime_pb2

log = get_logger("voicetyped.media.call")

SendInDialog = Callable[[IncomingCall, str, dict[str, str], str], Awaitable[Any]]
"""``(call, method, headers, body)`` -> final response or None: an in-dialog request."""


class BlindTransfer:
    def __init__(
        self,
        sip: IncomingCall,
        send_in_dialog: SendInDialog,
        counted: Callable[[bool], None],
        report: Callable[[runtime_pb2.CommandResult], None],
        leave: Callable[[], None],
    ) -> None:
        self._sip = sip
        self._send_in_dialog = send_in_dialog
        self._counted = counted
        self._report = report
        self._leave = leave
        self._command = ""  # the transfer command under way
        self._target = ""

    async def start(self, command: runtime_pb2.CallCommand) -> None:
        target = command.transfer.target_uri
        self._command = command.command_id
        self._target = target
        log.info("transferring", target=target)
        response = await self._send_in_dialog(
            self._sip,
            "REFER",
            {"Refer-To": f"<{target}>", "Referred-By": f"<{self._sip.callee}>"},
            "",
        )
        status = getattr(response, "status_code", 0)
        if not 200 <= status < 300:
            phrase = getattr(response, "reason_phrase", "") or ""
            self._done(
                status or 408,
                f"REFER answered {status} {phrase}".rstrip() if status else "REFER unanswered",
            )

    def progress(self, status: int, reason: str) -> None:
        """A NOTIFY with the transfer's progress (message/sipfrag)."""
        log.info("transfer progress", sip_status=status, reason=reason)
        if status >= 200:
            self._done(status, reason)

    def _done(self, status: int, reason: str) -> None:
        command, self._command = self._command, ""
        if not command:
            return
        ok = 200 <= status < 300
        if ok:
            log.info("transferred", target=self._target, sip_status=status)
        else:  # the call stays with us: the runtime's dialog decides what the caller hears
            log.warning("transfer failed", target=self._target, sip_status=status, reason=reason)
        self._counted(ok)
        self._report(
            runtime_pb2.CommandResult(
                command_id=command, success=ok, sip_status=status, detail=reason
            )
        )
        if ok:  # the caller is now talking to the target
            self._leave()
