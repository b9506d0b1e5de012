"""The idempotency store: a retried action runs at most once while it is remembered.

Delivery is at-least-once end to end (the runtime retries an action whose
answer it did not get, possibly against another gateway replica, possibly
after this one restarted); this store turns the repeats into one execution:

1. :meth:`IdempotencyStore.begin` before calling the backend. Exactly one of
   any number of concurrent callers (across replicas and restarts) gets
   ``"new"`` and holds the **in-progress marker**; the others get
   ``"in_progress"`` (wait with :meth:`~IdempotencyStore.wait`, or answer
   "busy") or ``"done"`` with the stored result (answer it, do not call the
   backend again). The marker is a **lease** of ``lease_s``: if the gateway
   holding it dies, the marker expires and a retry can proceed. Give a lease at
   least as long as the action may take, retries included.
2. Then exactly one of:

   - :meth:`~IdempotencyStore.complete` for a **final** outcome: a success, or a
     typed error the backend decided (``not_found``, ``invalid``, a rejected
     request). The result replaces the marker and answers every repeat for
     ``retention_s``. Repeating would only get the same answer (or, worse, a
     different one once the backend state moved on).
   - :meth:`~IdempotencyStore.abandon` for an outcome that says nothing about
     the backend's answer: timeouts, connect errors, 5xx after the retries ran
     out, breaker open, rate limited. The marker is dropped so a later retry
     tries again. At-least-once: an abandoned attempt may still have taken
     effect at the backend, which is why the gateway sends the same
     ``Idempotency-Key`` on every attempt; a backend that honours it
     deduplicates the rest.

``owner`` identifies the attempt holding the marker; :meth:`complete` and
:meth:`abandon` by anyone else are ignored (they return False). A completion
that arrives after its lease expired is still stored if nobody else took the
key meanwhile: the action did happen, and remembering its result is what this
store is for. :meth:`begin` is *not* re-entrant: a valid marker answers
``"in_progress"`` even to the owner that holds it, so two concurrent repeats
inside one replica (one ``owner``) cannot both run.

Keys are global to the store: the caller makes them unique (integration,
operation and the client's idempotency key).

Two implementations with the same behaviour: :class:`SqliteIdempotencyStore`
(one file; embedded / single replica; expiry by absolute wall-clock deadlines
in each row, so it holds across restarts) and :class:`RedisIdempotencyStore`
(shared by all replicas; expiry by ``PX`` TTLs on the Redis server's clock).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from voicetyped.storage import (
    RedisStoreBase,
    SqliteStoreBase,
    positive,
    positive_ms,
)
from voicetyped.storage import (
    StoreError as StoreError,  # re-exported: callers catch it from here
)
from voicetyped.urls import redact_url

BeginStatus = Literal["new", "done", "in_progress"]

POLL_MIN_S = 0.01
POLL_MAX_S = 0.25


@dataclass(frozen=True, slots=True)
class Begin:
    """The state of a key.

    From :meth:`IdempotencyStore.begin`: ``"new"``: the caller now holds the
    in-progress marker; ``"in_progress"``: a valid marker is held (by anyone,
    the caller included); ``"done"``: ``result`` holds the stored result.

    From :meth:`~IdempotencyStore.wait` and :meth:`~IdempotencyStore.peek`,
    which never take the marker, ``"new"`` means *free*: no marker and no
    result, call :meth:`~IdempotencyStore.begin` (which may still find that
    someone else was faster).
    """

    status: BeginStatus
    result: bytes | None = None


NEW = Begin("new")
IN_PROGRESS = Begin("in_progress")


class IdempotencyStore(Protocol):
    async def open(self) -> None:
        """Connect / create the schema. Idempotent. StoreError if unreachable."""

    async def close(self) -> None: ...

    async def check(self) -> str | None:
        """None when the store answers, else a short reason (for /readyz)."""

    async def begin(self, key: str, owner: str, lease_s: float) -> Begin:
        """Take the in-progress marker for ``lease_s``, or report who has the key."""

    async def complete(self, key: str, owner: str, result: bytes, retention_s: float) -> bool:
        """Store the final result for ``retention_s``, replacing ``owner``'s marker.

        True if stored; False (ignored) if another owner holds a valid marker or
        a result is already stored.
        """

    async def abandon(self, key: str, owner: str) -> bool:
        """Drop ``owner``'s marker, so a later attempt can run. False if not held."""

    async def peek(self, key: str) -> Begin:
        """The key's state now, without taking anything ("new" meaning free)."""

    async def wait(self, key: str, timeout_s: float) -> Begin:
        """Poll until the key is done or free, at most ``timeout_s``.

        ``"done"`` (with the result), ``"new"`` (free: the marker was abandoned
        or expired; call :meth:`begin`), or ``"in_progress"`` when ``timeout_s``
        ran out first.
        """


