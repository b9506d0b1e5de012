"""The session stores against the real thing: SQLite files and a real redis-server.

Every behavioural test runs on both stores. Expiry tests use short TTLs and then
sleep several times longer, so they never depend on tight timing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from voicetyped.urls import redact_url
from voicetyped_runtime.store.base import SessionStore, StoreError
from voicetyped_runtime.store.factory import open_store, store_from_url
from voicetyped_runtime.store.redis import RedisStore
from voicetyped_runtime.store.sqlite import SqliteStore
from voicetyped_testkit.processes import free_port
from voicetyped_testkit.redis_server import RedisServer, RedisServerError

SHORT_S = 0.5  # a TTL that must still be valid right after it is set ...
AFTER_S = 1.5  # ... and must have run out after this long

NewStore = Callable[[], SessionStore]


def document(n: int = 0) -> bytes:
    body = {"session_id": f"s{n}", "state": "confirm", "transcript": "naïve café ☕" * 50}
    return json.dumps(body, ensure_ascii=False).encode()


@pytest.fixture(params=["sqlite", "redis"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> NewStore:
    """Makes unopened stores that all share one backing database."""
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path / "sessions.db")
    url: str = request.getfixturevalue("redis_url")
    return lambda: RedisStore(url)


@pytest.fixture
async def store(new_store: NewStore) -> AsyncIterator[SessionStore]:
    opened = new_store()
    await opened.open()
    yield opened
    await opened.close()


async def test_save_load_round_trip_and_overwrite(store: SessionStore) -> None:
    assert await store.load("s1") is None
    await store.save("s1", document(1), ttl_s=60)
    assert await store.load("s1") == document(1)
    await store.save("s1", document(2), ttl_s=60)
    assert await store.load("s1") == document(2)
    assert await store.list_live() == ["s1"]


async def test_delete_is_idempotent_and_drops_the_lease(store: SessionStore) -> None:
    await store.save("s1", document(), ttl_s=60)
    assert await store.claim("s1", "replica-a", lease_s=60)
    await store.delete("s1")
    await store.delete("s1")
    await store.delete("never-existed")
    assert await store.load("s1") is None
    assert await store.list_live() == []
    assert await store.claim("s1", "replica-b", lease_s=60)


async def test_ttl_expiry_hides_documents_and_save_resets_the_ttl(store: SessionStore) -> None:
    await store.save("short", document(), ttl_s=SHORT_S)
    await store.save("long", document(), ttl_s=60)
    await store.save("refreshed", document(), ttl_s=SHORT_S)
    await store.save("refreshed", document(), ttl_s=60)
    assert await store.load("short") == document()
    assert await store.list_live() == ["long", "refreshed", "short"]
    await asyncio.sleep(AFTER_S)
    assert await store.load("short") is None
    assert await store.list_live() == ["long", "refreshed"]
    assert await store.load("refreshed") == document()


async def test_list_live_is_sorted(store: SessionStore) -> None:
    for session_id in ["c", "a", "b"]:
        await store.save(session_id, document(), ttl_s=60)
    assert await store.list_live() == ["a", "b", "c"]


async def test_claim_free_own_and_taken(store: SessionStore) -> None:
    assert await store.claim("s1", "replica-a", lease_s=60)
    assert await store.claim("s1", "replica-a", lease_s=60)  # renew
    assert not await store.claim("s1", "replica-b", lease_s=60)
    assert await store.claim("s2", "replica-b", lease_s=60)  # leases are per session


async def test_claim_after_the_lease_expired(store: SessionStore) -> None:
    assert await store.claim("s1", "replica-a", lease_s=SHORT_S)
    assert not await store.claim("s1", "replica-b", lease_s=60)
    await asyncio.sleep(AFTER_S)
    assert await store.claim("s1", "replica-b", lease_s=60)
    assert not await store.claim("s1", "replica-a", lease_s=60)


async def test_release_only_by_the_holder(store: SessionStore) -> None:
    assert await store.claim("s1", "replica-a", lease_s=60)
    await store.release("s1", "replica-b")
    assert not await store.claim("s1", "replica-b", lease_s=60)
    await store.release("s1", "replica-a")
    await store.release("s1", "replica-a")  # idempotent
    assert await store.claim("s1", "replica-b", lease_s=60)


@pytest.mark.parametrize("shared", [True, False], ids=["one-client", "20-clients"])
async def test_concurrent_claims_have_exactly_one_winner(new_store: NewStore, shared: bool) -> None:
    stores = [new_store()] if shared else [new_store() for _ in range(20)]
    for opened in stores:
        await opened.open()
    try:
        results = await asyncio.gather(
            *(stores[i % len(stores)].claim("s1", f"replica-{i}", lease_s=60) for i in range(20))
        )
    finally:
        for opened in stores:
            await opened.close()
    assert sum(results) == 1


async def test_archive_with_retention(store: SessionStore) -> None:
    await store.save("s1", document(1), ttl_s=60)
    await store.archive("s1", document(2), retention_s=SHORT_S)
    await store.archive("kept", document(3), retention_s=60)
    await store.delete("s1")  # the call ended: the live document goes, the archive stays
    assert await store.load_archived("s1") == document(2)
    assert await store.load_archived("missing") is None
    assert await store.list_live() == []
    await asyncio.sleep(AFTER_S)
    assert await store.load_archived("s1") is None
    assert await store.load_archived("kept") == document(3)


async def test_open_is_idempotent_and_close_makes_check_fail(new_store: NewStore) -> None:
    opened = new_store()
    await opened.open()
    await opened.open()
    assert await opened.check() is None
    await opened.close()
    await opened.close()
    reason = await opened.check()
    assert reason is not None
    assert "not open" in reason
    with pytest.raises(StoreError, match="not open"):
        await opened.save("s1", document(), ttl_s=60)


@pytest.mark.parametrize("ttl_s", [0, -1])
async def test_non_positive_ttl_is_rejected(store: SessionStore, ttl_s: float) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        await store.save("s1", document(), ttl_s=ttl_s)
    with pytest.raises(ValueError, match="lease_s"):
        await store.claim("s1", "replica-a", lease_s=ttl_s)


async def test_sqlite_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "sessions.db"  # parent directories are created
    first = SqliteStore(path)
    await first.open()
    await first.save("s1", document(), ttl_s=60)
    assert await first.claim("s1", "replica-a", lease_s=60)
    await first.archive("s0", document(0), retention_s=60)
    await first.close()

    second = SqliteStore(path)
    await second.open()
    try:
        assert await second.load("s1") == document()
        assert await second.list_live() == ["s1"]
        assert not await second.claim("s1", "replica-b", lease_s=60)
        assert await second.load_archived("s0") == document(0)
    finally:
        await second.close()


async def test_sqlite_in_memory() -> None:
    store = await open_store("sqlite://:memory:")
    try:
        await store.save("s1", document(), ttl_s=60)
        assert await store.load("s1") == document()
    finally:
        await store.close()


async def test_redis_key_prefixes_isolate_deployments(redis_url: str) -> None:
    blue, green = RedisStore(redis_url, key_prefix="blue:"), RedisStore(redis_url, "green:")
    await blue.open()
    await green.open()
    try:
        await blue.save("s1", document(), ttl_s=60)
        assert await blue.claim("s1", "replica-a", lease_s=60)
        assert await green.load("s1") is None
        assert await green.list_live() == []
        assert await green.claim("s1", "replica-b", lease_s=60)
    finally:
        await blue.close()
        await green.close()


async def test_redis_check_reports_an_outage_and_recovers() -> None:
    with RedisServer() as server:
        store = RedisStore(server.url)
        await store.open()
        try:
            await store.save("s1", document(), ttl_s=60)
            assert await store.check() is None

            server.stop()
            reason = await store.check()
            assert reason is not None
            assert f"127.0.0.1:{server.port}" in reason
            with pytest.raises(StoreError, match="save failed"):
                await store.save("s1", document(), ttl_s=60)

            server.start()  # same port, empty (no persistence), scripts not loaded
            assert await store.check() is None
            await store.save("s1", document(), ttl_s=60)
            assert await store.list_live() == ["s1"]
            assert await store.claim("s1", "replica-a", lease_s=60)
        finally:
            await store.close()


async def test_unreachable_redis_is_a_store_error_without_the_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    store = RedisStore(url)
    with pytest.raises(StoreError) as caught:
        await store.open()
    message = str(caught.value)
    assert "hunter2" not in message
    assert "redis://***@127.0.0.1:" in message
    assert "connect failed" in message


async def test_redis_password_from_a_file(tmp_path: Path) -> None:
    with RedisServer(password="s3cr3t-pw") as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        good = tmp_path / "password"
        good.write_text("s3cr3t-pw\n")  # as mounted from a Secret, trailing newline
        store = RedisStore(url, password_file=good)
        await store.open()
        try:
            await store.save("s1", document(), ttl_s=60)
            assert await store.load("s1") == document()
        finally:
            await store.close()

        bad = tmp_path / "wrong"
        bad.write_text("not-the-password")
        with pytest.raises(StoreError) as caught:
            await RedisStore(url, password_file=bad).open()
        assert "not-the-password" not in str(caught.value)

        with pytest.raises(StoreError, match="password file"):
            await RedisStore(url, password_file=tmp_path / "absent").open()


def test_redis_password_in_url_and_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        RedisStore("redis://:pw@127.0.0.1:6379", password_file=tmp_path / "pw")


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://:secret@host:6379/0", "redis://***@host:6379/0"),
        ("rediss://user:secret@host", "rediss://***@host"),
        ("redis://host:6379", "redis://host:6379"),
        ("redis://host/0?password=secret&db=1", "redis://host/0?password=***&db=1"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_store_from_url_schemes(tmp_path: Path) -> None:
    absolute = store_from_url(f"sqlite:///{tmp_path}/s.db")  # -> sqlite:////tmp/...
    assert isinstance(absolute, SqliteStore)
    assert absolute.path == f"{tmp_path}/s.db"
    relative = store_from_url("sqlite:///data/s.db")
    assert isinstance(relative, SqliteStore)
    assert relative.path == "data/s.db"
    memory = store_from_url("sqlite://:memory:")
    assert isinstance(memory, SqliteStore)
    assert memory.path == ":memory:"
    assert isinstance(store_from_url("redis://127.0.0.1:6379/0"), RedisStore)
    assert isinstance(store_from_url("rediss://127.0.0.1:6380/0"), RedisStore)
    with pytest.raises(ValueError, match="'memcached'"):
        store_from_url("memcached://127.0.0.1:11211")
    with pytest.raises(ValueError, match="no scheme"):
        store_from_url("/var/lib/sessions.db")


async def test_open_store_returns_an_opened_store(redis_url: str) -> None:
    store = await open_store(redis_url)
    try:
        assert await store.check() is None
    finally:
        await store.close()


def test_redis_server_missing_binary_says_how_to_install() -> None:
    with pytest.raises(RedisServerError, match="make system-deps"):
        RedisServer(binary="redis-server-not-installed").start()
