"""UDP datagrams on the loopback interface as they travel, read with a raw packet socket
(``AF_PACKET``: needs root or CAP_NET_RAW, as the tests run in CI). What a peer sent on the wire,
not what the receiver made of it: the SRTP tests decrypt it themselves.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field
from types import TracebackType

_ETH_P_ALL = 0x0003
_PACKET_HOST = 0  # each loopback packet is seen twice: as sent (OUTGOING) and as received


@dataclass(frozen=True)
class Datagram:
    src_port: int
    dst_port: int
    payload: bytes


@dataclass
class LoopbackCapture:
    """Records every IPv4 UDP datagram on ``lo`` while entered."""

    datagrams: list[Datagram] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _sock: socket.socket | None = None

    def __enter__(self) -> LoopbackCapture:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(_ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.bind(("lo", 0))
        sock.settimeout(0.1)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="loopback-capture", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                frame, address = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            if address[2] != _PACKET_HOST:
                continue
            datagram = _udp(frame[14:])  # the loopback "Ethernet" header
            if datagram is not None:
                self.datagrams.append(datagram)

    def between(self, src_port: int, dst_port: int) -> list[bytes]:
        """Payloads sent from ``src_port`` to ``dst_port``, in the order seen."""
        return [
            d.payload for d in self.datagrams if (d.src_port, d.dst_port) == (src_port, dst_port)
        ]


def _udp(packet: bytes) -> Datagram | None:
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
        return None
    header = (packet[0] & 0x0F) * 4
    src, dst, length = struct.unpack_from("!HHH", packet, header)
    return Datagram(src, dst, packet[header + 8 : header + length])
