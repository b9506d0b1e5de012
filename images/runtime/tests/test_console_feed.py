"""The console's per-call feed: bounded, its subscribers bounded, and as ephemeral as the
session store. The real CallActor runs the order-status example against a real SQLite store
(the in-process ports of test_call_isolation), watched by the console."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from voicetyped.v1 import speech_pb2
from voicetyped_runtime import engine as e
from voicetyped_runtime.call import CallActor
from voicetyped_runtime.console.feed import (
    DROPPED_NOTE,
    EVENTS_PER_CALL,
    EXPIRED_NOTE,
    SUBSCRIBER_QUEUE,
    CallFeeds,
    mask,
)
from voicetyped_runtime.console.watch import CallWatch
from voicetyped_runtime.store.sqlite import SqliteStore
from voicetyped_testkit.processes import eventually

from images.runtime.tests.test_transcripts_ephemeral import order_status_actor

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "dialogs" / "order-status.yaml"
WORDS = "my order number is four eight two one three"


def summary(sid: str = "call-1") -> dict[str, Any]:
    return {"session_id": sid, "caller": "+4930123456", "dialog": "d", "state": "greet"}


def test_a_call_keeps_its_last_events_only() -> None:
    feeds = CallFeeds()
    feed = feeds.open(summary())
    for i in range(EVENTS_PER_CALL + 5):
        feed.publish("dtmf", digit=str(i % 10))
    assert len(feed.events) == EVENTS_PER_CALL
    assert feed.events[0]["seq"] == 6 and feed.summary["events_dropped"] == 5


async def test_a_subscriber_that_stops_reading_is_cut_off_not_buffered_for() -> None:
    feeds = CallFeeds()
    feed = feeds.open(summary())
    slow = feed.subscribe()
    fast = feed.subscribe()
    for i in range(SUBSCRIBER_QUEUE + 10):
        feed.publish("dtmf", digit=str(i % 10))
        while not fast.queue.empty():
            fast.queue.get_nowait()
    assert slow not in feed.topic.subscribers and fast in feed.topic.subscribers
    assert slow.queue.qsize() == SUBSCRIBER_QUEUE  # never more
    last = [slow.queue.get_nowait() for _ in range(SUBSCRIBER_QUEUE)][-1]
    assert last == {"kind": "overflow"}


def test_ended_calls_listed_are_bounded() -> None:
    feeds = CallFeeds(recent_calls=2)
    for n in range(4):
        feeds.close(feeds.open(summary(f"c{n}")), kept=True, retention_s=60, reason="done")
    assert [s["session_id"] for s in feeds.summaries()] == ["c3", "c2"]


def test_masking_keeps_the_last_two_characters() -> None:
    assert mask("+4930123456") == "•••56"
    assert mask("alice") == "•••ce"
    assert mask("") == ""


async def run_watched_call(
    tmp_path: Path, feeds: CallFeeds, **settings: Any
) -> tuple[CallActor, SqliteStore, CallWatch]:
    store, actor, ports = await order_status_actor(tmp_path, feeds, **settings)
    watch = actor.watch
    assert watch is not None
    task = actor.start(resume=False)
    await eventually(lambda: ports.spoken, 10, "the greeting")
    # What the speech gateway would send: VAD start/end, the final, the greeting playing.
    speech = watch.speech
    # The greeting finished at call time 2400 ms (the gateway's clock, learnt from this)...
    done = speech_pb2.PlaybackEvent(
        kind=speech_pb2.PlaybackEvent.KIND_FINISHED, request_id="call-1:p1", at_ms=2400
    )
    speech(speech_pb2.SpeechUpdate(playback=done))
    # ...and the caller had stopped speaking at 2100 ms: the VAD end arrives now (300 ms on).
    speech(
        speech_pb2.SpeechUpdate(
            vad=speech_pb2.VadEvent(
                kind=speech_pb2.VadEvent.KIND_SPEECH_START, utterance_id="u1", at_ms=900
            )
        )
    )
    speech(
        speech_pb2.SpeechUpdate(
            vad=speech_pb2.VadEvent(
                kind=speech_pb2.VadEvent.KIND_SPEECH_END, utterance_id="u1", at_ms=2100
            )
        )
    )
    final = speech_pb2.TranscriptEvent(
        kind=speech_pb2.TranscriptEvent.KIND_FINAL, utterance_id="u1"
    )
    final.speech.transcript = WORDS
    final.speech.timing.end_ms = 1800
    speech(speech_pb2.SpeechUpdate(transcript=final))
    actor.post(e.SpeechStarted("u1"))
    actor.post(e.SpeechEnded("u1"))
    actor.post(e.Transcript("u1", WORDS, True, 0.9, 0, 1800))
    await eventually(lambda: any("has shipped" in t for t in ports.spoken), 10, "the answer")
    replies = [
        x for x in watch.feed.events if x["kind"] == "prompt" and "look up" in str(x["text"])
    ]
    started = speech_pb2.PlaybackEvent(
        kind=speech_pb2.PlaybackEvent.KIND_STARTED, request_id=str(replies[0]["request_id"])
    )
    speech(speech_pb2.SpeechUpdate(playback=started))
    actor.post(e.CallerHangup())
    await asyncio.wait_for(task, 20)
    return actor, store, watch


async def test_the_feed_follows_the_call_and_drops_it_with_the_session(tmp_path: Path) -> None:
    feeds = CallFeeds()
    listing = feeds.subscribe_list()
    _, store, watch = await run_watched_call(tmp_path, feeds)
    feed = watch.feed
    # While it ran, the call list's subscribers saw it move from state to state...
    seen = [listing.queue.get_nowait() for _ in range(listing.queue.qsize())]
    calls = [x["call"] for x in seen if x is not None and x["kind"] == "call"]
    states = [c["state"] for c in calls if isinstance(c, dict)]
    assert list(dict.fromkeys(states)) == ["greet", "lookup", "shipped"], states
    # ...and now the call is over and its dialog keeps no transcripts: all of it is gone.
    assert await store.load("call-1") is None and await store.load_archived("call-1") is None
    assert list(feed.events) == []
    got = feeds.get("call-1")
    assert (
        got is feed and feed.summary["data"] == "dropped" and feed.summary["note"] == DROPPED_NOTE
    )
    assert WORDS not in str(feeds.summaries())
    assert feed.summary["caller"] == "•••-1"  # "call-1", masked
    await store.close()


async def test_the_feed_records_what_the_console_shows(tmp_path: Path) -> None:
    feeds = CallFeeds()
    _, store, watch = await run_watched_call(tmp_path, feeds, persist_transcripts=True)
    events = list(watch.feed.events)
    kinds = [x["kind"] for x in events]
    steps = [(x["from"], x["to"], x["event"]) for x in events if x["kind"] == "step"]
    assert steps == [
        ("", "greet", "start"),
        ("greet", "lookup", "speech"),
        ("lookup", "shipped", "backend_result"),
    ]
    assert [x["intent"] for x in events if x["kind"] == "intent"] == ["order_status"]
    assert [x["text"] for x in events if x["kind"] == "transcript"] == [WORDS]
    answers = [x for x in events if x["kind"] == "backend_answer"]
    assert [(a["service"], a["method"], a["ok"]) for a in answers] == [("shop", "get_order", True)]
    assert isinstance(answers[0]["latency_ms"], float) and answers[0]["latency_ms"] >= 15
    timers = {(x["name"], x["edge"]) for x in events if x["kind"] == "timer"}
    assert timers == {
        (n, edge) for n in ("max_duration", "no_input") for edge in ("armed", "cleared")
    }
    (turn,) = [x for x in events if x["kind"] == "turn"]
    stages: Any = turn["stages"]
    assert isinstance(stages, dict)
    assert 300 <= stages["end_of_speech"] < 350, stages  # 2400 - 2100 call ms, and our delay
    assert set(stages) == {"end_of_speech", "final", "decision", "tts"}
    prompts = [x["text"] for x in events if x["kind"] == "prompt"]
    assert len(prompts) == 3 and "has shipped" in str(prompts[-1]), prompts
    assert kinds.count("vad") == 2 and "hangup" in kinds and kinds[-1] == "ended"
    # The dialog archives its transcripts: kept while the archive keeps them.
    assert await store.load_archived("call-1") is not None
    assert watch.feed.has_data and watch.feed.summary["status"] == "ended"
    await store.close()


async def test_an_archived_call_is_dropped_when_its_retention_passes(tmp_path: Path) -> None:
    now = [1_000_000]
    feeds = CallFeeds(clock=lambda: now[0])
    _, store, watch = await run_watched_call(
        tmp_path, feeds, persist_transcripts=True, transcript_retention_s=60
    )
    assert watch.feed.has_data
    now[0] += 59_000
    assert feeds.get("call-1") is watch.feed and watch.feed.has_data
    now[0] += 1_000
    feed = feeds.get("call-1")
    assert feed is not None and not feed.has_data and list(feed.events) == []
    assert feed.summary["note"] == EXPIRED_NOTE
    await store.close()


def test_a_call_handed_over_to_another_replica_leaves_the_list() -> None:
    feeds = CallFeeds()
    feed = feeds.open(summary())
    stream = feed.subscribe()
    listing = feeds.subscribe_list()
    feeds.forget("call-1")
    assert feeds.get("call-1") is None and feeds.summaries() == []
    assert [stream.queue.get_nowait() for _ in range(2)] == [{"kind": "closed"}, None]
    assert listing.queue.get_nowait() == {"kind": "removed", "session_id": "call-1"}


async def test_partials_then_the_final_of_an_utterance(tmp_path: Path) -> None:
    feeds = CallFeeds()
    store, actor, _ = await order_status_actor(tmp_path, feeds, partials=True)
    assert actor.watch is not None
    for kind, text in (("KIND_PARTIAL", "my order"), ("KIND_FINAL", "my order is late")):
        t = speech_pb2.TranscriptEvent(
            kind=speech_pb2.TranscriptEvent.Kind.Value(kind), utterance_id="u7"
        )
        t.speech.transcript = text
        actor.watch.speech(speech_pb2.SpeechUpdate(transcript=t))
    said = [(x["utterance_id"], x["text"], x["final"]) for x in actor.watch.feed.events]
    assert said == [("u7", "my order", False), ("u7", "my order is late", True)]
    await store.close()
