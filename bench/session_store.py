"""Benchmark: session store save/load latency, SQLite (a file) vs Redis (local server).

The runtime saves a call's CallSession after every turn, so a save is on each
turn's path. Measures sequential save and load latency (p50/p99, ops/s) of a
realistic ~6 KB JSON session spread over 200 session ids, and the throughput of
concurrent saves (many calls at once). Redis is a real redis-server on loopback,
started here; the SQLite file lives in a temp dir (WAL, synchronous=NORMAL).

    python bench/session_store.py --out bench/results/session_store.json
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import platform
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
from voicetyped.session import CallSession
from voicetyped_runtime.store.base import SessionStore
from voicetyped_runtime.store.redis import RedisStore
from voicetyped_runtime.store.sqlite import SqliteStore
from voicetyped_testkit.redis_server import RedisServer

SESSIONS = 200
TTL_S = 3600.0


def realistic_document() -> bytes:
    """The ~6 KB session bench/session_codec.py measures (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "session_codec", Path(__file__).with_name("session_codec.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    session: CallSession = module.realistic_session()
    return session.model_dump_json().encode()


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def sequential(ops: int, op: Callable[[int], Awaitable[object]]) -> dict[str, float]:
    latencies = []
    started = time.perf_counter()
    for i in range(ops):
        t0 = time.perf_counter()
        await op(i)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "mean_ms": sum(latencies) / ops * 1e3,
        "ops_per_s": ops / elapsed,
    }


async def concurrent(ops: int, tasks: int, op: Callable[[int], Awaitable[object]]) -> float:
    """Ops/s with ``tasks`` coroutines sharing one store."""

    async def worker(first: int) -> None:
        for i in range(first, ops, tasks):
            await op(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker(t) for t in range(tasks)))
    return ops / (time.perf_counter() - started)


async def measure(store: SessionStore, doc: bytes, ops: int, tasks: int) -> dict[str, Any]:
    await store.open()
    try:

        async def save(i: int) -> None:
            await store.save(f"session-{i % SESSIONS}", doc, TTL_S)

        async def load(i: int) -> None:
            assert await store.load(f"session-{i % SESSIONS}") == doc

        await sequential(min(ops, 500), save)  # warm up: connections, pages, scripts
        return {
            "save": await sequential(ops, save),
            "load": await sequential(ops, load),
            f"save_concurrent_{tasks}_ops_per_s": await concurrent(ops, tasks, save),
        }
    finally:
        await store.close()


async def run(ops: int, tasks: int) -> dict[str, Any]:
    doc = realistic_document()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_result = await measure(SqliteStore(Path(tmp) / "sessions.db"), doc, ops, tasks)
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        redis_version = client.info("server")["redis_version"]
        client.close()
        redis_result = await measure(RedisStore(server.url), doc, ops, tasks)
    return {
        "benchmark": "session_store",
        "python": platform.python_version(),
        "sqlite_version": sqlite3.sqlite_version,
        "redis_server_version": redis_version,
        "document_bytes": len(doc),
        "sessions": SESSIONS,
        "ops_per_measurement": ops,
        "results": {"sqlite": sqlite_result, "redis": redis_result},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ops", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    result = asyncio.run(run(args.ops, args.concurrency))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
