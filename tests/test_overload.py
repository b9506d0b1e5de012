"""Graceful overload on the whole pipeline: a speech gateway at capacity refuses the next call
(the media gateway answers its INVITE with 503 and Retry-After) and the calls it holds go on,
every turn recognised and answered. Real processes throughout (the four services, the example
backend, scripted SIP callers, a raw SIP INVITE for the call that is refused).

The capacity here is ``capacity.max_streams`` = 2 so that the moment of refusal is exact; the
load-driven rules (decode load, finals backlog) are the same refusal, tested in
images/speech/tests (test_capacity.py on a fake clock, test_speech_service.py in a process)."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from voicetyped_dev.caller.heard import Heard
from voicetyped_dev.caller.phone import Phone
from voicetyped_dev.caller.run import Voices, run_call
from voicetyped_dev.caller.script import CallLog, Expect, Step, load_script
from voicetyped_dev.stack import Stack, StackConfig
from voicetyped_specs.dialog.spoken import spoken_digits
from voicetyped_testkit.media import exchange, sip_invite
from voicetyped_testkit.processes import eventually

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "calls" / "order-status.yaml"
CAPACITY = {
    "VOICETYPED_CAPACITY__MAX_STREAMS": "2",
    "VOICETYPED_CAPACITY__LOAD_THRESHOLD": "0",
    "VOICETYPED_CAPACITY__QUEUE_THRESHOLD": "0",
}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    config = StackConfig.with_example_backend(
        REPO, tmp_path / "run", env={"speech": CAPACITY, "media": {"VOICETYPED_RETRY_AFTER_S": "4"}}
    )
    s = Stack(config)
    await s.start()
    yield s
    codes = await s.stop()
    assert all(code in (0, None) for code in codes.values()), codes


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            key, _, value = line.rpartition(" ")
            if key == name:
                return float(value)
    return 0.0


async def test_beyond_speech_capacity_a_new_call_gets_503_and_running_calls_go_on(
    stack: Stack,
) -> None:
    voices = await asyncio.to_thread(Voices)
    # The caller checks what the runtime heard instead of transcribing the bot itself: two
    # callers' own Whisper would compete with the speech gateway for the two cores.
    steps: list[Step] = [s for s in load_script(SCRIPT) if not isinstance(s, Expect)]
    runtime_admin = f"http://127.0.0.1:{stack.ports['runtime'].http}"
    speech_metrics = f"http://127.0.0.1:{stack.ports['speech'].http}/metrics"
    media_metrics = f"http://127.0.0.1:{stack.ports['media'].http}/metrics"

    async def call(i: int) -> CallLog:
        phone = Phone(rtp_ports=(44000 + i * 100, 44098 + i * 100))
        await phone.start()
        try:
            return await run_call(
                f"sip:bot@127.0.0.1:{stack.sip_port}",
                steps,
                voices,
                phone=phone,
                transcribe=False,
                heard=Heard(runtime_admin),
            )
        finally:
            await phone.close()

    running = [asyncio.ensure_future(call(i)) for i in range(2)]
    try:
        await eventually(
            lambda: metric(speech_metrics, "voicetyped_speech_active_streams") == 2,
            60,
            "two calls on the speech gateway",
        )
        replies = await asyncio.to_thread(
            exchange, stack.sip_port, sip_invite(stack.sip_port, "third-call"), 10.0
        )
        logs = await asyncio.gather(*running)
    finally:
        for task in running:
            task.cancel()
    refusal = replies[-1] if replies else ""
    assert refusal.startswith("SIP/2.0 503 "), replies
    assert "Retry-After: 4" in refusal
    assert 'Warning: 399 voicetyped "speech recognition at capacity"' in refusal
    refused = 'voicetyped_media_calls_refused_total{reason="speech_capacity"}'
    assert metric(media_metrics, refused) == 1
    # One refusal per attempt: the media gateway tried speech_attempts (3) times, each on the
    # next replica of its target, here always the one.
    speech_refused = 'voicetyped_speech_streams_refused_total{reason="max_streams"}'
    assert metric(speech_metrics, speech_refused) == 3
    for log in logs:
        assert not log.failures, log.failures
        said = [t for t in log.turns if t.caller != "(listening)"]
        assert [len(t.heard or []) for t in said] == [1, 1, 1], said
        number = said[1].heard
        assert number is not None and spoken_digits(number[0]) == "48213", number
        assert all(t.latency_s is not None for t in log.turns[1:]), "every turn answered"
        assert log.ended_by_bot, "the dialog ran to its goodbye"
