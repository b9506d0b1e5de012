"""Browser calls end to end: a real headless Chromium (voicetyped_testkit.browser) opens the
media gateway's call page on a whole local stack (`voicetyped up`: the four services and the
example backend as processes), calls the order-status dialog over WebRTC with a WAV file as
its microphone, and the page records what it hears (the test transcribes it with whisper).
And the browser killed mid-call: the gateway ends the call once ICE consent fails."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.async_api import Page
from voicetyped_dev.caller.cli import backend_requests
from voicetyped_dev.caller.match import says
from voicetyped_dev.caller.run import Voices
from voicetyped_dev.caller.stages import load_spans, session_trace
from voicetyped_dev.stack import Stack, StackConfig
from voicetyped_testkit.browser import chromium
from voicetyped_testkit.processes import eventually

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
NUMBER = "My order number is four eight two one three."
RATE = 16000
LOUD = 600  # peak of a 20 ms frame of the bot's voice at the page (silence: ~0)
QUIET_S = 0.8  # the bot has finished speaking (pauses inside a prompt are shorter)
ICE_CONSENT_BOUND_S = 45.0
"""A browser gone: aioice's consent checks (every 4-6 s, 6 failures) fail within ~39 s."""


@pytest.fixture(scope="module")
def voices() -> Voices:
    return Voices()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    s = Stack(StackConfig.with_example_backend(REPO, tmp_path / "run"))
    await s.start()
    yield s
    codes = await s.stop()
    assert all(code in (0, None) for code in codes.values()), codes


