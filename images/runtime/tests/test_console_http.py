"""The console's HTTP side on a real aiohttp server: off by default (404), its bearer token
(401 with JSON, never logged), read-only, caller ids masked everywhere it answers, and the
settings refusing a console without a token on a non-loopback address."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import structlog
from aiohttp import web
from voicetyped.service.config import ConfigError
from voicetyped.service.logs import configure_logging
from voicetyped.session import CallerInfo, CallSession
from voicetyped_runtime.calls import CallManager
from voicetyped_runtime.config import RuntimeSettings
from voicetyped_runtime.console.feed import CallFeeds
from voicetyped_runtime.console.routes import ConsoleRoutes, console_off_routes
from voicetyped_runtime.console.watch import CallWatch
from voicetyped_runtime.dialogs import DialogRegistry
from voicetyped_runtime.state import CallState
from voicetyped_runtime.store.sqlite import SqliteStore
from voicetyped_testkit.browser import chromium
from voicetyped_testkit.processes import free_port

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "dialogs" / "order-status.yaml"
TOKEN = "console-t0ken-Xq7"
CALLER = "+4930123456"
OTHER_CALLER = "+4940987654"


def state(sid: str, caller: str, dialog_hash: str) -> CallState:
    return CallState(
        session=CallSession(session_id=sid, caller=CallerInfo(caller_id=caller), state="greet"),
        dialog="order-status",
        dialog_hash=dialog_hash,
        started_ms=1,
        state_entered_ms=1,
    )


@dataclass
class Console:
    url: str
    feeds: CallFeeds
    watch: CallWatch


async def serve(routes: list[web.RouteDef]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = RuntimeSettings(
        store_url=f"sqlite:///{tmp_path / 's.db'}",
        http_host="0.0.0.0",
        console={"enabled": True, "token_file": token_file, "mask_callers": True},
    )
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    registry = DialogRegistry()
    version = await registry.load_text(EXAMPLE.read_text(), "test")
    feeds = CallFeeds(settings.console.recent_calls)
    calls = CallManager(settings, store, registry, feeds)
    # One call live here, one stored by another replica.
    mine = state("call-here", CALLER, version.content_hash)
    await store.save("call-here", mine.model_dump_json().encode(), 60)
    other = state("call-there", OTHER_CALLER, version.content_hash)
    await store.save("call-there", other.model_dump_json().encode(), 60)
    watch = CallWatch(feeds, mine, version.content_hash, settings.console.mask_callers)
    runner, url = await serve(ConsoleRoutes(settings.console, feeds, calls, registry).routes())
    try:
        yield Console(url, feeds, watch)
    finally:
        feeds.shutdown()
        await runner.cleanup()
        await calls.close()
        await store.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_the_data_needs_the_token_the_page_does_not(console: Console) -> None:
    async with httpx.AsyncClient(base_url=console.url, timeout=5) as http:
        page = await http.get("/console/")
        assert page.status_code == 200 and "live calls" in page.text  # no data in it
        assert (
            (await http.get("/console/console.js"))
            .headers["content-type"]
            .startswith("text/javascript")
        )
        for path in ("/v1/console/calls", "/v1/console/calls/call-here/events"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
                reply = await http.get(path, headers=headers)
                assert reply.status_code == 401 and reply.json() == {"error": "unauthorized"}
        assert (await http.get("/v1/console/calls", headers=AUTH)).status_code == 200
        missing = await http.get("/v1/console/calls/nope", headers=AUTH)
        assert missing.status_code == 404 and "error" in missing.json()


async def test_it_is_read_only(console: Console) -> None:
    async with httpx.AsyncClient(base_url=console.url, timeout=5, headers=AUTH) as http:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            for path in ("/v1/console/calls", "/v1/console/calls/call-here", "/console/"):
                assert (await http.request(method, path)).status_code == 405, (method, path)


async def test_callers_are_masked_everywhere(console: Console) -> None:
    console.watch.feed.publish("dtmf", digit="5")
    async with httpx.AsyncClient(base_url=console.url, timeout=5, headers=AUTH) as http:
        listing = (await http.get("/v1/console/calls")).json()
        assert [c["caller"] for c in listing["calls"]] == ["•••56"]
        assert [(c["session_id"], c["caller"]) for c in listing["elsewhere"]] == [
            ("call-there", "•••54")
        ]
        detail = await http.get("/v1/console/calls/call-here")
        assert detail.json()["call"]["caller"] == "•••56"
        assert detail.json()["graph"]["dialog"] == "order-status"
        async with http.stream("GET", "/v1/console/events") as stream:
            lines = stream.aiter_lines()
            assert await anext(lines) == 'data: {"kind":"hello"}'
            assert await anext(lines) == ""
            listed = json.loads((await anext(lines)).removeprefix("data: "))
            assert listed["call"]["caller"] == "•••56"
        bodies = [r.text for r in (await http.get("/v1/console/calls"), detail)]
    for body in bodies:
        for number in (CALLER, OTHER_CALLER):
            assert number[3:] not in body  # not even a part beyond the last 2


async def test_a_calls_event_stream_replays_then_follows_and_ends_with_the_call(
    console: Console,
) -> None:
    feed = console.watch.feed
    feed.publish("dtmf", digit="1")
    async with (
        httpx.AsyncClient(base_url=console.url, timeout=5, headers=AUTH) as http,
        http.stream("GET", "/v1/console/calls/call-here/events") as stream,
    ):
        assert stream.headers["content-type"] == "text/event-stream"
        events = (
            json.loads(line.removeprefix("data: "))
            async for line in stream.aiter_lines()
            if line.startswith("data: ")
        )
        assert (await anext(events))["digit"] == "1"  # the backlog first
        feed.publish("dtmf", digit="2")
        assert (await anext(events))["digit"] == "2"
        console.feeds.close(feed, kept=False, retention_s=0, reason="caller hung up")
        assert [e["kind"] async for e in events] == ["ended", "closed"]
    async with httpx.AsyncClient(base_url=console.url, timeout=5, headers=AUTH) as http:
        after = (await http.get("/v1/console/calls/call-here")).json()
        assert after["events"] == [] and after["call"]["data"] == "dropped"
        assert "dropped with the session" in after["call"]["note"]


async def test_the_token_is_never_logged(
    console: Console, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("runtime", "debug")
    try:
        async with httpx.AsyncClient(base_url=console.url, timeout=5) as http:
            await http.get("/v1/console/calls", headers=AUTH)
            await http.get("/v1/console/calls", headers={"Authorization": f"Bearer {TOKEN}x"})
            await http.get("/v1/console/nothing", headers=AUTH)
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers = []
    out = capsys.readouterr()
    assert "/v1/console/nothing" in out.out  # the capture works (httpx logs each request)
    assert TOKEN not in out.out + out.err


async def test_off_by_default_and_then_everything_is_404() -> None:
    assert RuntimeSettings().console.enabled is False
    runner, url = await serve(console_off_routes())
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            for path in ("/console/", "/console", "/v1/console/calls", "/v1/console/events"):
                reply = await http.get(path)
                assert reply.status_code == 404 and "console is off" in reply.json()["error"]
    finally:
        await runner.cleanup()


def test_a_console_beyond_loopback_needs_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOICETYPED_CONSOLE__ENABLED", "true")
    monkeypatch.setenv("VOICETYPED_HTTP_HOST", "0.0.0.0")
    with pytest.raises(ConfigError, match="VOICETYPED_CONSOLE__TOKEN_FILE"):
        RuntimeSettings.load()
    monkeypatch.setenv("VOICETYPED_HTTP_HOST", "127.0.0.1")
    assert RuntimeSettings.load().console.enabled
    monkeypatch.setenv("VOICETYPED_HTTP_HOST", "0.0.0.0")
    (tmp_path / "token").write_text("t")
    monkeypatch.setenv("VOICETYPED_CONSOLE__TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv("VOICETYPED_CONSOLE__MASK_CALLERS", "1")
    monkeypatch.setenv("VOICETYPED_CONSOLE__RECENT_CALLS", "7")
    console = RuntimeSettings.load().console
    assert (console.mask_callers, console.recent_calls) == (True, 7)


async def test_the_page_asks_for_the_token_and_follows_the_call_with_it(console: Console) -> None:
    """A real headless Chromium: no token, the page asks for one; with it, the list and the
    call's event stream (fetch() with the Authorization header) work, callers masked."""
    sent: list[str] = []
    async with chromium() as browser:
        page = await browser.new_page()
        page.on("request", lambda r: sent.append(r.url))
        await page.goto(console.url + "/console/")
        await page.locator("#login").wait_for(state="visible")
        await page.fill("#token", "wrong")
        await page.click("#login button")
        # A locator, not wait_for_function: the page's CSP (no eval) refuses string predicates.
        await page.locator("#login-error", has_text="refused").wait_for()
        await page.fill("#token", TOKEN)
        await page.click("#login button")
        row = page.locator('#calls tr[data-session="call-here"]')
        await row.wait_for()
        assert await row.locator(".caller").inner_text() == "•••56"
        await row.click()
        console.watch.feed.publish("dtmf", digit="7")  # live, after the page opened the call
        await page.locator("#conversation li.key").wait_for()
        assert await page.locator("#conversation li.key .text").inner_text() == "7"
        assert "•••54" in await page.inner_text("#elsewhere")
        body = await page.inner_text("body")
    assert CALLER[3:] not in body and OTHER_CALLER[3:] not in body
    assert not [url for url in sent if TOKEN in url]  # never in an address
