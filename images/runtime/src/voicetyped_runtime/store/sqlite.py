"""SQLite session store: embedded/local mode, one runtime process.

Expiry is an absolute wall-clock deadline (``time.time()``) stored in each row:
expired rows are invisible to reads and deleted by a purge that runs at most
once a minute, piggybacking on writes. aiosqlite runs the blocking SQLite calls
on its own thread, off the event loop.
"""

from __future__ import annotations

import time

from voicetyped.storage import SqliteStoreBase, positive

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


class SqliteStore(SqliteStoreBase):
    """A :class:`~voicetyped_runtime.store.base.SessionStore` in one SQLite file."""

    SCHEMA = _SCHEMA
    SCHEMA_VERSION = _SCHEMA_VERSION
    TABLES = _TABLES
    # NORMAL: durable against a process crash; a power cut can lose the last commits,
    # which the next turn rewrites anyway.
    SYNCHRONOUS = "NORMAL"

    async def save(self, session_id: str, document: bytes, ttl_s: float) -> None:
        expires_at = time.time() + positive(ttl_s, "ttl_s")
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
            "expires_at": now + positive(lease_s, "lease_s"),
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
        expires_at = time.time() + positive(retention_s, "retention_s")
        with self._errors("archive"):
            await self._conn().execute(
                "INSERT OR REPLACE INTO archive (id, document, expires_at) VALUES (?, ?, ?)",
                (session_id, document, expires_at),
            )
        await self._maybe_purge()

    async def load_archived(self, session_id: str) -> bytes | None:
        return await self._get("archive", session_id)