def microphone_wav(voices: Voices, path: Path) -> Path:
    """What the browser's microphone says: the order number (Piper), 16 kHz mono."""
    pcm = np.frombuffer(voices.speak_16k(NUMBER), dtype="<i2")
    silence = np.zeros(RATE // 2, dtype=np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(np.concatenate([silence, pcm, silence]).tobytes())
    return path


async def info(page: Page) -> dict[str, Any]:
    return dict(await page.evaluate("voicetyped.info()"))


async def recorded(page: Page, since: int) -> np.ndarray[Any, np.dtype[np.int16]]:
    text = await page.evaluate("(from) => voicetyped.recorded(from)", since)
    return np.frombuffer(base64.b64decode(text), dtype="<i2")


async def next_reply(page: Page, since: int, timeout_s: float = 30) -> tuple[np.ndarray, int]:
    """The bot's audio after sample ``since`` once it spoke and then was quiet for QUIET_S;
    and the sample where that quiet began."""

    async def done() -> tuple[np.ndarray, int] | None:
        pcm = await recorded(page, since)
        frames = len(pcm) // 320
        peaks = np.abs(pcm[: frames * 320].reshape(frames, 320).astype(np.int32)).max(axis=1)
        loud = np.flatnonzero(peaks > LOUD)
        quiet_frames = frames - 1 - loud[-1] if len(loud) else 0
        if len(loud) and quiet_frames * 0.02 >= QUIET_S:
            end = int(loud[-1] + 1) * 320
            return pcm[:end], since + end
        return None

    return await eventually(done, timeout_s, "the bot's reply at the page")  # type: ignore[no-any-return]


async def hear_until(
    page: Page, voices: Voices, since: int, words: str, timeout_s: float = 40
) -> tuple[str, int]:
    """Transcribe reply after reply until ``words`` are heard; (all heard, where it ended)."""
    heard = ""
    deadline = time.monotonic() + timeout_s
    while not says(heard, words).matched:
        left = deadline - time.monotonic()
        assert left > 0, f"never heard {words!r}; heard {heard!r}"
        pcm, since = await next_reply(page, since, left)
        heard += " " + await asyncio.to_thread(voices.transcribe, pcm.tobytes())
    return heard, since


def fsm_path(stack: Stack, session_id: str) -> list[str]:
    spans = load_spans(stack.trace_dir)
    trace_id = session_trace(spans, session_id)
    return [
        s.attributes["state_to"]
        for s in spans
        if s.trace_id == trace_id and s.name == "runtime.decision"
    ]


def lookups(stack: Stack) -> list[tuple[str, str]]:
    seen = backend_requests(
        f"http://127.0.0.1:{stack.backend_port}", EXAMPLES / "backend" / "demo-api-key", 0
    )
    return [(r["method"], r["path"]) for r in seen if r["path"].startswith("/api/")]


def media_metric(stack: Stack, line_start: str) -> float:
    import urllib.request

    url = f"http://127.0.0.1:{stack.ports['media'].http}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    found = [ln for ln in text.splitlines() if ln.startswith(line_start + " ")]
    return float(found[0].split()[-1]) if found else 0.0


async def test_a_browser_calls_the_order_status_dialog(
    stack: Stack, voices: Voices, tmp_path: Path
) -> None:
    wav = microphone_wav(voices, tmp_path / "caller.wav")
    async with chromium(fake_audio=wav) as browser:
        page = await browser.new_page()
        await page.goto(stack.browser_calls + "?mic=later")
        await page.click("#call")
        await eventually(lambda: _status_is(page, "in call"), 20, "in call")
        session_id = (await info(page))["sessionId"]
        # The greeting, heard at the page.
        greeting, at = await hear_until(page, voices, 0, "thanks for calling")
        assert says(greeting, "order number").matched, greeting
        # The microphone opens now: the WAV says the order number.
        await page.click("#microphone")
        heard, at = await hear_until(page, voices, at, "has shipped")
        assert says(heard, "look up order").matched, heard
        # A key on the page's keypad: 0 is "an agent" anywhere in the dialog; a browser call
        # cannot be transferred, so the dialog says the agents are busy and hangs up.
        await page.click('#keypad button[data-digit="0"]')
        heard, at = await hear_until(page, voices, at, "agents are busy")
        await eventually(lambda: _status_is(page, "call ended"), 15, "the bot hung up")
    assert lookups(stack) == [("GET", "/api/orders/48213")]
    path = await eventually(
        lambda: (got := fsm_path(stack, session_id))[-1:] == ["agent"] and got,
        10,
        "the runtime's decision spans",
    )
    # (agent -> agents_busy follows the failed transfer: heard above, not a decision span.)
    assert path == ["lookup", "shipped", "agent"], path
    assert media_metric(stack, 'voicetyped_media_calls_answered_total{codec="opus"}') == 1
    assert media_metric(stack, 'voicetyped_media_dtmf_total{source="webrtc"}') == 1


async def _status_is(page: Page, prefix: str) -> bool:
    return str((await info(page))["status"]).startswith(prefix)


def browser_pids(marker: Path) -> list[int]:
    """The processes of the Chromium started with ``marker`` (its fake microphone file)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(marker).encode() in cmdline:
                pids.append(int(entry.name))
    return pids


async def test_a_browser_that_disappears_mid_call_ends_the_call(
    stack: Stack, voices: Voices, tmp_path: Path
) -> None:
    wav = microphone_wav(voices, tmp_path / "gone.wav")
    async with chromium(fake_audio=wav) as browser:
        page = await browser.new_page()
        await page.goto(stack.browser_calls)
        await page.click("#call")
        await eventually(lambda: _status_is(page, "in call"), 20, "in call")
        await next_reply(page, 0)  # the greeting came: the call is up end to end
        pids = browser_pids(wav)
        assert pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        gone = time.monotonic()
        ended = 'voicetyped_media_calls_ended_total{reason="failed"}'
        await eventually(
            lambda: media_metric(stack, ended) == 1, ICE_CONSENT_BOUND_S, "the call ended"
        )
        took = time.monotonic() - gone
    assert media_metric(stack, "voicetyped_media_active_calls") == 0
    print(f"browser gone -> call ended in {took:.1f} s")
