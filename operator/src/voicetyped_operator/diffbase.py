"""A diff-base storage that keeps a hash, not a copy, of the last handled spec.

kopf's default stores the whole last-handled object as JSON in an annotation. A Dialog's
spec can approach the size limit of all annotations together (256 KiB), and then every
write kopf makes to it would fail. The handlers here never use kopf's field diffs (they
reconcile the whole object), so a hash is all that is needed to tell "changed" from "not
changed": on a match the current essence is returned (no diff), otherwise an empty one (a
diff, so the update handlers run).
"""

from __future__ import annotations

import hashlib
import json
from typing import cast

import kopf
from kopf._cogs.structs import bodies, patches


class HashDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    def __init__(self, *, prefix: str, key: str = "last-handled-hash") -> None:
        super().__init__(prefix=prefix, key=key, v1=False)

    @staticmethod
    def hash(essence: bodies.BodyEssence) -> str:
        text = json.dumps(essence, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def fetch(self, *, body: bodies.Body) -> bodies.BodyEssence | None:
        stored = None
        for full_key in self.make_keys(self.key, body=body):
            stored = body.metadata.annotations.get(full_key)
            if stored is not None:
                break
        if stored is None:
            return None
        current = self.build(body=body)
        if stored.strip() == self.hash(current):
            return current
        return cast(bodies.BodyEssence, {})

    def store(
        self, *, body: bodies.Body, patch: patches.Patch, essence: bodies.BodyEssence
    ) -> None:
        for full_key in self.make_keys(self.key, body=body):
            patch.metadata.annotations[full_key] = self.hash(essence)
        self._store_marker(prefix=self.prefix, patch=patch, body=body)
