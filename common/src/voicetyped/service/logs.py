"""JSON structured logs (structlog) with the call's ``session_id`` on every line.

Bind the session once per call task with :func:`session_context`; every log
line written in that task (and tasks it starts) carries ``session_id``.
Standard-library loggers (grpc, aiohttp, asyncio) go through the same
renderer, so a service's stdout is one JSON object per line.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(
    r"(passw(or)?d|secret|token|authorization|api[_-]?key|cookie|credential|private[_-]?key)",
    re.IGNORECASE,
)


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) else _redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Replace the value of any key that names a secret, at any depth."""
    for key in list(event_dict):
        if key != "event" and _SECRET_KEY.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact(event_dict[key])
    return event_dict


def _add_service(service: str) -> Processor:
    def add(_: WrappedLogger, __: str, event_dict: MutableMapping[str, Any]) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add


def configure_logging(
    service: str, level: str = "info", fmt: Literal["json", "console"] = "json"
) -> None:
    """Route structlog and stdlib logging to stdout as JSON (or readable console lines)."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service(service),
        redact_secrets,
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            # stdlib records (aiosipua, grpc, our modules using logging): their ``extra``
            # fields become JSON keys, redacted like everything else.
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is noise for health probes; keep warnings and up. Some
    # libraries dump the data they handle at debug level (aiosqlite logs SQL arguments,
    # hpack header values): never let them, whatever the level, so no payload or
    # secret reaches the logs by way of a library.
    for noisy in ("aiohttp.access", "aiosqlite", "hpack", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


@contextmanager
def session_context(session_id: str, **extra: Any) -> Iterator[None]:
    """Bind ``session_id`` (and extra keys) to every log line in this context."""
    with structlog.contextvars.bound_contextvars(session_id=session_id, **extra):
        yield
