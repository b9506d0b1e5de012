"""Fixtures for the runtime tests: a real redis-server (no fakes)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
from voicetyped_testkit.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole test session (tests that stop it start their own)."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server's URL, with its database emptied for this test."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server.url


def _load_peers() -> ModuleType:
    # Tests import by path (pytest's importlib mode has no package for this folder).
    name = "runtime_peers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def rt_peers() -> ModuleType:
    """runtime_peers.py: the runtime's gRPC peers (speech, integration, media)."""
    return _load_peers()


@pytest.fixture
async def peers_up(rt_peers: ModuleType) -> AsyncIterator[tuple[Any, Any]]:
    """A running speech peer and integration peer."""
    speech = rt_peers.SpeechPeer()
    integration = rt_peers.IntegrationPeer()
    await speech.server.start()
    await integration.server.start()
    yield speech, integration
    await speech.server.stop(0)
    await integration.server.stop(0)
