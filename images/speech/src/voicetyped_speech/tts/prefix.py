"""Fixed openings of templated prompts, so their first audio can come from the cache.

A templated prompt (``"One moment while I look up order {{ vars.order_id }}."``) is different
on every call, so it cannot be cached whole, and voicing it from scratch costs Piper its whole
first sentence (~0.3-0.5 s on 2 cores) before the caller hears anything. Its opening up to the
first ``{{`` is the same every time, though: warm-up caches that opening on its own, and when a
rendered prompt begins with it, the synthesizer plays the cached opening at once while Piper
voices the rest, which is ready long before the opening has been played.

The cut is made on a word boundary (a word glued to a template part, ``"order#{{ n }}"``, goes
with the rest) and only when the opening holds at least :data:`MIN_PREFIX_WORDS` words: a
shorter one plays for less time than the rest takes to voice and would leave a gap mid-prompt.
The join is an audible phrase boundary -- the classic IVR concatenation, traded for first
audio ~0.4 s sooner.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

MIN_PREFIX_WORDS: Final = 2
MAX_PREFIXES: Final = 4096
"""Registered openings kept (least recently registered dropped first)."""


def fixed_prefix(template: str, min_words: int = MIN_PREFIX_WORDS) -> str | None:
    """The fixed opening of ``template`` worth caching on its own, or None (no ``{{``, or too
    short an opening)."""
    cut = template.find("{{")
    if cut < 0:
        return None
    head = template[:cut]
    if head and not head[-1].isspace():
        # The part glues onto the word before it: that word belongs to the rest.
        space = max(head.rfind(" "), head.rfind("\t"), head.rfind("\n"))
        head = head[: space + 1] if space >= 0 else ""
    head = head.rstrip()
    if len(head.split()) < min_words:
        return None
    return head


class PrefixIndex:
    """The registered openings; :meth:`match` finds the longest one a rendered text begins
    with, on a word boundary."""

    def __init__(self, max_entries: int = MAX_PREFIXES) -> None:
        self._max = max_entries
        self._entries: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, prefix: object) -> bool:
        return prefix in self._entries

    def add(self, prefix: str) -> None:
        self._entries[prefix] = None
        self._entries.move_to_end(prefix)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def match(self, text: str) -> tuple[str, str] | None:
        """``(opening, rest)`` for the longest registered opening ``text`` begins with and that
        leaves a non-empty rest starting at a word boundary, else None."""
        best: str | None = None
        for prefix in self._entries:
            if len(text) <= len(prefix) or not text.startswith(prefix):
                continue
            if not text[len(prefix)].isspace():
                continue
            if best is None or len(prefix) > len(best):
                best = prefix
        if best is None:
            return None
        rest = text[len(best) :].strip()
        return (best, rest) if rest else None
