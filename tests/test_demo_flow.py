"""The whole pipeline on one machine, as `make demo` runs it: the four services and the example
backend as real processes, a real SIP call over loopback (G.711, RFC 4733), caller speech from
Piper, the bot's replies transcribed by whisper.cpp. And the runtime killed mid-call."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from voicetyped_dev.caller.heard import Heard
from voicetyped_dev.caller.match import says
from voicetyped_dev.caller.run import Voices, run_call
from voicetyped_dev.caller.script import WALL_OFFSET, CallLog, Turn, load_script
from voicetyped_dev.caller.stages import await_stages, call_trace, decided_states, load_spans
from voicetyped_dev.stack import SERVICES, Stack, StackConfig
from voicetyped_specs.dialog.spoken import spoken_digits
from voicetyped_testkit.processes import eventually
from voicetyped_testkit.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SCRIPT = EXAMPLES / "calls" / "order-status.yaml"


@pytest.fixture(scope="module")
def voices() -> Voices:
    return Voices()


def stack_config(tmp: Path, store_url: str = "") -> StackConfig:
    return StackConfig.with_example_backend(REPO, tmp, store_url=store_url)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    s = Stack(stack_config(tmp_path / "run"))
    await s.start()
    yield s
    codes = await s.stop()
    assert all(code in (0, None) for code in codes.values()), codes


def backend_calls(stack: Stack) -> list[dict[str, Any]]:
    key = (EXAMPLES / "backend" / "demo-api-key").read_text().strip()
    request = urllib.request.Request(f"http://127.0.0.1:{stack.backend_port}/_requests")
    request.add_header("X-API-Key", key)
    with urllib.request.urlopen(request, timeout=5) as reply:
        return list(json.loads(reply.read()))


def spans_report(stack: Stack, log: CallLog) -> str:
    """What the trace holds around each turn (for a failure message)."""
    spans = load_spans(stack.trace_dir)
    trace_id = call_trace(spans, log.call_id)
    lines = [f"call {log.call_id}: trace {trace_id}, {len(spans)} spans on disk"]
    for turn in log.turns[1:]:
        stopped = turn.stopped + WALL_OFFSET
        lines.append(f"turn {turn.caller[:30]!r}: latency {turn.latency_s}, stages {turn.stages}")
        lines += [
            f"    {s.service} {s.name} {s.start - stopped:+.3f}..{s.end - stopped:+.3f} "
            f"{s.trace_id == trace_id} {s.attributes}"
            for s in spans
            if stopped - 2 <= s.start <= stopped + 4
        ]
    return "\n".join(lines)


async def test_the_demo_call_goes_the_right_way(stack: Stack, voices: Voices) -> None:
    heard = Heard(f"http://127.0.0.1:{stack.ports['runtime'].http}")
    log = await run_call(
        f"sip:bot@127.0.0.1:{stack.sip_port}", load_script(SCRIPT), voices, heard=heard
    )
    assert not log.failures, log.failures  # every `expect`: the caller heard the prompts
    # What the recogniser heard of each caller turn, read from the runtime during the call.
    said_by_caller = [t for t in log.turns if t.caller != "(listening)"]
    assert [len(t.heard or []) for t in said_by_caller] == [1, 1, 1], said_by_caller
    number = said_by_caller[1]
    assert number.heard is not None and spoken_digits(number.heard[0]) == "48213", number
    assert log.ended_by_bot, "the dialog's terminal state hung up"
    said = [t.bot.text for t in log.turns if t.bot is not None]
    assert len(said) == 4, said
    calls = [c for c in backend_calls(stack) if c["path"].startswith("/api/")]
    assert [(c["method"], c["path"], c["status"]) for c in calls] == [
        ("GET", "/api/orders/48213", 200)
    ]
    assert await await_stages(log, stack.trace_dir), spans_report(stack, log)
    # The last decision's span may follow the audio it caused by an export interval.
    trace_dir = stack.trace_dir
    path = await eventually(
        lambda: (got := decided_states(trace_dir, log.call_id))[-1:] == ["goodbye"] and got,
        10,
        "the runtime's decision spans",
    )
    assert path == ["ask_number", "lookup", "shipped", "goodbye"]
    timed = [t for t in log.turns[1:] if t.stages]
    assert len(timed) == 3, [t.stages for t in log.turns]
    for turn in timed:
        assert turn.stages is not None and turn.latency_s is not None
        assert {"end_of_speech", "final", "decision", "tts", "playout"} <= set(turn.stages)
        assert sum(v for k, v in turn.stages.items() if k != "backend") == pytest.approx(
            turn.latency_s, abs=0.005
        )


async def test_the_caller_interrupts_a_long_prompt(
    stack: Stack, voices: Voices, tmp_path: Path
) -> None:
    script = tmp_path / "barge-in.yaml"
    # The greeting allows barge-in: talk over it 0.7 s after it starts.
    script.write_text(
        '- say: "I want to check the status of my order."\n'
        "  barge_in_after_ms: 700\n"
        '- expect: "order number"\n'
        '- press: "48213#"\n'
        '- expect: "look up order"\n'
    )
    steps = load_script(script)
    log = await run_call(f"sip:bot@127.0.0.1:{stack.sip_port}", steps, voices)
    turn: Turn = log.turns[0]
    assert turn.barge_in_stop_s is not None, "the greeting stopped"
    # `allow` (the greeting's) stops for words, not the first sound: once a decode of what the
    # caller said so far has one (~0.7-1.2 s on 2 cores; bench/barge_in.py).
    assert turn.barge_in_stop_s < 2.0, f"playback went on {turn.barge_in_stop_s:.2f} s"
    assert not log.failures, log.failures  # the interruption was taken as the next turn
    keys = log.turns[1]  # and the keyed-in number (RFC 4733) answered
    assert keys.caller == "[keys 48213#]" and keys.latency_s is not None, keys


async def test_runtime_killed_mid_call_resumes_without_losing_a_turn(
    tmp_path: Path, voices: Voices
) -> None:
    with RedisServer() as redis:
        stack = Stack(stack_config(tmp_path / "run", store_url=redis.url))
        await stack.start()
        try:
            killed = asyncio.Event()

            def on_event(kind: str, data: Any) -> None:
                # Right after the bot asked for the order number: crash the runtime.
                bot = data.bot if kind == "turn" else None
                asked = bot is not None and says(bot.text, "number").matched
                if asked and not killed.is_set():
                    killed.set()
                    stack.kill("runtime")
                    asyncio.get_running_loop().create_task(stack.restart("runtime"))

            log = await run_call(
                f"sip:bot@127.0.0.1:{stack.sip_port}", load_script(SCRIPT), voices, on_event
            )
            assert killed.is_set()
            assert not log.failures, log.failures
            calls = [c for c in backend_calls(stack) if c["path"].startswith("/api/")]
            assert [(c["method"], c["path"]) for c in calls] == [("GET", "/api/orders/48213")]
        finally:
            await stack.stop()


def problems_in_log(path: Path) -> list[str]:
    """Tracebacks, exceptions and error records in a service's JSON log."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if line.strip():  # anything a service printed outside its JSON log
                found.append(line)
            continue
        bad = not isinstance(record, dict) or "exception" in record
        if bad or record.get("level") in ("error", "critical"):
            found.append(line)
    return found


