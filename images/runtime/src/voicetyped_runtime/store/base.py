"""The session store interface.

A store keeps one opaque document (UTF-8 JSON bytes produced by the runtime)
per live call, keyed by session id, plus:

- a **TTL** per document: a live session's document expires if the runtime
  stops refreshing it (the call died with its runtime and never came back), so
  transcripts held in it never outlive the call by more than the TTL;
- a **live index**: the ids of all sessions with a document, for resuming
  after a restart;
- **ownership leases**: at most one runtime replica drives a session at a
  time. A replica claims a session (free, expired or already its own) and
  renews the lease while it drives it; after a crash the lease expires and
  another replica (or the restarted one) can claim it;
- an **archive** for sessions whose dialog opted in to keeping transcripts
  after the call, with its own retention.

Writes are last-writer-wins per session; the lease is what keeps two
replicas from writing the same session.
"""

from __future__ import annotations

from typing import Protocol

from voicetyped.storage import StoreError as StoreError  # re-exported


class SessionStore(Protocol):
    async def open(self) -> None:
        """Connect / create schema. Idempotent."""

    async def close(self) -> None: ...

    async def check(self) -> str | None:
        """None when the store answers, else a short reason (for /readyz)."""

    async def save(self, session_id: str, document: bytes, ttl_s: float) -> None:
        """Create or replace the session's document and (re)set its TTL."""

    async def load(self, session_id: str) -> bytes | None:
        """The session's document, or None if absent or expired."""

    async def delete(self, session_id: str) -> None:
        """Remove the document, its live-index entry and its lease. Idempotent."""

    async def list_live(self) -> list[str]:
        """Ids of all sessions with an unexpired document, sorted."""

    async def claim(self, session_id: str, owner: str, lease_s: float) -> bool:
        """Take or renew ownership. True if ``owner`` now holds the lease.

        Succeeds when the session has no lease, its lease expired, or ``owner``
        already holds it (which renews it). Fails while another owner's lease is
        valid.
        """

    async def release(self, session_id: str, owner: str) -> None:
        """Drop the lease if ``owner`` holds it (clean shutdown hand-over)."""

    async def archive(self, session_id: str, document: bytes, retention_s: float) -> None:
        """Keep a finished session's document for ``retention_s`` (opt-in transcripts)."""

    async def load_archived(self, session_id: str) -> bytes | None: ...
