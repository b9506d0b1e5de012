"""The call page as a cluster serves it (an access token file): a real headless Chromium asks
for the access token, keeps it for the tab, places the call; the gateway's real gRPC peers see
it, and the page's keypad reaches the runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import Page
from voicetyped_testkit.browser import chromium
from voicetyped_testkit.processes import eventually


async def status(page: Page) -> str:
    return str(await page.evaluate("voicetyped.info().status"))


async def test_the_page_asks_for_the_access_token_and_calls(
    start_gateway: Any, tmp_path: Path
) -> None:
    secret = tmp_path / "webrtc-token"
    secret.write_text("page-access-token\n")
    gw = await start_gateway(
        VOICETYPED_WEBRTC__ENABLED="true", VOICETYPED_WEBRTC__TOKEN_FILE=str(secret)
    )
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{gw.http_port}/call")  # redirected to /call/
        assert page.url.endswith("/call/")
        await page.click("#call")
        await eventually(lambda: _starts(page, "error: enter the access token"), 15, "asked for it")
        assert await page.is_visible("#access-token")
        await page.fill("#access-token", "page-access-token")
        await page.click("#call")
        await eventually(lambda: _starts(page, "in call"), 15, "in call")
        (record,) = await gw.runtime.wait_call()
        assert record.started.caller.caller_id == "webrtc:127.0.0.1"
        stored = await page.evaluate("sessionStorage.getItem('voicetyped-access-token')")
        assert stored == "page-access-token"
        await page.click('#keypad button[data-digit="7"]')
        await record.wait_for("dtmf")
        assert [d for d, _ in record.digits()] == ["7"]
        await page.click("#hangup")
        await record.wait_for("ended")
        assert await status(page) == "hung up"


async def _starts(page: Page, prefix: str) -> bool:
    return (await status(page)).startswith(prefix)
