"""How a service describes itself to the runner."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from aiohttp import web

from voicetyped.service.config import ServiceSettings
from voicetyped.service.probes import ReadinessCheck

# Registers servicers on the server and returns their full names ("voicetyped.v1.X").
GrpcRegistration = Callable[[grpc.aio.Server], list[str]]
# Called once the service is draining, with the seconds left of the grace period.
DrainHook = Callable[[float], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]
# Told the bound gRPC port once the server has it (a port of 0 in the settings picks one).
ListeningHook = Callable[[int], None]


@dataclass
class ServiceApp:
    """One service process: its settings and the parts it plugs into the runner.

    Order at start: ``on_startup`` hooks, gRPC registrations, ``on_listening``
    hooks (with the bound gRPC port), servers start, ready. At SIGTERM: not
    ready (``/readyz`` 503, gRPC health NOT_SERVING), ``shutdown_delay_s``,
    then in parallel the gRPC server stops accepting and waits for in-flight
    calls while ``on_drain`` hooks run; both are bounded by ``shutdown_grace_s``.
    Last, ``on_shutdown`` hooks release resources.
    """

    name: str
    settings: ServiceSettings
    grpc_registrations: list[GrpcRegistration] = field(default_factory=list)
    readiness_checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    http_routes: list[web.RouteDef] = field(default_factory=list)
    on_startup: list[Hook] = field(default_factory=list)
    on_listening: list[ListeningHook] = field(default_factory=list)
    on_drain: list[DrainHook] = field(default_factory=list)
    on_shutdown: list[Hook] = field(default_factory=list)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    """The event loop to run on (e.g. ``uvloop.new_event_loop``); None: asyncio's default."""
    accept_during_drain: bool = False
    """Keep accepting gRPC calls while ``on_drain`` hooks run, and stop the server after them
    (for services whose in-progress work may need new streams, e.g. a client reconnecting to
    its call); such a service refuses new work itself while draining."""
