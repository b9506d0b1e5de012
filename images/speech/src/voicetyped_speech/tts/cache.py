"""An in-memory LRU cache of synthesized prompts, bounded by total bytes.

Entries are the complete 16-bit PCM of one synthesis at one output rate; the key is a sha256 of
everything that shapes those bytes (:func:`cache_key`). The cache belongs to one event loop
thread (the synthesizer's): it has no lock.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""64 MiB: ~35 minutes of 16 kHz audio, ~70 minutes at 8 kHz."""


def cache_key(
    text: str,
    voice_name: str,
    voice_identity: str,
    sample_rate: int,
    synthesis: Mapping[str, object],
) -> str:
    """sha256 (hex) of the text, the voice (name and file identity), the output rate and the
    synthesis settings (Piper's and the pipeline's: resampler quality, sentence splitting)."""
    blob = json.dumps(
        {
            "text": text,
            "voice": voice_name,
            "voice_identity": voice_identity,
            "sample_rate": sample_rate,
            "synthesis": dict(synthesis),
        },
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    insertions: int = 0
    evictions: int = 0
    rejected: int = 0
    """Entries not stored because they alone exceed the byte budget."""


class PromptCache:
    """``key -> PCM bytes``, least recently used entries evicted beyond ``max_bytes``."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """Membership without counting a hit or a miss or refreshing the entry."""
        return key in self._entries

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def get(self, key: str) -> bytes | None:
        """The entry (now most recently used), counting a hit or a miss."""
        pcm = self._entries.get(key)
        if pcm is None:
            self.stats.misses += 1
            return None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        return pcm

    def put(self, key: str, pcm: bytes) -> bool:
        """Store ``pcm`` (replacing an entry of the same key), evicting the least recently used
        entries to stay within ``max_bytes``. False when ``pcm`` alone is too large."""
        if len(pcm) > self.max_bytes:
            self.stats.rejected += 1
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        while self._entries and self._bytes + len(pcm) > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= len(evicted)
            self.stats.evictions += 1
        self._entries[key] = pcm
        self._bytes += len(pcm)
        self.stats.insertions += 1
        return True

    def discard(self, key: str) -> None:
        pcm = self._entries.pop(key, None)
        if pcm is not None:
            self._bytes -= len(pcm)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
