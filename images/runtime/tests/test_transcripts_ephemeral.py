"""Transcripts stay ephemeral: a call's words live in its stored state while it runs and are
gone from the session store when it ends (no archive, nothing left in the SQLite file) unless
the dialog sets persist_transcripts; settings.log_transcripts puts each final in the debug log
and stores nothing more.

The real CallActor runs the order-status example against a real SQLite store; its ports answer
the way the gateways would (test_call_isolation's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from voicetyped.service.logs import configure_logging
from voicetyped_runtime import engine as e
from voicetyped_runtime.call import CallActor
from voicetyped_runtime.console.feed import CallFeeds
from voicetyped_runtime.console.watch import CallWatch
from voicetyped_runtime.dialogs import prepare
from voicetyped_runtime.store.sqlite import SqliteStore
from voicetyped_specs.dialog.compiled import load_dialog, parse_yaml

from images.runtime.tests.test_call_isolation import Ports, _state

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "dialogs" / "order-status.yaml"
WORDS = "my order number is four eight two one three said Quentin Zybrowski"


@contextlib.contextmanager
def logging_at(level: str) -> Iterator[None]:
    """The service's JSON logging on stdout at ``level`` (configured inside the test, as the
    integration gateway's tests do: pytest adds its own capture per phase)."""
    configure_logging("runtime", level)
    try:
        yield
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers = []


async def order_status_actor(
    tmp_path: Path, feeds: CallFeeds | None = None, **settings: Any
) -> tuple[SqliteStore, CallActor, Ports]:
    """Call "call-1" of the order-status example (with ``settings``) on a SQLite store in
    ``tmp_path``, not started; watched by the console's ``feeds`` when given."""
    document = parse_yaml(EXAMPLE.read_text())
    document["settings"] = {**document["settings"], **settings}
    version = prepare(load_dialog(document), "test")
    store = SqliteStore(tmp_path / "sessions.db")
    await store.open()
    state = _state(version, "call-1")
    watch = None if feeds is None else CallWatch(feeds, state, version.content_hash, True)
    ports = Ports(order="48213")
    actor = CallActor(state, version, ports, store, watch=watch)
    ports.actor = actor
    return store, actor, ports


async def run_call(tmp_path: Path, **settings: Any) -> tuple[SqliteStore, CallActor, Ports]:
    store, actor, ports = await order_status_actor(tmp_path, **settings)
    task = actor.start(resume=False)
    await asyncio.sleep(0.1)
    actor.post(e.SpeechStarted("u1"))
    actor.post(e.SpeechEnded("u1"))
    actor.post(e.Transcript("u1", WORDS, True, 0.9, 0, 1500))
    for _ in range(100):
        if any("has shipped" in t for t in ports.spoken):
            break
        await asyncio.sleep(0.05)
    live = await store.load("call-1")
    assert live is not None and WORDS in live.decode()  # the live call's state holds them
    actor.post(e.CallerHangup())
    await asyncio.wait_for(task, 20)
    return store, actor, ports


def stored_bytes(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp_path.glob("sessions.db*"))


async def test_nothing_is_kept_after_the_call_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with logging_at("debug"):
        store, actor, _ = await run_call(tmp_path)
    assert actor.state.vars["order_id"] == "48213"
    assert await store.load("call-1") is None
    assert await store.load_archived("call-1") is None
    assert await store.list_live() == []
    await store.close()
    assert b"Zybrowski" not in stored_bytes(tmp_path)
    # Not in the log either, debug level included, unless the dialog opts in.
    assert "Zybrowski" not in capsys.readouterr().out


async def test_log_transcripts_logs_finals_at_debug_and_stores_nothing_more(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with logging_at("debug"):
        store, _, _ = await run_call(tmp_path, log_transcripts=True)
    assert await store.load("call-1") is None
    assert await store.load_archived("call-1") is None
    await store.close()
    assert b"Zybrowski" not in stored_bytes(tmp_path)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    finals = [x for x in lines if x["event"] == "final transcript"]
    assert [(x["level"], x["text"], x["session_id"], x["dialog"]) for x in finals] == [
        ("debug", WORDS, "call-1", "order-status")
    ]
    assert finals[0]["utterance_id"] == "u1" and finals[0]["state"] == "greet"


async def test_log_transcripts_needs_the_debug_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with logging_at("info"):
        store, _, _ = await run_call(tmp_path, log_transcripts=True)
    await store.close()
    out = capsys.readouterr().out
    assert "call started" in out and "Zybrowski" not in out


async def test_persist_transcripts_keeps_the_finished_call(tmp_path: Path) -> None:
    store, _, _ = await run_call(tmp_path, persist_transcripts=True)
    archived = await store.load_archived("call-1")
    assert archived is not None and WORDS in archived.decode()
    assert await store.load("call-1") is None
    await store.close()
