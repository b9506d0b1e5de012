"""Open a session store from its URL (``VOICETYPED_STORE_URL``-style config).

- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (the SQLAlchemy
  convention: what follows ``sqlite:///`` is the path), ``sqlite://:memory:``;
- ``redis://[user:password@]host[:port][/db]``, ``rediss://...`` (TLS).
"""

from __future__ import annotations

from pathlib import Path

from voicetyped.urls import redact_url

from voicetyped_runtime.store.base import SessionStore
from voicetyped_runtime.store.redis import RedisStore
from voicetyped_runtime.store.sqlite import SqliteStore


def store_from_url(url: str, *, redis_password_file: Path | None = None) -> SessionStore:
    """The store for ``url``, not yet opened. ValueError for an unknown scheme."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"session store URL has no scheme: {redact_url(url)!r}")
    if scheme == "sqlite":
        if rest in (":memory:", "/:memory:"):
            return SqliteStore(":memory:")
        if not rest.startswith("/") or rest == "/":
            raise ValueError(f"expected sqlite:///<path> or sqlite://:memory:, got {url!r}")
        return SqliteStore(rest[1:])
    if scheme in ("redis", "rediss"):
        return RedisStore(url, password_file=redis_password_file)
    raise ValueError(f"unknown session store scheme {scheme!r} (expected sqlite, redis or rediss)")


async def open_store(url: str, *, redis_password_file: Path | None = None) -> SessionStore:
    """The store for ``url``, opened (connected, schema created); the caller closes it."""
    store = store_from_url(url, redis_password_file=redis_password_file)
    await store.open()
    return store
