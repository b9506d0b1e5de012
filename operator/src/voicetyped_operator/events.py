"""Kubernetes Events for significant transitions (posted by kopf in the background).

The API server refuses an Event whose message is over 1,024 bytes (UTF-8, not characters), and
a refused Event is simply lost. Messages are cut to fit here; the full text stays in the
object's status conditions, which the cut message points to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, cast

import kopf

from voicetyped_operator import naming

MESSAGE_LIMIT_BYTES: Final = 1024
"""core/v1 Event validation: ``len(message) <= 1024`` in Go, i.e. bytes."""
CUT_NOTE: Final = " … (cut: the full text is in status.conditions)"


def reference(kind: str, name: str, namespace: str, uid: str) -> dict[str, Any]:
    """An object reference kopf can post Events for."""
    return {
        "apiVersion": naming.API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
    }


def fit(message: str, limit: int = MESSAGE_LIMIT_BYTES) -> str:
    """``message`` if its UTF-8 form fits in ``limit`` bytes, else its longest prefix that
    fits with :data:`CUT_NOTE` (never half a character)."""
    # Lone surrogates (from a hostile object's JSON) would become 3-byte U+FFFD on the server.
    encoded = message.encode("utf-8", errors="replace")
    if len(encoded) <= limit:
        return encoded.decode("utf-8")
    room = limit - len(CUT_NOTE.encode())
    # Cutting the bytes may split a character: drop the partial one.
    head = encoded[:room].decode("utf-8", errors="ignore")
    return head.rstrip() + CUT_NOTE


def post(
    ref: Mapping[str, Any], kind: Literal["Normal", "Warning"], reason: str, message: str
) -> None:
    # kopf only reads apiVersion, kind and metadata (name, namespace, uid) from the body.
    kopf.event(cast(kopf.Body, ref), type=kind, reason=reason, message=fit(message))
