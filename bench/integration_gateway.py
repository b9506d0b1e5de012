"""Benchmark: the integration gateway's added latency and throughput per core.

The example backend and the gateway run as their own processes on loopback.
Baseline: the same request sent directly with httpx, measured in the same run.

- added latency: p50/p99 of (gateway round trip) minus the direct round trip's,
  sequential requests, without and with an idempotency key (store write);
- throughput per core: requests/s through the gateway under concurrency,
  divided by the CPU the gateway process used (user + system).

    python bench/integration_gateway.py --out bench/results/integration_gateway.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
from voicetyped.v1 import integration_pb2, integration_pb2_grpc
from voicetyped_testkit.processes import ServiceProcess, free_port

REPO = Path(__file__).resolve().parents[1]
API_KEY_FILE = REPO / "examples" / "backend" / "demo-api-key"
TARGETS = {"p99_added_ms": 3.0, "requests_per_core_s": 1500}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_http(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def run(n: int, seconds: float, concurrency: int) -> dict[str, object]:
    backend_port, grpc_port, http_port = free_port(), free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="vt-bench-"))
    backend = subprocess.Popen(  # noqa: ASYNC220 - started once, before any measuring
        [
            sys.executable,
            str(REPO / "examples/backend/example_backend.py"),
            "--port",
            str(backend_port),
            "--api-key-file",
            str(API_KEY_FILE),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    (tmp / "integrations").mkdir()
    (tmp / "integrations" / "shop.yaml").write_text(
        f"""
name: shop
baseURL: http://127.0.0.1:{backend_port}/api
auth: {{type: apiKey, header: X-API-Key, valueFile: {API_KEY_FILE}}}
operations:
  get_order: {{path: "/orders/{{order_id}}", expectedStatus: [200], extract: {{status: status}}}}
"""
    )
    gateway = ServiceProcess(
        "voicetyped_integration",
        {
            **os.environ,
            "VOICETYPED_INTEGRATIONS_DIR": str(tmp / "integrations"),
            "VOICETYPED_STORE_URL": f"sqlite:///{tmp / 'idem.db'}",
            "VOICETYPED_GRPC_HOST": "127.0.0.1",
            "VOICETYPED_GRPC_PORT": str(grpc_port),
            "VOICETYPED_HTTP_HOST": "127.0.0.1",
            "VOICETYPED_HTTP_PORT": str(http_port),
            "VOICETYPED_LOG_LEVEL": "warning",
        },
        tmp / "gateway.log",
    )
    try:
        gateway.start()
        await wait_http(f"http://127.0.0.1:{backend_port}/healthz")
        await gateway.wait_ready(http_port)
        url = f"http://127.0.0.1:{backend_port}/api/orders/48213"
        headers = {"X-API-Key": API_KEY_FILE.read_text().strip()}
        async with (
            httpx.AsyncClient() as direct,
            grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
        ):
            stub = integration_pb2_grpc.IntegrationGatewayStub(channel)

            def req(key: str = "") -> integration_pb2.ActionRequest:
                return integration_pb2.ActionRequest(
                    service="shop",
                    method="get_order",
                    payload_json='{"order_id": "48213"}',
                    idempotency_key=key,
                )

            async def direct_once() -> float:
                t0 = time.perf_counter()
                reply = await direct.get(url, headers=headers)
                assert reply.status_code == 200
                return time.perf_counter() - t0

            async def gateway_once(key: str = "") -> float:
                t0 = time.perf_counter()
                result = await stub.Execute(req(key), timeout=5)
                assert result.outcome == integration_pb2.ActionResult.OUTCOME_SUCCESS, result
                return time.perf_counter() - t0

            for _ in range(200):  # warm up connections and code paths
                await direct_once()
                await gateway_once()
            direct_s, plain_s, keyed_s = [], [], []
            for i in range(n):  # interleaved, so drift hits both alike
                direct_s.append(await direct_once())
                plain_s.append(await gateway_once())
                keyed_s.append(await gateway_once(f"bench-{i}"))

            async def load(stop_at: float) -> int:
                done = 0
                while time.perf_counter() < stop_at:
                    await gateway_once()
                    done += 1
                return done

            assert gateway.proc is not None
            cpu0, t0 = cpu_seconds(gateway.proc.pid), time.perf_counter()
            counts = await asyncio.gather(*(load(t0 + seconds) for _ in range(concurrency)))
            wall, cpu = time.perf_counter() - t0, cpu_seconds(gateway.proc.pid) - cpu0
    finally:
        gateway.stop()
        backend.terminate()
        backend.wait()

    def ms(values: list[float], q: float) -> float:
        return round(percentile(values, q) * 1000, 3)

    total = sum(counts)
    result: dict[str, object] = {
        "benchmark": "integration_gateway",
        "requests_sequential": n,
        "direct_ms": {"p50": ms(direct_s, 0.5), "p99": ms(direct_s, 0.99)},
        "gateway_ms": {"p50": ms(plain_s, 0.5), "p99": ms(plain_s, 0.99)},
        "gateway_with_key_ms": {"p50": ms(keyed_s, 0.5), "p99": ms(keyed_s, 0.99)},
        "added_ms": {
            "p50": round(ms(plain_s, 0.5) - ms(direct_s, 0.5), 3),
            "p99": round(ms(plain_s, 0.99) - ms(direct_s, 0.99), 3),
            "with_key_p50": round(ms(keyed_s, 0.5) - ms(direct_s, 0.5), 3),
            "with_key_p99": round(ms(keyed_s, 0.99) - ms(direct_s, 0.99), 3),
        },
        "ratio_vs_direct": {
            "p50": round(statistics.median(plain_s) / statistics.median(direct_s), 2),
            "p99": round(percentile(plain_s, 0.99) / percentile(direct_s, 0.99), 2),
        },
        "throughput": {
            "concurrency": concurrency,
            "requests_per_s": round(total / wall, 1),
            "gateway_cpu_s": round(cpu, 3),
            "requests_per_core_s": round(total / cpu, 1) if cpu else None,
        },
        "targets": TARGETS,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    result = asyncio.run(run(args.requests, args.seconds, args.concurrency))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
