"""Documents that must not hang or exhaust what reads them, and what each is refused with.

Every entry point that reads dialog or integration documents is fed these (see
``voicetyped.documents``): each must answer with one line within a couple of seconds and a
few megabytes, never expand, read or validate the whole thing.
"""

from __future__ import annotations

LAUGHS_LEVELS = 9


def billion_laughs(levels: int = LAUGHS_LEVELS) -> bytes:
    """Nested anchors: ~1 KB of YAML that expands to 10**levels strings."""
    lines = ['lol0: &lol0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels + 1):
        refs = ", ".join([f"*lol{level - 1}"] * 10)
        lines.append(f"lol{level}: &lol{level} [{refs}]")
    return ("name: laughs\ninitial: a\n" + "\n".join(lines) + "\n").encode()


def five_megabytes() -> bytes:
    """A well-formed dialog with a 5 MB description."""
    return (
        b"name: huge\ninitial: a\ndescription: '" + b"x" * 5_000_000 + b"'\n"
        b"states: {a: {terminal: true}}\n"
    )


NOT_UTF8 = "name: caf\xe9\ninitial: a\nstates: {a: {terminal: true}}\n".encode("latin-1")
"""Latin-1 text: byte 0xe9 at offset 9."""

BINARY = bytes(range(256)) * 64
"""16 KiB of every byte value (a NUL at offset 0)."""

HOSTILE: dict[str, bytes] = {
    "billion-laughs": billion_laughs(),
    "five-megabytes": five_megabytes(),
    "not-utf8": NOT_UTF8,
    "binary": BINARY,
}

REFUSED_WITH: dict[str, str] = {
    "billion-laughs": "YAML aliases repeat more than 1,048,576 nodes and characters (anchors "
    "that expand each other, a 'billion laughs' document)",
    "five-megabytes": "too large: more than 1,048,576 bytes (the limit for a document)",
    "not-utf8": "not UTF-8 text (byte 0xe9 at offset 9)",
    "binary": "binary data, not YAML text (a NUL byte at offset 0)",
}
"""The one line each is refused with, after ``<source>: ``."""

SECONDS = 2.0
"""Each entry point answers within this (generous: the refusals take milliseconds)."""
GROWTH_BYTES = 200 * 1024 * 1024
"""And grows by less than this while it does."""
