"""RTP/RTCP port pairs from a configured range, bound here and handed to a call's stream.

Two things the stack gets wrong are handled here: asyncio closes a datagram socket one loop
iteration after ``transport.close()``, so an immediate re-bind of the same port fails with
EADDRINUSE; and a port freed a moment ago may still receive the previous call's late packets.
A released pair therefore rests for ``quarantine_s`` before it is handed out again, and a pair
that still cannot be bound (another process holds it) is skipped and retried later.
"""

from __future__ import annotations

import socket
import time
from collections import deque


class PortsExhausted(Exception):  # noqa: N818 - a condition the caller answers with 503
    """No RTP port pair is free in the configured range."""


class PortPool:
    def __init__(self, host: str, low: int, high: int, quarantine_s: float = 2.0) -> None:
        if low < 1024 or high > 65535 or high - low < 2:
            raise ValueError(f"RTP port range {low}-{high} is not usable")
        self.host = host
        self.quarantine_s = quarantine_s
        first = low + (low % 2)
        self._free: deque[tuple[float, int]] = deque((0.0, p) for p in range(first, high - 1, 2))
        self._used: set[int] = set()

    @property
    def capacity(self) -> int:
        return len(self._free) + len(self._used)

    @property
    def in_use(self) -> int:
        return len(self._used)

    def acquire(self) -> tuple[int, socket.socket, socket.socket]:
        """An even RTP port with its RTCP neighbour, both bound (non-blocking sockets)."""
        now = time.monotonic()
        for _ in range(len(self._free)):
            ready_at, port = self._free[0]
            if ready_at > now:
                break
            self._free.popleft()
            socks = self._bind(port)
            if socks is None:
                self._free.append((now + self.quarantine_s, port))
                continue
            self._used.add(port)
            return port, socks[0], socks[1]
        raise PortsExhausted(f"all {self.capacity} RTP port pairs are in use or resting")

    def release(self, port: int) -> None:
        if port in self._used:
            self._used.discard(port)
            self._free.append((time.monotonic() + self.quarantine_s, port))

    def _bind(self, port: int) -> tuple[socket.socket, socket.socket] | None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        bound: list[socket.socket] = []
        try:
            for p in (port, port + 1):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                bound.append(sock)
                sock.setblocking(False)
                sock.bind((self.host, p))
        except OSError:
            for sock in bound:
                sock.close()
            return None
        return bound[0], bound[1]
