"""Fixtures shared by every test suite in the workspace."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


def _parse_log_line(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        raise AssertionError(f"service wrote a line that is not JSON: {line!r}") from None
    assert isinstance(record, dict), line
    return record


@dataclass
class ServiceProcess:
    """A service running as a real OS process, with its JSON log lines collected."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    logs: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for_log(self, event: str, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.raw.append(line)
            record = _parse_log_line(line)
            self.logs.append(record)
            if record.get("event") == event:
                return record
        raise AssertionError(
            f"no {event!r} log line within {timeout_s}s; exit={self.proc.poll()}; "
            f"output so far: {''.join(self.raw)}"
        )

    def terminate_and_wait(self, timeout_s: float) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout_s)
        took = time.monotonic() - started
        while not self.lines.empty():
            line = self.lines.get()
            self.raw.append(line)
            self.logs.append(_parse_log_line(line))
        return code, took


@pytest.fixture
def start_service() -> Iterator[Any]:
    """Start ``python -m <module>`` with free ports; kills leftovers at teardown."""
    started: list[ServiceProcess] = []

    def start(
        module: str, env: dict[str, str] | None = None, args: list[str] | None = None
    ) -> ServiceProcess:
        full_env = {
            **os.environ,
            "VOICETYPED_HTTP_PORT": "0",
            "VOICETYPED_GRPC_PORT": "0",
            "VOICETYPED_HTTP_HOST": "127.0.0.1",
            "VOICETYPED_GRPC_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *(args or [])],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
            cwd=Path(__file__).parent,
        )
        service = ServiceProcess(proc)
        threading.Thread(target=service._pump, daemon=True).start()
        started.append(service)
        return service

    yield start
    for service in started:
        if service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait()


@pytest.fixture
def check_service_lifecycle(start_service: Any) -> Any:
    """Start a service process and prove the contract every service keeps.

    Serves /healthz, /readyz and /metrics, answers the gRPC health service with
    SERVING, logs JSON, and on SIGTERM drains and exits 0 within its grace period.
    """
    import grpc
    import httpx
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    def check(
        module: str, service: str, grpc_services: list[str], env: dict[str, str] | None = None
    ) -> ServiceProcess:
        grace_s = 5.0
        proc: ServiceProcess = start_service(
            module, env={"VOICETYPED_SHUTDOWN_GRACE_S": str(grace_s), **(env or {})}
        )
        started = proc.wait_for_log("service started")
        assert started["service"] == service
        assert started["grpc_services"] == grpc_services
        base = f"http://127.0.0.1:{started['http_port']}"
        with httpx.Client(base_url=base, timeout=5) as http:
            assert http.get("/healthz").json() == {"status": "ok"}
            ready = http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["ready"] is True
            metrics = http.get("/metrics")
            assert metrics.status_code == 200
            assert f'voicetyped_build_info{{service="{service}"' in metrics.text
            assert "voicetyped_service_ready 1.0" in metrics.text
        with grpc.insecure_channel(f"127.0.0.1:{started['grpc_port']}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for name in ["", *grpc_services]:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
        code, took = proc.terminate_and_wait(timeout_s=grace_s + 5)
        assert code == 0, "".join(proc.raw)
        assert took < grace_s, f"took {took:.2f}s to exit"
        events = [r["event"] for r in proc.logs]
        assert events[-3:] == ["draining", "drained", "service stopped"], events
        assert all(r["service"] == service for r in proc.logs)
        return proc

    return check