async def _poll(peek: Callable[[], Awaitable[Begin]], timeout_s: float) -> Begin:
    """Shared :meth:`IdempotencyStore.wait`: backs off from 10 ms to 250 ms between peeks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, timeout_s)
    interval = POLL_MIN_S
    while True:
        state = await peek()
        left = deadline - loop.time()
        if state.status != "in_progress" or left <= 0:
            return state
        await asyncio.sleep(min(interval, left))
        interval = min(interval * 2, POLL_MAX_S)


# ---- SQLite --------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    done INTEGER NOT NULL,
    result BLOB,
    expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS idempotency_expires_at ON idempotency (expires_at);
"""
_SCHEMA_VERSION = 1

# One statement each, so atomic even against other processes sharing the file.
# An expired row is as good as no row (the purge deletes it later).
_BEGIN = """
INSERT INTO idempotency (id, owner, done, result, expires_at)
VALUES (:id, :owner, 0, NULL, :expires_at)
ON CONFLICT (id) DO UPDATE SET
    owner = excluded.owner, done = 0, result = NULL, expires_at = excluded.expires_at
WHERE idempotency.expires_at <= :now
"""
_COMPLETE = """
INSERT INTO idempotency (id, owner, done, result, expires_at)
VALUES (:id, :owner, 1, :result, :expires_at)
ON CONFLICT (id) DO UPDATE SET
    owner = excluded.owner, done = 1, result = excluded.result, expires_at = excluded.expires_at
WHERE idempotency.expires_at <= :now
   OR (idempotency.done = 0 AND idempotency.owner = excluded.owner)
"""
_ABANDON = "DELETE FROM idempotency WHERE id = ? AND owner = ? AND done = 0"
_PEEK = "SELECT done, result FROM idempotency WHERE id = ? AND expires_at > ?"


class SqliteIdempotencyStore(SqliteStoreBase):
    """An :class:`IdempotencyStore` in one SQLite file (or ``":memory:"``)."""

    KIND = "idempotency store "
    SCHEMA = _SCHEMA
    SCHEMA_VERSION = _SCHEMA_VERSION
    TABLES = ("idempotency",)
    # FULL, not NORMAL: a stored result is a promise not to repeat a charge, so it must
    # survive a power cut, not only a crash.
    SYNCHRONOUS = "FULL"

    async def begin(self, key: str, owner: str, lease_s: float) -> Begin:
        positive(lease_s, "lease_s")
        # The upsert and the read that explains a refusal are two statements; if
        # the blocking row expires in between, take the key on the next round.
        for _ in range(3):
            now = time.time()
            params = {"id": key, "owner": owner, "expires_at": now + lease_s, "now": now}
            with self._errors("begin"):
                cursor = await self._conn().execute(_BEGIN, params)
            if cursor.rowcount == 1:  # 0 when ON CONFLICT ... WHERE declined
                await self._maybe_purge()
                return NEW
            state = await self.peek(key)
            if state.status != "new":
                return state
        raise StoreError(f"idempotency store sqlite {self.path}: begin kept racing on {key!r}")

    async def complete(self, key: str, owner: str, result: bytes, retention_s: float) -> bool:
        now = time.time()
        params = {
            "id": key,
            "owner": owner,
            "result": result,
            "expires_at": now + positive(retention_s, "retention_s"),
            "now": now,
        }
        with self._errors("complete"):
            cursor = await self._conn().execute(_COMPLETE, params)
        return cursor.rowcount == 1

    async def abandon(self, key: str, owner: str) -> bool:
        with self._errors("abandon"):
            cursor = await self._conn().execute(_ABANDON, (key, owner))
        return cursor.rowcount == 1

    async def peek(self, key: str) -> Begin:
        with self._errors("peek"):
            rows = await self._conn().execute_fetchall(_PEEK, (key, time.time()))
        for done, result in rows:
            return Begin("done", bytes(result)) if done else IN_PROGRESS
        return NEW

    async def wait(self, key: str, timeout_s: float) -> Begin:
        return await _poll(lambda: self.peek(key), timeout_s)