async def test_every_service_exits_0_on_sigterm_in_the_middle_of_a_call(
    tmp_path: Path, voices: Voices
) -> None:
    """What a rollout or a node drain does: SIGTERM to every service at once while a call
    runs through all of them. A short grace period, so the call outlives it."""
    config = stack_config(tmp_path / "run")
    config.env = {name: {"VOICETYPED_SHUTDOWN_GRACE_S": "3"} for name in SERVICES}
    stack = Stack(config)
    await stack.start()
    terminated = asyncio.Event()

    def on_event(kind: str, data: Any) -> None:
        asked = kind == "turn" and data.bot is not None and says(data.bot.text, "number").matched
        if asked and not terminated.is_set():
            terminated.set()
            for name in SERVICES:
                stack.terminate(name)

    try:
        log = await run_call(
            f"sip:bot@127.0.0.1:{stack.sip_port}", load_script(SCRIPT), voices, on_event
        )
        assert terminated.is_set(), [t.bot for t in log.turns]
        codes = {name: await stack.wait_exit(name, 15) for name in SERVICES}
    finally:
        await stack.stop()
    assert codes == dict.fromkeys(SERVICES, 0), {n: stack.tail(n) for n in SERVICES}
    for name in SERVICES:
        logged = problems_in_log(stack.log_dir / f"{name}.log")
        assert logged == [], f"{name}:\n" + "\n".join(logged)
    # The media gateway ended the call at the end of its grace period (a BYE, no dead air).
    assert any(f.startswith("the call ended before") for f in log.failures), log.failures
