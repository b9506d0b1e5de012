"""Ports picked for services under test cannot be taken by the machine's outgoing connections.

A port the kernel hands out for ``bind(0)`` is also one it gives outgoing connections; a
download or a gRPC channel that took it between the pick and the service's bind once failed
``make demo`` with "Address already in use". The test kit and the local control plane pick
below the ephemeral range instead.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path

from voicetyped_testkit.processes import MEDIA_RTP_PORTS, free_port, free_sip_port

CLUSTER_SCRIPT = Path(__file__).resolve().parent / "e2e" / "cluster" / "cluster.py"


def ephemeral_range() -> range:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def bindable(port: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_test_kit_ports_are_outside_the_ephemeral_and_rtp_ranges_and_never_repeat() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if p in ephemeral_range() or p in MEDIA_RTP_PORTS]
    assert all(p >= 1024 and bindable(p) for p in ports)


def test_a_port_in_use_is_not_picked() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port()))
        busy.listen()
        taken = busy.getsockname()[1]
        assert taken not in {free_port() for _ in range(300)}


def test_sip_ports_are_free_on_udp_and_tcp() -> None:
    for _ in range(20):
        port = free_sip_port()
        assert port not in ephemeral_range()
        assert bindable(port) and bindable(port, socket.SOCK_DGRAM)


def test_the_control_plane_picks_the_same_way() -> None:
    spec = importlib.util.spec_from_file_location("cluster_script", CLUSTER_SCRIPT)
    assert spec is not None and spec.loader is not None
    cluster = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = cluster  # its dataclasses look their module up
    try:
        spec.loader.exec_module(cluster)
    finally:
        del sys.modules[spec.name]
    names = [f"component-{n}" for n in range(12)]
    ports = cluster._free_ports(names)
    assert list(ports) == names
    assert len(set(ports.values())) == len(names)
    assert not [p for p in ports.values() if p in ephemeral_range() or p in MEDIA_RTP_PORTS]
    assert all(bindable(p) for p in ports.values())