# ---- Redis ---------------------------------------------------------------------------

# One hash per key: state ("in_progress" | "done"), owner, result; PX TTL.
# Each script touches only its one key. An expired key is simply gone.

# KEYS: key. ARGV: owner, lease ms.
_REDIS_BEGIN = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
    redis.call('HSET', KEYS[1], 'state', 'in_progress', 'owner', ARGV[1])
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {'new'}
end
if state == 'done' then
    return {'done', redis.call('HGET', KEYS[1], 'result')}
end
return {'in_progress'}
"""

# KEYS: key. ARGV: owner, result, retention ms.
_REDIS_COMPLETE = """
local found = redis.call('HMGET', KEYS[1], 'state', 'owner')
if found[1] and not (found[1] == 'in_progress' and found[2] == ARGV[1]) then
    return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'done', 'owner', ARGV[1], 'result', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: key. ARGV: owner.
_REDIS_ABANDON = """
local found = redis.call('HMGET', KEYS[1], 'state', 'owner')
if found[1] == 'in_progress' and found[2] == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _raw(value: bytes | str) -> bytes:
    # The client is made with decode_responses=False, but a URL may override it.
    return value.encode() if isinstance(value, str) else value


class RedisIdempotencyStore(RedisStoreBase):
    """An :class:`IdempotencyStore` in Redis, shared by every gateway replica.

    The password comes from the URL or, for mounted secrets, from
    ``password_file`` (read at :meth:`open`; trailing newline ignored), not both.
    Error messages carry the URL with its credentials masked.
    """

    KIND = "idempotency store "
    SCRIPTS = {"begin": _REDIS_BEGIN, "complete": _REDIS_COMPLETE, "abandon": _REDIS_ABANDON}

    async def begin(self, key: str, owner: str, lease_s: float) -> Begin:
        lease_ms = positive_ms(lease_s, "lease_s")
        with self._errors("begin"):
            reply: list[bytes | str] = await self._script("begin")(
                keys=[self._prefix + key], args=[owner, lease_ms]
            )
        status = _text(reply[0])
        if status == "new":
            return NEW
        if status == "done":
            return Begin("done", _raw(reply[1]))
        return IN_PROGRESS

    async def complete(self, key: str, owner: str, result: bytes, retention_s: float) -> bool:
        retention_ms = positive_ms(retention_s, "retention_s")
        with self._errors("complete"):
            stored = await self._script("complete")(
                keys=[self._prefix + key], args=[owner, result, retention_ms]
            )
        return bool(stored)

    async def abandon(self, key: str, owner: str) -> bool:
        with self._errors("abandon"):
            dropped = await self._script("abandon")(keys=[self._prefix + key], args=[owner])
        return bool(dropped)

    async def peek(self, key: str) -> Begin:
        with self._errors("peek"):
            state, result = await self._client().hmget(self._prefix + key, ["state", "result"])
        if state is None:
            return NEW
        if _text(state) == "done" and result is not None:
            return Begin("done", _raw(result))
        return IN_PROGRESS

    async def wait(self, key: str, timeout_s: float) -> Begin:
        return await _poll(lambda: self.peek(key), timeout_s)


# ---- factory -------------------------------------------------------------------------


def open_idempotency_store(url: str, password_file: Path | None = None) -> IdempotencyStore:
    """The store for ``url``, **not yet opened** (``await store.open()``; the caller closes).

    - ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (what follows
      ``sqlite:///`` is the path), ``sqlite://:memory:``;
    - ``redis://[user:password@]host[:port][/db]``, ``rediss://...`` (TLS);
      ``password_file`` applies to these only.

    ValueError for anything else.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"idempotency store URL has no scheme: {redact_url(url)!r}")
    if scheme == "sqlite":
        if rest in (":memory:", "/:memory:"):
            return SqliteIdempotencyStore(":memory:")
        if not rest.startswith("/") or rest == "/":
            raise ValueError(f"expected sqlite:///<path> or sqlite://:memory:, got {url!r}")
        return SqliteIdempotencyStore(rest[1:])
    if scheme in ("redis", "rediss"):
        return RedisIdempotencyStore(url, password_file=password_file)
    raise ValueError(
        f"unknown idempotency store scheme {scheme!r} (expected sqlite, redis or rediss)"
    )
