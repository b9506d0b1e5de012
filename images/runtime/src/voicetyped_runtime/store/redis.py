"""Redis session store: the in-cluster mode, shared by every runtime replica.

Keys (all under ``key_prefix``):

- ``session:<id>``: the document, with a PX TTL;
- ``live``: sorted set of session ids scored by their expiry deadline (ms, Redis
  server clock), so expired ids are filtered out and trimmed without a scan;
- ``lease:<id>``: the owner's name, with a PX TTL;
- ``archive:<id>``: an archived document, with a PX TTL of its retention.

Deadlines come from the server clock (``TIME`` inside the scripts), the same clock
that expires the keys, so client clock skew does not matter. The multi-key
scripts assume one Redis (or one slot): Redis Cluster is not supported.
"""

from __future__ import annotations

from voicetyped.storage import RedisStoreBase, positive_ms

_NOW_MS = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)"

# KEYS: document, live index. ARGV: document, ttl ms, session id.
_SAVE = f"""{_NOW_MS}
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
"""

# KEYS: live index. Trims expired ids and returns the others.
_LIST_LIVE = f"""{_NOW_MS}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], '(' .. now, '+inf', 'BYSCORE')
"""

# KEYS: lease. ARGV: owner, lease ms. An expired lease key is already gone.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"""

# KEYS: lease. ARGV: owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def _bytes(value: bytes | str | None) -> bytes | None:
    # The client is made with decode_responses=False, but a URL may override it.
    return value.encode() if isinstance(value, str) else value


class RedisStore(RedisStoreBase):
    """A :class:`~voicetyped_runtime.store.base.SessionStore` in Redis.

    The password comes from the URL or, for mounted secrets, from
    ``password_file`` (read at :meth:`open`; trailing newline ignored), not both.
    """

    SCRIPTS = {"save": _SAVE, "list_live": _LIST_LIVE, "claim": _CLAIM, "release": _RELEASE}

    def _key(self, kind: str, session_id: str = "") -> str:
        return f"{self._prefix}{kind}{':' if session_id else ''}{session_id}"

    async def save(self, session_id: str, document: bytes, ttl_s: float) -> None:
        ttl_ms = positive_ms(ttl_s, "ttl_s")
        with self._errors("save"):
            await self._script("save")(
                keys=[self._key("session", session_id), self._key("live")],
                args=[document, ttl_ms, session_id],
            )

    async def load(self, session_id: str) -> bytes | None:
        with self._errors("load"):
            return _bytes(await self._client().get(self._key("session", session_id)))

    async def delete(self, session_id: str) -> None:
        client = self._client()
        with self._errors("delete"):
            async with client.pipeline(transaction=True) as pipe:
                pipe.delete(self._key("session", session_id), self._key("lease", session_id))
                pipe.zrem(self._key("live"), session_id)
                await pipe.execute()

    async def list_live(self) -> list[str]:
        with self._errors("list_live"):
            ids: list[bytes | str] = await self._script("list_live")(keys=[self._key("live")])
        return sorted(i.decode() if isinstance(i, bytes) else i for i in ids)

    async def claim(self, session_id: str, owner: str, lease_s: float) -> bool:
        lease_ms = positive_ms(lease_s, "lease_s")
        with self._errors("claim"):
            won = await self._script("claim")(
                keys=[self._key("lease", session_id)], args=[owner, lease_ms]
            )
        return bool(won)

    async def release(self, session_id: str, owner: str) -> None:
        with self._errors("release"):
            await self._script("release")(keys=[self._key("lease", session_id)], args=[owner])

    async def archive(self, session_id: str, document: bytes, retention_s: float) -> None:
        retention_ms = positive_ms(retention_s, "retention_s")
        with self._errors("archive"):
            await self._client().set(self._key("archive", session_id), document, px=retention_ms)

    async def load_archived(self, session_id: str) -> bytes | None:
        with self._errors("load_archived"):
            return _bytes(await self._client().get(self._key("archive", session_id)))
