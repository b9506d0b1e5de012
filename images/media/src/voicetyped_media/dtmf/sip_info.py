"""DTMF carried in SIP INFO requests (the two bodies in use; no RFC standardises them).

- ``application/dtmf-relay`` (Cisco and most PBXs)::

      Signal=5
      Duration=160

- ``application/dtmf``: the digit alone (``5``), optionally followed by a duration line.

Signal values are 0-9, ``*``, ``#``, A-D; some senders use 10 and 11 for ``*`` and ``#``
(telephone-event codes). Duration is in milliseconds; absent or unreadable means 0 (unknown).
"""

from __future__ import annotations

import re

DIGITS = frozenset("0123456789*#ABCD")
_CODES = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}
_FIELD = re.compile(r"^\s*([A-Za-z-]+)\s*=\s*(\S*)\s*$")


class InfoDtmfError(ValueError):
    """The INFO body carries no readable digit."""


def _digit(value: str) -> str:
    value = value.strip().upper()
    value = _CODES.get(value, value)
    if value not in DIGITS:
        raise InfoDtmfError(f"{value[:10]!r} is not a DTMF digit")
    return value


def _duration(value: str) -> int:
    return int(value) if value.strip().isdigit() and int(value) < 60_000 else 0


def parse_info_dtmf(content_type: str, body: str) -> tuple[str, int]:
    """(digit, duration in ms) from an INFO body of ``content_type``."""
    media = content_type.split(";", 1)[0].strip().lower()
    lines = [line for line in body.replace("\r\n", "\n").split("\n") if line.strip()]
    if media == "application/dtmf-relay":
        fields: dict[str, str] = {}
        for line in lines:
            found = _FIELD.match(line)
            if found:
                fields[found.group(1).lower()] = found.group(2)
        if "signal" not in fields:
            raise InfoDtmfError("dtmf-relay body without Signal=")
        return _digit(fields["signal"]), _duration(fields.get("duration", ""))
    if media == "application/dtmf":
        if not lines:
            raise InfoDtmfError("empty application/dtmf body")
        duration = 0
        for line in lines[1:]:
            found = _FIELD.match(line)
            if found and found.group(1).lower() == "duration":
                duration = _duration(found.group(2))
        return _digit(lines[0]), duration
    raise InfoDtmfError(f"INFO body of type {media!r} carries no DTMF")
