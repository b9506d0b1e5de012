"""The plumbing both durable stores share: the runtime's session store and the integration
gateway's idempotency store, each in SQLite (local mode) or Redis (in a cluster).

:class:`SqliteStoreBase`: one aiosqlite connection (blocking SQLite calls on its own thread,
off the event loop) in autocommit and WAL mode, the store's schema, and expired rows purged
at most once a minute on writes. :class:`RedisStoreBase`: a Redis client with the password
from the URL or a mounted file (not both), secrets scrubbed from every error, quick
retries, and the store's Lua scripts registered at open. Every failure is a
:class:`StoreError` naming the store, the operation and the cause.

Each store keeps its own schema, scripts and semantics; this module needs the
``voicetyped-common[storage]`` extra (aiosqlite, redis), which only those two services install.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import aiosqlite
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from voicetyped.urls import redact_url

BUSY_TIMEOUT_S = 5.0
PURGE_EVERY_S = 60.0
REDIS_TIMEOUT_S = 2.0


class StoreError(Exception):
    """The store failed; the message names the store, the operation and the cause."""


def positive(seconds: float, what: str) -> float:
    if not seconds > 0:
        raise ValueError(f"{what} must be > 0, got {seconds!r}")
    return seconds


def positive_ms(seconds: float, what: str) -> int:
    """``seconds`` as whole milliseconds, at least 1 (Redis PX)."""
    return max(1, round(positive(seconds, what) * 1000))


class SqliteStoreBase:
    """One SQLite file (or ``":memory:"``) with the subclass's schema."""

    KIND: ClassVar[str] = ""
    """Prefix of every error message, e.g. ``"idempotency store "``."""
    SCHEMA: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int]
    TABLES: ClassVar[tuple[str, ...]]
    """Tables with an ``expires_at`` column (wall-clock seconds) that the purge empties."""
    SYNCHRONOUS: ClassVar[Literal["NORMAL", "FULL"]] = "NORMAL"
    """NORMAL survives a process crash; FULL also a power cut (a promise not to repeat)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db: aiosqlite.Connection | None = None
        self._next_purge = 0.0

    @property
    def label(self) -> str:
        return f"{self.KIND}sqlite {self.path}"

    @contextmanager
    def _errors(self, op: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"{self.label}: {op} failed: {exc}") from exc

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError(f"{self.label}: not open (call open() first)")
        return self._db

    async def open(self) -> None:
        if self._db is not None:
            return
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.label}: open failed: {exc}") from exc
        with self._errors("open"):
            # isolation_level=None: autocommit, every statement is its own transaction.
            db = await aiosqlite.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                await db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                # WAL: readers never block the writer.
                await db.execute("PRAGMA journal_mode = WAL")
                await db.execute(f"PRAGMA synchronous = {self.SYNCHRONOUS}")
                await db.executescript(self.SCHEMA)
                await db.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")
            except BaseException:
                await db.close()
                raise
        self._db = db
        await self.purge()

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            with self._errors("close"):
                await db.close()

    async def check(self) -> str | None:
        """None when the store answers, else why not (for /readyz)."""
        try:
            with self._errors("check"):
                await self._conn().execute("SELECT 1")
        except StoreError as exc:
            return str(exc)
        return None

    async def purge(self) -> None:
        """Delete every expired row now (otherwise done at most once a minute, on writes)."""
        now = time.time()
        self._next_purge = time.monotonic() + PURGE_EVERY_S
        with self._errors("purge"):
            for table in self.TABLES:
                await self._conn().execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now,))

    async def _maybe_purge(self) -> None:
        if time.monotonic() >= self._next_purge:
            await self.purge()


class RedisStoreBase:
    """A Redis client with the subclass's Lua scripts.

    The password comes from the URL or, for mounted secrets, from ``password_file`` (read at
    :meth:`open`; trailing newline ignored), not both.
    """

    KIND: ClassVar[str] = ""
    SCRIPTS: ClassVar[dict[str, str]] = {}
    """Script name -> Lua source, registered at :meth:`open`."""

    def __init__(
        self,
        url: str,
        key_prefix: str = "voicetyped:",
        password_file: Path | None = None,
        timeout_s: float = REDIS_TIMEOUT_S,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a redis:// or rediss:// URL: {redact_url(url)}")
        url_password = parts.password or dict(parse_qsl(parts.query)).get("password")
        if url_password and password_file is not None:
            raise ValueError("give the Redis password in the URL or in password_file, not both")
        self._url = url
        self.display_url = redact_url(url)
        self._prefix = key_prefix
        self._password_file = password_file
        self._timeout_s = timeout_s
        # Scrubbed from error messages, raw and percent-decoded.
        self._secrets = [s for s in (url_password, unquote(url_password or "")) if s]
        self._redis: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}

    @property
    def label(self) -> str:
        return f"{self.KIND}redis at {self.display_url}"

    @contextmanager
    def _errors(self, op: str) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            for secret in self._secrets:  # in case a library message echoes it
                detail = detail.replace(secret, "***")
            raise StoreError(f"{self.label}: {op} failed: {detail}") from exc

    def _client(self) -> Redis:
        if self._redis is None:
            raise StoreError(f"{self.label}: not open (call open() first)")
        return self._redis

    def _script(self, name: str) -> AsyncScript:
        self._client()  # raises if not open
        return self._scripts[name]

    async def open(self) -> None:
        """Connect and PING; StoreError if Redis does not answer. Idempotent."""
        if self._redis is not None:
            return
        password = None
        if self._password_file is not None:
            try:
                text = await asyncio.to_thread(self._password_file.read_text)
            except OSError as exc:
                raise StoreError(f"redis password file: {exc}") from None
            password = text.rstrip("\r\n") or None
            if password:
                self._secrets.append(password)
        client = Redis.from_url(
            self._url,
            password=password,
            socket_timeout=self._timeout_s,
            socket_connect_timeout=self._timeout_s,
            # A couple of quick retries ride out a reconnect; the default (10 retries, up to
            # 1 s apart) would keep /readyz hanging, and a call waiting, in an outage.
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.2), retries=2),
        )
        try:
            with self._errors("connect"):
                await client.ping()
        except StoreError:
            await client.aclose()
            raise
        self._scripts = {name: client.register_script(lua) for name, lua in self.SCRIPTS.items()}
        self._redis = client

    async def close(self) -> None:
        if self._redis is not None:
            client, self._redis = self._redis, None
            with self._errors("close"):
                await client.aclose()

    async def check(self) -> str | None:
        """None when Redis answers, else why not (for /readyz)."""
        try:
            with self._errors("ping"):
                await self._client().ping()
        except StoreError as exc:
            return str(exc)
        return None
