"""Dialog and Integration documents, plain or as the Kubernetes resources users apply.

The same YAML works locally (``voicetyped up``) and in a cluster (``kubectl apply``): a file may
hold the document itself, or a ``voicetyped.io`` resource of that kind whose ``spec`` is the
document (its ``metadata.name`` names it when the spec does not).
"""

from __future__ import annotations

from typing import Any

API_GROUP = "voicetyped.io"


class DocumentKindError(ValueError):
    """A resource of another kind where this kind of document was expected."""


def unwrap(data: Any, kind: str) -> Any:
    """The document inside a ``voicetyped.io`` resource of ``kind``; anything else unchanged."""
    if not isinstance(data, dict) or "apiVersion" not in data or "kind" not in data:
        return data
    api = str(data.get("apiVersion", ""))
    if not api.startswith(f"{API_GROUP}/"):
        raise DocumentKindError(f"apiVersion {api!r} is not {API_GROUP}/...")
    if data.get("kind") != kind:
        raise DocumentKindError(f"a {data.get('kind')!r} resource is not a {kind}")
    spec = data.get("spec")
    if not isinstance(spec, dict):
        raise DocumentKindError(f"{kind} resource without a spec mapping")
    name = (
        (data.get("metadata") or {}).get("name") if isinstance(data.get("metadata"), dict) else None
    )
    return {"name": name, **spec} if name and "name" not in spec else spec
