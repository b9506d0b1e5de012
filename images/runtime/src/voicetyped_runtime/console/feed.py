"""What the console knows of each call: a bounded in-memory event log per call, its summary,
and the subscribers (open event streams) of each log and of the call list.

Memory stays bounded however the calls and the browsers behave: a call keeps at most
``EVENTS_PER_CALL`` events (the oldest go first, counted in ``summary["events_dropped"]``), at
most ``recent_calls`` ended calls stay listed, and a subscriber whose queue is full (a browser
that stopped reading) is cut off with an ``overflow`` marker instead of being buffered for.

Transcripts stay as ephemeral as the session store keeps them: when a call whose dialog keeps
no transcripts ends, its events are dropped at once (the store deletes the session then);
when the dialog archives them, the events go when the archive's retention passes.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import JsonValue

EVENTS_PER_CALL = 2000
SUBSCRIBER_QUEUE = 256
DROPPED_NOTE = "ended; its data was dropped with the session (the dialog keeps no transcripts)"
EXPIRED_NOTE = "ended; its data was dropped when the archive's retention passed"

Event = dict[str, JsonValue]


def wall_ms() -> int:
    return int(time.time() * 1000)


def mask(caller_id: str) -> str:
    """All but the last 2 characters hidden (the length shown is fixed, not the real one)."""
    return "•••" + caller_id[-2:] if caller_id else ""


class Subscription:
    """One open stream's queue; ``None`` in it ends the stream."""

    def __init__(self, backlog: list[Event]) -> None:
        self.backlog = backlog
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(SUBSCRIBER_QUEUE)

    def offer(self, event: Event | None) -> bool:
        """Queue ``event``; False when the subscriber is too far behind (then it is ended)."""
        try:
            self.queue.put_nowait(event)
            return True
        except asyncio.QueueFull:
            # Make room for the end marker: the reader learns it was cut off and reloads.
            self.queue.get_nowait()
            self.queue.put_nowait({"kind": "overflow"})
            return False

    def close(self) -> None:
        self.offer(None)  # queued, or the overflow marker that also ends the stream


class _Topic:
    def __init__(self) -> None:
        self.subscribers: set[Subscription] = set()

    def subscribe(self, backlog: list[Event]) -> Subscription:
        sub = Subscription(backlog)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)

    def publish(self, event: Event) -> None:
        for sub in list(self.subscribers):
            if not sub.offer(event):
                self.subscribers.discard(sub)

    def close_all(self) -> None:
        for sub in self.subscribers:
            sub.close()
        self.subscribers.clear()


@dataclass
class CallFeed:
    """One call: its summary (always kept while listed) and its events (dropped with the
    session's data)."""

    summary: dict[str, JsonValue]
    clock: Callable[[], int] = wall_ms
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=EVENTS_PER_CALL))
    topic: _Topic = field(default_factory=_Topic)
    seq: int = 0
    expires_ms: int | None = None
    """Ended and archived: when the archive's retention passes (then the events are dropped)."""
    on_change: Callable[[CallFeed], None] | None = None

    @property
    def session_id(self) -> str:
        return str(self.summary["session_id"])

    @property
    def has_data(self) -> bool:
        return self.summary.get("data") == "kept"

    def publish(self, kind: str, **fields: JsonValue) -> None:
        if not self.has_data:
            return
        self.seq += 1
        event: Event = {"seq": self.seq, "at_ms": self.clock(), "kind": kind, **fields}
        if len(self.events) == self.events.maxlen:
            dropped = self.summary.get("events_dropped")
            self.summary["events_dropped"] = (dropped if isinstance(dropped, int) else 0) + 1
        self.events.append(event)
        self.topic.publish(event)

    def update(self, **fields: JsonValue) -> None:
        """Change the summary (state, end...): the call list's subscribers see it."""
        self.summary.update(fields)
        if self.on_change is not None:
            self.on_change(self)

    def subscribe(self) -> Subscription:
        return self.topic.subscribe(list(self.events))

    def drop_data(self, note: str) -> None:
        """Forget every event (transcripts included); streams get a ``dropped`` event and end."""
        self.events.clear()
        self.topic.publish({"kind": "dropped", "note": note})
        self.topic.close_all()
        self.update(data="dropped", note=note)


class CallFeeds:
    """The console's view of this replica's calls: live ones and the ``recent_calls`` last
    ended ones."""

    def __init__(self, recent_calls: int = 50, clock: Callable[[], int] = wall_ms) -> None:
        self.recent_calls = recent_calls
        self.clock = clock
        self.live: dict[str, CallFeed] = {}
        self.ended: OrderedDict[str, CallFeed] = OrderedDict()
        self.list_topic = _Topic()

    def open(self, summary: dict[str, JsonValue]) -> CallFeed:
        """A feed for a call starting (or resumed) here."""
        sid = str(summary["session_id"])
        self.ended.pop(sid, None)
        feed = CallFeed(
            summary={**summary, "status": "live", "data": "kept", "note": ""},
            clock=self.clock,
            on_change=self._changed,
        )
        self.live[sid] = feed
        self._changed(feed)
        return feed

    def close(self, feed: CallFeed, kept: bool, retention_s: float, reason: str) -> None:
        """The call ended: ``kept`` when the store archived it for ``retention_s``."""
        sid = feed.session_id
        if self.live.get(sid) is not feed:
            return
        del self.live[sid]
        feed.publish("ended", reason=reason, kept=kept)
        feed.topic.publish({"kind": "closed"})
        feed.topic.close_all()
        status: dict[str, JsonValue] = {"status": "ended", "ended_ms": self.clock()}
        if kept:
            feed.expires_ms = self.clock() + int(retention_s * 1000)
            feed.update(**status)
        else:
            feed.summary.update(status)
            feed.drop_data(DROPPED_NOTE)
        self.ended[sid] = feed
        while len(self.ended) > self.recent_calls:
            _, gone = self.ended.popitem(last=False)
            self.list_topic.publish({"kind": "removed", "session_id": gone.session_id})

    def forget(self, session_id: str) -> None:
        """A call handed over to another replica: no longer ours to show."""
        feed = self.live.pop(session_id, None)
        if feed is not None:
            feed.topic.publish({"kind": "closed"})
            feed.topic.close_all()
            self.list_topic.publish({"kind": "removed", "session_id": session_id})

    def prune(self) -> None:
        """Drop the events of ended calls whose archive retention has passed."""
        now = self.clock()
        for feed in self.ended.values():
            if feed.has_data and feed.expires_ms is not None and feed.expires_ms <= now:
                feed.drop_data(EXPIRED_NOTE)

    def get(self, session_id: str) -> CallFeed | None:
        self.prune()
        return self.live.get(session_id) or self.ended.get(session_id)

    def summaries(self) -> list[dict[str, JsonValue]]:
        self.prune()
        feeds = [*self.live.values(), *reversed(self.ended.values())]
        return [dict(f.summary) for f in feeds]

    def subscribe_list(self) -> Subscription:
        return self.list_topic.subscribe([{"kind": "call", "call": s} for s in self.summaries()])

    def shutdown(self) -> None:
        """End every open stream (the server is stopping)."""
        for feed in [*self.live.values(), *self.ended.values()]:
            feed.topic.close_all()
        self.list_topic.close_all()

    def _changed(self, feed: CallFeed) -> None:
        self.list_topic.publish({"kind": "call", "call": dict(feed.summary)})
