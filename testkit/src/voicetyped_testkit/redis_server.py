"""A real, throw-away ``redis-server`` on a free loopback port (tests, benchmarks, demos).

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)

No persistence (``--save "" --appendonly no``): the data lives only as long as the
process. Readiness is probed with a raw RESP ``PING`` so this module needs no
Redis client library.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from voicetyped_testkit.processes import free_port

HOST = "127.0.0.1"


class RedisServerError(RuntimeError):
    """redis-server is missing or did not come up."""


def _resp(*parts: str) -> bytes:
    out = f"*{len(parts)}\r\n".encode()
    for part in parts:
        raw = part.encode()
        out += b"$%d\r\n%s\r\n" % (len(raw), raw)
    return out


class RedisServer:
    """Start with :meth:`start` (or ``with``), stop with :meth:`stop`."""

    def __init__(
        self, password: str | None = None, binary: str = "redis-server", start_timeout_s: float = 10
    ) -> None:
        self.password = password
        self._binary = binary
        self._start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RedisServerError("redis-server has not been started")
        return self._port

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server (a new free port the first time, the same one on restart)."""
        if self.running:
            return
        binary = shutil.which(self._binary)
        if binary is None:
            raise RedisServerError(
                f"{self._binary} is not installed (Debian package redis-server); "
                "run `make system-deps`"
            )
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="voicetyped-redis-"))
        # Another process can grab a probed free port before redis binds it; retry
        # with a fresh port in that case (only on first start: restart keeps the URL).
        attempts = 3 if self._port is None else 1
        for attempt in range(attempts):
            if self._port is None or attempt > 0:
                self._port = free_port()
            if self._launch(binary):
                return
        tail = self._log_tail()
        self.stop()
        raise RedisServerError(f"redis-server did not start; its log ends:\n{tail}")

    def _launch(self, binary: str) -> bool:
        assert self._dir is not None
        args = [
            binary,
            "--port", str(self._port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--logfile", str(self._dir / "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            if self.ping():
                return True
            time.sleep(0.02)
        self.kill()
        return False

    def ping(self) -> bool:
        """True if the server answers PING (authenticating first if it has a password)."""
        request = (_resp("AUTH", self.password) if self.password else b"") + _resp("PING")
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as sock:
                sock.sendall(request)
                reply = b""
                while b"PONG" not in reply and b"-" not in reply:
                    chunk = sock.recv(256)
                    if not chunk:
                        break
                    reply += chunk
                return b"+PONG" in reply
        except OSError:
            return False

    def stop(self, timeout_s: float = 5) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; removes the temp dir. Idempotent."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def kill(self) -> None:
        """SIGKILL, the abrupt crash case (keeps the temp dir until stop())."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def restart(self) -> None:
        """Stop and start again on the same port (the data is gone: no persistence)."""
        self.stop()
        self.start()

    def _log_tail(self) -> str:
        log = self._dir / "redis.log" if self._dir else None
        if log is None or not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-20:])

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
