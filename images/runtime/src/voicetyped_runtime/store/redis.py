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

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from voicetyped.urls import redact_url

from voicetyped_runtime.store.base import StoreError

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

TIMEOUT_S = 2.0


def _bytes(value: bytes | str | None) -> bytes | None:
    # The client is made with decode_responses=False, but a URL may override it.
    return value.encode() if isinstance(value, str) else value


def _ms(seconds: float, what: str) -> int:
    if not seconds > 0:
        raise ValueError(f"{what} must be > 0, got {seconds!r}")
    return max(1, round(seconds * 1000))


class RedisStore:
    """A :class:`~voicetyped_runtime.store.base.SessionStore` in Redis.

    The password comes from the URL or, for mounted secrets, from
    ``password_file`` (read at :meth:`open`; trailing newline ignored), not both.
    """

    def __init__(
        self,
        url: str,
        key_prefix: str = "voicetyped:",
        password_file: Path | None = None,
        timeout_s: float = TIMEOUT_S,
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

    def _key(self, kind: str, session_id: str = "") -> str:
        return f"{self._prefix}{kind}{':' if session_id else ''}{session_id}"

    @contextmanager
    def _errors(self, op: str) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            for secret in self._secrets:  # in case a library message echoes it
                detail = detail.replace(secret, "***")
            raise StoreError(f"redis at {self.display_url}: {op} failed: {detail}") from exc

    def _client(self) -> Redis:
        if self._redis is None:
            raise StoreError(f"redis at {self.display_url}: store is not open (call open() first)")
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
            # A couple of quick retries ride out a reconnect; the default (10
            # retries, up to 1 s apart) would keep /readyz hanging in an outage.
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.2), retries=2),
        )
        try:
            with self._errors("connect"):
                await client.ping()
        except StoreError:
            await client.aclose()
            raise
        self._scripts = {
            name: client.register_script(source)
            for name, source in [
                ("save", _SAVE),
                ("list_live", _LIST_LIVE),
                ("claim", _CLAIM),
                ("release", _RELEASE),
            ]
        }
        self._redis = client

    async def close(self) -> None:
        if self._redis is not None:
            client, self._redis = self._redis, None
            with self._errors("close"):
                await client.aclose()

    async def check(self) -> str | None:
        try:
            with self._errors("ping"):
                await self._client().ping()
        except StoreError as exc:
            return str(exc)
        return None

    async def save(self, session_id: str, document: bytes, ttl_s: float) -> None:
        ttl_ms = _ms(ttl_s, "ttl_s")
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
        lease_ms = _ms(lease_s, "lease_s")
        with self._errors("claim"):
            won = await self._script("claim")(
                keys=[self._key("lease", session_id)], args=[owner, lease_ms]
            )
        return bool(won)

    async def release(self, session_id: str, owner: str) -> None:
        with self._errors("release"):
            await self._script("release")(keys=[self._key("lease", session_id)], args=[owner])

    async def archive(self, session_id: str, document: bytes, retention_s: float) -> None:
        retention_ms = _ms(retention_s, "retention_s")
        with self._errors("archive"):
            await self._client().set(self._key("archive", session_id), document, px=retention_ms)

    async def load_archived(self, session_id: str) -> bytes | None:
        with self._errors("load_archived"):
            return _bytes(await self._client().get(self._key("archive", session_id)))
