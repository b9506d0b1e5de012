"""What the recogniser heard: the runtime's final transcript of each caller turn, as the call
goes, from the runtime's admin API (``GET /v1/sessions/{id}``, the live session's speech
events).

Transcripts stay where the runtime keeps them (the live session, deleted when the call ends
unless the dialog persists them); the caller reads them while the call is up and only prints
them. The session id is the media gateway's for the SIP dialog the phone placed
(:func:`voicetyped_media.call.media_call.sip_session_id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class _Seen:
    text: str
    at: float  # time.perf_counter() when first seen
    claimed: bool = False


@dataclass
class Heard:
    """Polls the call's live session every ``interval_s`` and keeps its speech events."""

    admin_url: str
    token_file: Path | None = None
    interval_s: float = 0.25
    reachable: bool | None = None
    """None: not asked yet; False: the admin API did not answer (wrong URL, token)."""
    problem: str = ""
    _seen: list[_Seen] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self, session_id: str) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll(session_id))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def claim(self) -> list[str] | None:
        """The transcripts seen since the last claim (None: the runtime could not be asked)."""
        if self.reachable is not True and not self._seen:
            return None
        fresh = [s for s in self._seen if not s.claimed]
        for s in fresh:
            s.claimed = True
        return [s.text for s in fresh]

    async def _poll(self, session_id: str) -> None:
        url = f"{self.admin_url.rstrip('/')}/v1/sessions/{session_id}"
        while True:
            texts = await asyncio.to_thread(self._fetch, url)
            if texts is not None:
                now = time.perf_counter()
                self._seen.extend(_Seen(t, now) for t in texts[len(self._seen) :])
            await asyncio.sleep(self.interval_s)

    def _fetch(self, url: str) -> list[str] | None:
        request = urllib.request.Request(url)
        if self.token_file is not None and self.token_file.is_file():
            token = self.token_file.read_text().strip()
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=2) as reply:
                session = json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # not started yet, or ended (and deleted): keep what we have
                return None
            self.reachable, self.problem = False, f"HTTP {exc.code} from {url}"
            return None
        except (OSError, ValueError) as exc:
            self.reachable, self.problem = False, f"{url}: {exc}"
            return None
        self.reachable = True
        events = session.get("session", {}).get("events", [])
        return [e.get("transcript", "") for e in events if e.get("type") == "speech"]
