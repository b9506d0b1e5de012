"""Loaded integrations: one HTTP client, authenticator, breaker and rate limiter each.

Integrations come from YAML files in a directory (the ConfigMap the operator
renders) and are re-read when a file changes; a changed integration gets fresh
objects and the old client is closed once in-flight requests had time to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import ValidationError
from voicetyped.documents import (
    DocumentError,
    DocumentKindError,
    parse_document,
    read_limited,
    unwrap,
)
from voicetyped.service.config import config_files
from voicetyped.service.logs import get_logger
from voicetyped_specs.integration import Integration

from voicetyped_integration.auth import Authenticator, build_authenticator, build_client
from voicetyped_integration.breaker import BreakerState, CircuitBreaker
from voicetyped_integration.limits import RateLimiter
from voicetyped_integration.metrics import BREAKER_VALUES, GatewayMetrics

log = get_logger("voicetyped.integration.registry")

CLOSE_AFTER_S = 60.0


class IntegrationError(ValueError):
    """An Integration document is invalid; the message names the file and fields."""


@dataclass
class IntegrationHandle:
    spec: Integration
    client: httpx.AsyncClient
    auth: Authenticator
    breaker: CircuitBreaker
    limiter: RateLimiter
    source: str = ""
    token_client: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.token_client is not None:
            await self.token_client.aclose()

    def status(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "baseURL": self.spec.base_url,
            "auth": self.spec.auth.type,
            "breaker": self.breaker.state.value,
            "breakerRetryAfterSeconds": round(self.breaker.retry_after_s(), 3),
            "operations": sorted(self.spec.operations),
            "source": self.source,
        }


def parse_integration(text: str | bytes, source: str) -> Integration:
    """An Integration document read within the limits of voicetyped.documents."""
    try:
        data = parse_document(text, source)
    except DocumentError as exc:
        raise IntegrationError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise IntegrationError(f"{source}: YAML error: {exc}") from None
    try:
        return Integration.model_validate(unwrap(data, "Integration"))
    except DocumentKindError as exc:
        raise IntegrationError(f"{source}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise IntegrationError(f"{source}: invalid Integration: {problems}") from None


@dataclass
class IntegrationRegistry:
    metrics: GatewayMetrics
    handles: dict[str, IntegrationHandle] = field(default_factory=dict)
    file_errors: dict[str, str] = field(default_factory=dict)
    _files: dict[Path, float] = field(default_factory=dict)
    _retired: set[asyncio.Task[None]] = field(default_factory=set)

    def get(self, name: str) -> IntegrationHandle | None:
        return self.handles.get(name)

    def names(self) -> list[str]:
        return sorted(self.handles)

    def add(self, spec: Integration, source: str = "") -> IntegrationHandle:
        """Make ``spec`` live (replacing a same-named integration)."""
        client = build_client(spec)
        name = spec.name

        def changed(old: BreakerState, new: BreakerState) -> None:
            self.metrics.breaker.labels(name).set(BREAKER_VALUES[new.value])
            log.warning("circuit breaker changed", integration=name, old=old.value, new=new.value)

        # The token endpoint is usually another host (an identity provider): its own
        # client, trusting the system CAs plus tls.caFile, and no client certificate.
        token_client = (
            httpx.AsyncClient(verify=_token_ssl(spec)) if spec.auth.type == "oauth2" else None
        )
        handle = IntegrationHandle(
            spec=spec,
            client=client,
            token_client=token_client,
            auth=build_authenticator(spec, token_client or client),
            breaker=CircuitBreaker(spec.circuit_breaker, on_change=changed, name=name),
            limiter=RateLimiter(spec.rate_limit, name=name),
            source=source,
        )
        self.metrics.breaker.labels(name).set(0)
        old = self.handles.get(name)
        self.handles[name] = handle
        if old is not None:
            self._retire(old)
        log.info("integration loaded", integration=name, source=source)
        return handle

    async def sync_directory(self, directory: Path) -> None:
        for path, mtime in await asyncio.to_thread(config_files, directory):
            if self._files.get(path) == mtime:
                continue
            self._files[path] = mtime
            try:
                data = await asyncio.to_thread(read_limited, path)
                spec = parse_integration(data, str(path))
                self.add(spec, str(path))
            except (IntegrationError, OSError, ValueError) as exc:
                self.file_errors[str(path)] = str(exc)
                log.error("integration file rejected", path=str(path), error=str(exc))
                continue
            self.file_errors.pop(str(path), None)

    def _retire(self, handle: IntegrationHandle) -> None:
        async def close_later() -> None:
            await asyncio.sleep(CLOSE_AFTER_S)
            await handle.aclose()

        task = asyncio.ensure_future(close_later())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        for task in list(self._retired):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for handle in self.handles.values():
            await handle.aclose()


def _token_ssl(spec: Integration) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if spec.tls.ca_file:
        context.load_verify_locations(spec.tls.ca_file)
    return context
