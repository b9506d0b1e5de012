"""The idempotency stores against the real thing: SQLite files and a real redis-server.

Every behavioural test runs on both stores. Expiry tests use short leases and then
sleep a couple of times longer, so they never depend on tight timing. The Redis
fixtures live here (not in conftest.py) and have names of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
from voicetyped_integration.dedup import (
    Begin,
    IdempotencyStore,
    RedisIdempotencyStore,
    SqliteIdempotencyStore,
    StoreError,
    open_idempotency_store,
)
from voicetyped_testkit.redis_server import RedisServer

SHORT_S = 0.3  # a lease that must still be valid right after it is taken ...
AFTER_S = 0.7  # ... and must have run out after this long
LONG_S = 60.0
RESULT = b'{"status":"charged","amount":12.5}\x00\xff'  # opaque bytes, not UTF-8

NewStore = Callable[[], IdempotencyStore]


@pytest.fixture(scope="module")
def dedup_redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def dedup_redis_url(dedup_redis_server: RedisServer) -> str:
    """The module's server, emptied for this test."""
    client = redis.Redis.from_url(dedup_redis_server.url)
    try:
        client.flushdb()
    finally:
        client.close()
    return dedup_redis_server.url


@pytest.fixture(params=["sqlite", "redis"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> NewStore:
    """Makes unopened stores that all share one backing database (a gateway restart
    or another replica is a new store on the same data)."""
    if request.param == "sqlite":
        return lambda: SqliteIdempotencyStore(tmp_path / "state" / "idempotency.db")
    url: str = request.getfixturevalue("dedup_redis_url")
    return lambda: RedisIdempotencyStore(url)


@pytest.fixture
async def store(new_store: NewStore) -> AsyncIterator[IdempotencyStore]:
    opened = new_store()
    await opened.open()
    yield opened
    await opened.close()


async def test_new_then_in_progress_then_done(store: IdempotencyStore) -> None:
    assert await store.peek("k") == Begin("new")
    assert await store.begin("k", "gw-a", LONG_S) == Begin("new")
    assert await store.peek("k") == Begin("in_progress")
    assert await store.begin("k", "gw-b", LONG_S) == Begin("in_progress")
    # Not re-entrant: the holder's own repeat must not run the action twice either.
    assert await store.begin("k", "gw-a", LONG_S) == Begin("in_progress")
    assert await store.complete("k", "gw-a", RESULT, LONG_S)
    assert await store.begin("k", "gw-b", LONG_S) == Begin("done", RESULT)
    assert await store.begin("k", "gw-a", LONG_S) == Begin("done", RESULT)
    assert await store.peek("k") == Begin("done", RESULT)
    assert await store.begin("other", "gw-b", LONG_S) == Begin("new")


async def test_the_wrong_owner_cannot_complete_or_abandon(store: IdempotencyStore) -> None:
    assert (await store.begin("k", "gw-a", LONG_S)).status == "new"
    assert not await store.complete("k", "gw-b", b"theirs", LONG_S)
    assert not await store.abandon("k", "gw-b")
    assert await store.peek("k") == Begin("in_progress")
    assert await store.complete("k", "gw-a", RESULT, LONG_S)
    assert await store.peek("k") == Begin("done", RESULT)


async def test_the_first_result_stays(store: IdempotencyStore) -> None:
    await store.begin("k", "gw-a", LONG_S)
    assert await store.complete("k", "gw-a", RESULT, LONG_S)
    assert not await store.complete("k", "gw-a", b"second", LONG_S)
    assert not await store.abandon("k", "gw-a")  # a result is not a marker
    assert await store.peek("k") == Begin("done", RESULT)


async def test_an_empty_result_is_a_result(store: IdempotencyStore) -> None:
    await store.begin("k", "gw-a", LONG_S)
    assert await store.complete("k", "gw-a", b"", LONG_S)
    assert await store.begin("k", "gw-b", LONG_S) == Begin("done", b"")
    assert await store.peek("k") == Begin("done", b"")


async def test_abandon_lets_a_later_attempt_run(store: IdempotencyStore) -> None:
    await store.begin("k", "gw-a", LONG_S)
    assert await store.abandon("k", "gw-a")
    assert not await store.abandon("k", "gw-a")
    assert await store.peek("k") == Begin("new")
    assert await store.begin("k", "gw-b", LONG_S) == Begin("new")


async def test_an_expired_lease_lets_a_retry_proceed(store: IdempotencyStore) -> None:
    """A gateway died holding the marker: once its lease runs out, a retry proceeds,
    and the dead attempt's late completion cannot overwrite the new one."""
    assert (await store.begin("k", "crashed", SHORT_S)).status == "new"
    assert (await store.begin("k", "retry", LONG_S)).status == "in_progress"
    await asyncio.sleep(AFTER_S)
    assert await store.peek("k") == Begin("new")
    assert await store.begin("k", "retry", LONG_S) == Begin("new")
    assert not await store.complete("k", "crashed", b"stale", LONG_S)
    assert not await store.abandon("k", "crashed")
    assert await store.complete("k", "retry", RESULT, LONG_S)
    assert await store.peek("k") == Begin("done", RESULT)


async def test_a_late_completion_is_kept_if_nobody_took_over(store: IdempotencyStore) -> None:
    await store.begin("k", "slow", SHORT_S)
    await asyncio.sleep(AFTER_S)
    assert await store.complete("k", "slow", RESULT, LONG_S)  # the action did happen
    assert await store.begin("k", "retry", LONG_S) == Begin("done", RESULT)


async def test_results_expire_after_retention(store: IdempotencyStore) -> None:
    await store.begin("short", "gw", LONG_S)
    await store.complete("short", "gw", RESULT, SHORT_S)
    await store.begin("long", "gw", LONG_S)
    await store.complete("long", "gw", RESULT, LONG_S)
    assert (await store.peek("short")).status == "done"
    await asyncio.sleep(AFTER_S)
    assert await store.begin("short", "gw", LONG_S) == Begin("new")
    assert await store.peek("long") == Begin("done", RESULT)


async def test_results_survive_a_gateway_restart_and_other_replicas(
    new_store: NewStore,
) -> None:
    first = new_store()
    await first.open()
    await first.begin("charged", "gw-a", LONG_S)
    await first.complete("charged", "gw-a", RESULT, LONG_S)
    await first.begin("in-flight", "gw-a", LONG_S)  # then the gateway dies
    await first.close()

    restarted = new_store()
    await restarted.open()
    other = new_store()
    await other.open()
    try:
        for store in (restarted, other):
            assert await store.begin("charged", "gw-b", LONG_S) == Begin("done", RESULT)
            assert await store.begin("in-flight", "gw-b", LONG_S) == Begin("in_progress")
        # A marker taken through one instance is seen by the other at once.
        assert (await restarted.begin("fresh", "gw-a", LONG_S)).status == "new"
        assert (await other.begin("fresh", "gw-b", LONG_S)).status == "in_progress"
        assert await restarted.complete("fresh", "gw-a", b"ok", LONG_S)
        assert await other.peek("fresh") == Begin("done", b"ok")
    finally:
        await restarted.close()
        await other.close()


async def test_concurrent_begins_have_exactly_one_winner(new_store: NewStore) -> None:
    stores = [new_store(), new_store()]  # two connections / replicas on the same data
    for store in stores:
        await store.open()
    try:
        outcomes = await asyncio.gather(
            *(stores[n % 2].begin("charge-42", f"gw-{n}", LONG_S) for n in range(50))
        )
        assert sorted(o.status for o in outcomes).count("new") == 1
        assert {o.status for o in outcomes} == {"new", "in_progress"}
        winner = f"gw-{[o.status for o in outcomes].index('new')}"
        assert await stores[0].complete("charge-42", winner, RESULT, LONG_S)
        outcomes = await asyncio.gather(
            *(stores[n % 2].begin("charge-42", f"gw-{n}", LONG_S) for n in range(50))
        )
        assert set(outcomes) == {Begin("done", RESULT)}
    finally:
        for store in stores:
            await store.close()


async def test_wait_returns_the_result_once_completed(store: IdempotencyStore) -> None:
    await store.begin("k", "gw-a", LONG_S)

    async def finish() -> None:
        await asyncio.sleep(0.1)
        await store.complete("k", "gw-a", RESULT, LONG_S)

    task = asyncio.create_task(finish())
    assert await store.wait("k", timeout_s=5) == Begin("done", RESULT)
    await task


async def test_wait_returns_free_when_abandoned_or_expired(store: IdempotencyStore) -> None:
    await store.begin("abandoned", "gw-a", LONG_S)

    async def give_up() -> None:
        await asyncio.sleep(0.1)
        await store.abandon("abandoned", "gw-a")

    task = asyncio.create_task(give_up())
    assert await store.wait("abandoned", timeout_s=5) == Begin("new")
    await task
    await store.begin("expiring", "gw-a", SHORT_S)
    assert await store.wait("expiring", timeout_s=5) == Begin("new")
    # "new" from wait takes nothing: begin() still decides who runs.
    assert await store.begin("expiring", "gw-b", LONG_S) == Begin("new")


async def test_wait_gives_up_after_its_timeout(store: IdempotencyStore) -> None:
    await store.begin("k", "gw-a", LONG_S)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await store.wait("k", timeout_s=0.15) == Begin("in_progress")
    assert 0.14 <= loop.time() - started < 1.0
    assert await store.wait("k", timeout_s=0) == Begin("in_progress")
    assert await store.wait("missing", timeout_s=0) == Begin("new")


async def test_durations_must_be_positive(store: IdempotencyStore) -> None:
    with pytest.raises(ValueError, match="lease_s"):
        await store.begin("k", "gw", 0)
    with pytest.raises(ValueError, match="retention_s"):
        await store.complete("k", "gw", RESULT, -1)


async def test_check_open_close(new_store: NewStore) -> None:
    store = new_store()
    with pytest.raises(StoreError, match="not open"):
        await store.begin("k", "gw", LONG_S)
    reason = await store.check()
    assert reason is not None
    assert "not open" in reason
    await store.open()
    await store.open()  # idempotent
    assert await store.check() is None
    await store.close()
    await store.close()  # idempotent
    assert await store.check() is not None


# ---- SQLite specifics ------------------------------------------------------------------


async def test_sqlite_purge_removes_expired_rows(tmp_path: Path) -> None:
    store = SqliteIdempotencyStore(tmp_path / "idem.db")
    await store.open()
    try:
        await store.begin("k", "gw", SHORT_S)
        await asyncio.sleep(AFTER_S)
        await store.purge()
        db = store._conn()
        rows = await db.execute_fetchall("SELECT COUNT(*) FROM idempotency")
        assert list(rows) == [(0,)]
    finally:
        await store.close()


async def test_sqlite_open_failure_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = SqliteIdempotencyStore(blocker / "idem.db")
    with pytest.raises(StoreError, match="open failed"):
        await store.open()


async def test_sqlite_in_memory() -> None:
    store = open_idempotency_store("sqlite://:memory:")
    await store.open()
    try:
        assert (await store.begin("k", "gw", LONG_S)).status == "new"
    finally:
        await store.close()


# ---- Redis specifics -------------------------------------------------------------------


async def test_redis_key_prefixes_keep_stores_apart(dedup_redis_url: str) -> None:
    one = RedisIdempotencyStore(dedup_redis_url, key_prefix="a:")
    two = RedisIdempotencyStore(dedup_redis_url, key_prefix="b:")
    await one.open()
    await two.open()
    try:
        assert (await one.begin("k", "gw", LONG_S)).status == "new"
        assert (await two.begin("k", "gw", LONG_S)).status == "new"
        client = redis.asyncio.Redis.from_url(dedup_redis_url)
        try:
            assert sorted(await client.keys("*")) == [b"a:k", b"b:k"]
            assert 0 < await client.pttl("a:k") <= LONG_S * 1000
        finally:
            await client.aclose()
    finally:
        await one.close()
        await two.close()


async def test_redis_password_file_and_redacted_errors(tmp_path: Path) -> None:
    secret = "s3cr3t-pw"
    with RedisServer(password=secret) as server:
        password_file = tmp_path / "password"
        password_file.write_text(secret + "\n")
        plain_url = f"redis://127.0.0.1:{server.port}/0"
        store = open_idempotency_store(plain_url, password_file=password_file)
        await store.open()
        try:
            assert (await store.begin("k", "gw", LONG_S)).status == "new"
        finally:
            await store.close()

        wrong = RedisIdempotencyStore(f"redis://:wrong-{secret}@127.0.0.1:{server.port}/0")
        with pytest.raises(StoreError) as caught:
            await wrong.open()
        assert secret not in str(caught.value)
        assert "redis://***@127.0.0.1" in str(caught.value)

        with pytest.raises(ValueError, match="not both"):
            RedisIdempotencyStore(server.url, password_file=password_file)
        missing = RedisIdempotencyStore(plain_url, password_file=tmp_path / "absent")
        with pytest.raises(StoreError, match="password file"):
            await missing.open()


async def test_redis_unreachable_is_a_store_error() -> None:
    spare = RedisServer(password="pw-never-shown")
    spare.start()
    url = spare.url
    spare.stop()  # nothing listens there any more
    store = RedisIdempotencyStore(url, timeout_s=0.5)
    with pytest.raises(StoreError, match=r"redis at redis://\*\*\*@127\.0\.0\.1") as caught:
        await store.open()
    assert "pw-never-shown" not in str(caught.value)
    assert await store.check() is not None


async def test_redis_outage_while_open_is_a_store_error() -> None:
    with RedisServer() as server:
        store = RedisIdempotencyStore(server.url, timeout_s=0.5)
        await store.open()
        try:
            server.kill()
            with pytest.raises(StoreError, match="begin failed"):
                await store.begin("k", "gw", LONG_S)
            assert await store.check() is not None
        finally:
            await store.close()


# ---- factory ---------------------------------------------------------------------------


def test_factory_picks_the_store_by_scheme(tmp_path: Path) -> None:
    relative = open_idempotency_store("sqlite:///data/idem.db")
    assert isinstance(relative, SqliteIdempotencyStore)
    assert relative.path == "data/idem.db"
    absolute = open_idempotency_store(f"sqlite:///{tmp_path}/idem.db")
    assert isinstance(absolute, SqliteIdempotencyStore)
    assert absolute.path == f"{tmp_path}/idem.db"
    memory = open_idempotency_store("sqlite:///:memory:")
    assert isinstance(memory, SqliteIdempotencyStore)
    assert memory.path == ":memory:"
    assert isinstance(open_idempotency_store("redis://localhost:6379/0"), RedisIdempotencyStore)
    remote = open_idempotency_store("rediss://:pw@redis.example:6380/1")
    assert isinstance(remote, RedisIdempotencyStore)
    assert remote.display_url == "rediss://***@redis.example:6380/1"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("idem.db", "no scheme"),
        ("sqlite://idem.db", "expected sqlite:///<path>"),
        ("sqlite:///", "expected sqlite:///<path>"),
        ("postgres://u:secret@db/idem", "unknown idempotency store scheme 'postgres'"),
    ],
)
def test_factory_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        open_idempotency_store(url)
    assert "secret" not in str(caught.value)


def test_redis_store_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match=r"not a redis:// or rediss:// URL: http://\*\*\*@h"):
        RedisIdempotencyStore("http://u:secret@h/")
