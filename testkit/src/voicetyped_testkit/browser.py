"""A real headless Chromium for the console and WebRTC tests: Debian's ``chromium`` driven by
Playwright (its Python package talks to the browser; no browser is ever downloaded).

    async with chromium(fake_audio=Path("caller.wav")) as browser:
        page = await browser.new_page()

``fake_audio`` is what the browser's microphone says (``--use-file-for-fake-audio-capture``,
played once from the moment a page asks for the microphone, then silence); every permission
prompt is answered yes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, async_playwright

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_executable() -> str:
    """``$VOICETYPED_CHROMIUM`` or the machine's chromium (``make system-deps`` installs it)."""
    explicit = os.environ.get("VOICETYPED_CHROMIUM")
    if explicit:
        return explicit
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(
        "no chromium on this machine: run `make system-deps` (Debian package chromium) "
        "or set VOICETYPED_CHROMIUM"
    )


def chromium_args(fake_audio: Path | None = None) -> list[str]:
    args = [
        "--use-fake-ui-for-media-stream",  # grant the microphone without a prompt
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
        "--no-sandbox",  # root in CI: Chromium's sandbox refuses to start as root
    ]
    if fake_audio is not None:
        args.append(f"--use-file-for-fake-audio-capture={fake_audio}%noloop")
    return args


@asynccontextmanager
async def chromium(fake_audio: Path | None = None) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium_executable(),
            headless=True,
            args=chromium_args(fake_audio),
        )
        try:
            yield browser
        finally:
            await browser.close()
