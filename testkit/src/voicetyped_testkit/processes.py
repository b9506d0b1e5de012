"""Run a voicetyped service as a real OS process (for tests that kill and restart it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import port_for

MEDIA_RTP_PORTS = range(20000, 21000)
"""The media gateway's default RTP ports (``VOICETYPED_RTP_PORT_MIN``/``MAX``): never handed out."""
_handed_out: set[int] = set()


def cpu_seconds(pid: int) -> float:
    """CPU seconds process ``pid`` has used so far (user + system, from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a service about to be started on it.

    Outside the kernel's ephemeral range (port-for): a port the kernel picks for ``bind(0)``
    is one it also gives outgoing connections, and a gRPC channel or a download that took it
    between our pick and the service's bind made the service fail with "Address already in
    use". Never the same port twice in one process (two services given one port before either
    binds would otherwise be possible), never one of the media gateway's RTP ports."""
    port = port_for.select_random(exclude_ports=_handed_out.union(MEDIA_RTP_PORTS))
    _handed_out.add(port)
    return port


def free_port_block(count: int) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 (``voicetyped up
    --base-port``), handed out as :func:`free_port` hands out one."""
    while True:
        base = free_port()
        block = range(base, base + count)
        rest = block[1:]
        if _handed_out.isdisjoint(rest) and all(
            port_for.is_available(p) and p not in MEDIA_RTP_PORTS for p in rest
        ):
            _handed_out.update(block)
            return base


def free_sip_port() -> int:
    """Free on both UDP and TCP."""
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


class ServiceProcess:
    """``python -m <module>`` with the given environment, output appended to ``log``."""

    def __init__(self, module: str, env: dict[str, str], log: Path) -> None:
        self.module = module
        self.env = {**env, "PYTHONUNBUFFERED": "1"}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, http_port: int, timeout_s: float = 30.0) -> None:
        """Until /readyz answers 200 (polled off the event loop)."""
        import asyncio

        deadline = time.monotonic() + timeout_s
        while not await asyncio.to_thread(_ready, http_port):
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.module} exited {self.proc.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.module} not ready after {timeout_s}s: {self.tail()}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no cleanup, as in a crash or an OOM kill."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


async def eventually(
    check: Callable[[], Any], timeout_s: float, what: str, process: ServiceProcess | None = None
) -> Any:
    """Poll ``check`` (plain or async) until it returns something truthy (returned), else fail
    saying ``what``."""
    import asyncio
    import inspect

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    tail = await asyncio.to_thread(process.tail) if process is not None else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{tail}")
