"""Stateless error responses to requests the stack never sees (RFC 3261 §8.2.6)."""

from __future__ import annotations

import secrets

from voicetyped_media.sip.validate import Parsed, Problem

_COPIED = ("via", "from", "to", "call-id", "cseq")
_PRETTY = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}


def error_response(parsed: Parsed, problem: Problem, user_agent: str | None = None) -> bytes | None:
    """The response to send for ``problem``, or None when it cannot be routed (no Via) or the
    request must not be answered (ACK)."""
    if not parsed.is_request or parsed.method == "ACK" or not parsed.headers.all("via"):
        return None
    lines = [f"SIP/2.0 {problem.status} {problem.reason}"]
    for name in _COPIED:
        for value in parsed.headers.all(name):
            if name == "to" and ";tag=" not in value.replace(" ", "").lower():
                value = f"{value};tag={secrets.token_hex(6)}"
            lines.append(f"{_PRETTY[name]}: {value}")
    for name, value in problem.headers.items():
        lines.append(f"{name}: {value}")
    lines.append(f"Warning: {problem.warning}")
    if user_agent:
        lines.append(f"Server: {user_agent}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", errors="replace")
