"""The live call console in a real headless Chromium against the whole pipeline (a Stack, as
`voicetyped up` runs it): the scripted order-status call placed over SIP appears in the list,
its transcript shows while it happens, the dialog graph highlights each state as the call
moves, and once the call is over the page says its data was dropped (the dialog keeps no
transcripts) and shows none of it.

Screenshots go to the test's tmp dir; with VOICETYPED_UPDATE_SCREENSHOTS=1 also to
docs/images/console-*.png (the ones docs/console.md shows)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from playwright.async_api import Page
from voicetyped_dev.caller.run import Voices, run_call
from voicetyped_dev.caller.script import load_script
from voicetyped_dev.caller.stages import decided_states
from voicetyped_dev.stack import Stack, StackConfig
from voicetyped_specs.dialog.spoken import spoken_digits
from voicetyped_testkit.browser import chromium
from voicetyped_testkit.processes import eventually

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "calls" / "order-status.yaml"
DIALOG = REPO / "examples" / "dialogs" / "order-status.yaml"
DROPPED = "its data was dropped with the session (the dialog keeps no transcripts)"

# Every state the graph marks current, in order, as the page's DOM changes (not the page's
# own bookkeeping): the node that gains aria-current.
WATCH_HIGHLIGHTS = """
window.__highlights = [];
new MutationObserver((records) => {
  for (const r of records) {
    if (r.oldValue === null && r.target.getAttribute("aria-current") === "step") {
      window.__highlights.push(r.target.dataset.state);
    }
  }
}).observe(document, {subtree: true, attributes: true, attributeOldValue: true,
                      attributeFilter: ["aria-current"]});
"""


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    s = Stack(StackConfig.with_example_backend(REPO, tmp_path / "run", console=True))
    await s.start()
    yield s
    codes = await s.stop()
    assert all(code in (0, None) for code in codes.values()), codes


async def shoot(page: Page, tmp_path: Path, name: str) -> str:
    """Screenshot ``name`` (the tmp dir; docs/images too when asked) and the page's text."""
    path = tmp_path / f"console-{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    if os.environ.get("VOICETYPED_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(path, REPO / "docs" / "images" / path.name)
    assert path.stat().st_size > 10_000  # a real render, not an empty page
    return await page.inner_text("body")


async def final_texts(page: Page) -> list[str]:
    texts: list[str] = await page.eval_on_selector_all(
        "#conversation li.utterance.final .text", "els => els.map(e => e.textContent)"
    )
    return texts


async def said_number(page: Page) -> str | None:
    """The final transcript on the page that says the order number (words or digits)."""
    return next((t for t in await final_texts(page) if spoken_digits(t) == "48213"), None)


async def test_the_console_follows_a_call_live(stack: Stack, tmp_path: Path) -> None:
    dialog = yaml.safe_load(DIALOG.read_text())["spec"]
    assert not dialog["settings"].get("persist_transcripts")  # so its data goes at the end
    voices = await asyncio.to_thread(Voices)
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1500, "height": 1100})
        await page.add_init_script(WATCH_HIGHLIGHTS)
        await page.goto(stack.console_url)
        # Locators, not wait_for_function: the console's CSP (no eval) refuses string predicates.
        await page.locator("#connection", has_text=re.compile(r"^live$")).wait_for()
        call = asyncio.ensure_future(
            run_call(f"sip:bot@127.0.0.1:{stack.sip_port}", load_script(SCRIPT), voices)
        )
        try:
            # The call is listed with its dialog and state; open it.
            row = page.locator("#calls tr.call").first
            await row.wait_for(timeout=30_000)
            assert "order-status" in await row.locator(".dialog").inner_text()
            assert await row.locator(".status").inner_text() == "live"
            await row.click()
            await page.locator("#graph .node").first.wait_for()
            listed = await shoot(page, tmp_path, "call")
            assert "order-status" in listed and "live" in listed

            # The caller's order number shows as a final transcript while the call goes on.
            said = str(await eventually(lambda: said_number(page), 45, "the order number"))
            assert not call.done(), "the transcript showed only after the call"
            text = await shoot(page, tmp_path, "transcript")
            assert said in text

            # The graph highlights "shipped" while the bot says so (the caller still listens).
            await page.locator('#graph .node[data-state="shipped"][aria-current="step"]').wait_for(
                timeout=30_000
            )
            await page.locator('#call-summary[data-state="shipped"]').wait_for()
            assert not call.done()
            text = await shoot(page, tmp_path, "graph")
            assert "state shipped" in text and said in text
            assert "shop.get_order" in text and "ok" in text

            log = await asyncio.wait_for(call, 60)
        finally:
            if not call.done():
                call.cancel()
        assert not log.failures, log.failures
        path = await eventually(
            lambda: (
                (got := decided_states(stack.trace_dir, log.call_id))[-1:] == ["goodbye"] and got
            ),
            10,
            "the runtime's decision spans",
        )
        assert path == ["ask_number", "lookup", "shipped", "goodbye"]
        highlights = await page.evaluate("window.__highlights")
        assert highlights == ["greet", *path], highlights

        # Over: the dialog keeps no transcripts, so neither does the console.
        note = page.locator("#call-note")
        await note.wait_for(state="visible", timeout=15_000)
        assert DROPPED in await note.inner_text()
        await page.locator("#conversation li").first.wait_for(state="detached", timeout=5_000)
        text = await shoot(page, tmp_path, "dropped")
        assert DROPPED in text and said not in text
        assert "ended — data dropped" in await page.inner_text("#calls")
