"""SQLite session store: embedded/local mode, one runtime process.

Expiry is an absolute wall-clock deadline (``time.time()``) stored in each row:
expired rows are invisible to reads and deleted by a purge that runs at most
once a minute, piggybacking on writes. aiosqlite runs the blocking SQLite calls
on its own thread, off the event loop.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiosqlite

from voicetyped_runtime.store.base import StoreError

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, document BLOB NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at);
CREATE TABLE IF NOT EXISTS leases (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS leases_expires_at ON leases (expires_at);
CREATE TABLE IF NOT EXISTS archive (
    id TEXT PRIMARY KEY, document BLOB NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS archive_expires_at ON archive (expires_at);
"""
_TABLES = ("sessions", "leases", "archive")

# Take (or renew) the lease unless another owner's lease is still valid. One
# statement, so it is atomic even against other processes sharing the file.
_CLAIM = """
INSERT INTO leases (id, owner, expires_at) VALUES (:id, :owner, :expires_at)
ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE leases.owner = excluded.owner OR leases.expires_at <= :now
"""

BUSY_TIMEOUT_S = 5.0
PURGE_EVERY_S = 60.0


def _positive(seconds: float, what: str) -> float:
    if not seconds > 0:
        raise ValueError(f"{what} must be > 0, got {seconds!r}")
    return seconds


class SqliteStore:
    """A :class:`~voicetyped_runtime.store.base.SessionStore` in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db: aiosqlite.Connection | None = None
        self._next_purge = 0.0

    @contextmanager
    def _errors(self, op: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite {self.path}: {op} failed: {exc}") from exc

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError(f"sqlite {self.path}: store is not open (call open() first)")
        return self._db

    async def open(self) -> None:
        if self._db is not None:
            return
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"sqlite {self.path}: open failed: {exc}") from exc
        with self._errors("open"):
            # isolation_level=None: autocommit, every statement is its own transaction.
            db = await aiosqlite.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                await db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                # WAL: readers never block the writer. NORMAL: durable against a
                # process crash; a power cut can lose the last commits, which the
                # next turn rewrites anyway.
                await db.execute("PRAGMA journal_mode = WAL")
                await db.execute("PRAGMA synchronous = NORMAL")
                await db.executescript(_SCHEMA)
                await db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
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
        try:
            with self._errors("check"):
                await self._conn().execute("SELECT 1")
        except StoreError as exc:
            return str(exc)
        return None

    async def purge(self) -> None:
        """Delete every expired row now (otherwise done lazily, see module doc)."""
        now = time.time()
        self._next_purge = time.monotonic() + PURGE_EVERY_S
        with self._errors("purge"):
            for table in _TABLES:
                await self._conn().execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now,))

    async def _maybe_purge(self) -> None:
        if time.monotonic() >= self._next_purge:
            await self.purge()

    async def save(self, session_id: str, document: bytes, ttl_s: float) -> None:
        expires_at = time.time() + _positive(ttl_s, "ttl_s")
        with self._errors("save"):
            await self._conn().execute(
                "INSERT OR REPLACE INTO sessions (id, document, expires_at) VALUES (?, ?, ?)",
                (session_id, document, expires_at),
            )
        await self._maybe_purge()

    async def load(self, session_id: str) -> bytes | None:
        return await self._get("sessions", session_id)

    async def _get(self, table: str, session_id: str) -> bytes | None:
        # execute_fetchall: one hop to the aiosqlite thread instead of three.
        with self._errors("load"):
            rows = await self._conn().execute_fetchall(
                f"SELECT document FROM {table} WHERE id = ? AND expires_at > ?",
                (session_id, time.time()),
            )
        for row in rows:
            return bytes(row[0])
        return None

    async def delete(self, session_id: str) -> None:
        # Two autocommit statements, not a transaction: other coroutines share this
        # connection, and a stray lease without its document is harmless anyway.
        with self._errors("delete"):
            for table in ("sessions", "leases"):
                await self._conn().execute(f"DELETE FROM {table} WHERE id = ?", (session_id,))

    async def list_live(self) -> list[str]:
        with self._errors("list_live"):
            rows = await self._conn().execute_fetchall(
                "SELECT id FROM sessions WHERE expires_at > ? ORDER BY id", (time.time(),)
            )
        return [row[0] for row in rows]

    async def claim(self, session_id: str, owner: str, lease_s: float) -> bool:
        now = time.time()
        params = {
            "id": session_id,
            "owner": owner,
            "expires_at": now + _positive(lease_s, "lease_s"),
            "now": now,
        }
        with self._errors("claim"):
            cursor = await self._conn().execute(_CLAIM, params)
        await self._maybe_purge()
        # rowcount is 0 when the ON CONFLICT ... WHERE declined the update.
        return cursor.rowcount == 1

    async def release(self, session_id: str, owner: str) -> None:
        with self._errors("release"):
            await self._conn().execute(
                "DELETE FROM leases WHERE id = ? AND owner = ?", (session_id, owner)
            )

    async def archive(self, session_id: str, document: bytes, retention_s: float) -> None:
        expires_at = time.time() + _positive(retention_s, "retention_s")
        with self._errors("archive"):
            await self._conn().execute(
                "INSERT OR REPLACE INTO archive (id, document, expires_at) VALUES (?, ?, ?)",
                (session_id, document, expires_at),
            )
        await self._maybe_purge()

    async def load_archived(self, session_id: str) -> bytes | None:
        return await self._get("archive", session_id)
