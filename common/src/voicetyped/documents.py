"""Dialog and Integration documents, plain or as the Kubernetes resources users apply.

The same YAML works locally (``voicetyped up``) and in a cluster (``kubectl apply``): a file may
hold the document itself, or a ``voicetyped.io`` resource of that kind whose ``spec`` is the
document (its ``metadata.name`` names it when the spec does not).

Every reader of these documents (the CLI, the runtime's files and admin API, the integration
gateway, the operator) goes through :func:`read_document` / :func:`parse_document`, which
refuse, each with one line, what could hang or exhaust a process: more than
:data:`MAX_DOCUMENT_BYTES`, YAML aliases that would add more than
:data:`MAX_ALIAS_EXPANSION` (a "billion laughs" document), text that is not UTF-8, and binary
data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

API_GROUP = "voicetyped.io"

MAX_DOCUMENT_BYTES = 1024 * 1024
"""A dialog or integration document is at most 1 MiB (the examples are a few KiB)."""
MAX_ALIAS_EXPANSION = 1024 * 1024
"""What YAML aliases (``*name``) may add to a document, in nodes plus characters of text:
sharing a few transitions is fine; anchors nested into each other to expand a small file into
millions of nodes (a "billion laughs" document) are refused before anything walks the tree."""

# libyaml's parser when PyYAML has it (it also caps nesting at 1,000 levels); pure Python else.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DocumentError(ValueError):
    """A document that cannot be read safely; the message is one line naming its source."""


class _AliasError(yaml.YAMLError):
    """Aliases past the limit, or one inside the node it names."""


class _AliasLimitedLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """PyYAML's safe loader, refusing alias expansion past MAX_ALIAS_EXPANSION.

    Hand-written because PyYAML has no such limit and another YAML library would read
    documents differently; composing shares one node per anchor, so counting the expanded
    tree over the node graph is linear in the file, before any object is built.
    """

    def get_single_node(self) -> yaml.Node | None:
        node: yaml.Node | None = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node

    def get_node(self) -> yaml.Node | None:  # each document of a stream
        node: yaml.Node | None = super().get_node()
        if node is not None:
            _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """Raise if the tree the aliases expand to outweighs the document's own nodes by too much.

    A node weighs 1 plus the length of its text; the expanded weight of each node is summed
    over its children once (a node named by aliases is visited once), so this is linear.
    """
    expanded: dict[int, int] = {}  # node id -> weight of its expanded subtree
    own = 0  # weight of the distinct nodes seen so far
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            weight = _weight(node)
            own += weight
            expanded[key] = weight + sum(expanded[id(c)] for c in _children(node))
            if expanded[key] - own > MAX_ALIAS_EXPANSION:
                raise _AliasError(
                    f"YAML aliases repeat more than {MAX_ALIAS_EXPANSION:,} nodes and "
                    "characters (anchors that expand each other, a 'billion laughs' document)"
                )
            continue
        if key in expanded:
            continue
        if key in on_path:
            raise _AliasError("a YAML alias refers to a node that contains it (a cycle)")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in expanded)


def _weight(node: yaml.Node) -> int:
    return 1 + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def decode_document(data: bytes, source: str) -> str:
    """UTF-8 text of at most MAX_DOCUMENT_BYTES; DocumentError names what is wrong."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DocumentError(too_large(source))
    nul = data.find(b"\0")
    if nul >= 0:
        raise DocumentError(f"{source}: binary data, not YAML text (a NUL byte at offset {nul})")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{source}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


def parse_document(data: bytes | str, source: str) -> Any:
    """Parse one YAML (or JSON) document within the limits above.

    Raises DocumentError for size, encoding and alias problems, and ``yaml.YAMLError`` (with
    its ``problem_mark``) for YAML syntax, for callers that report line and column.
    """
    return _parsed(data, source, all_documents=False)


def parse_documents(data: bytes | str, source: str) -> list[Any]:
    """Every document of a multi-document YAML stream (``---``), within the same limits."""
    parsed: list[Any] = _parsed(data, source, all_documents=True)
    return parsed


def _parsed(data: bytes | str, source: str, all_documents: bool) -> Any:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    text = decode_document(raw, source)
    try:
        if all_documents:
            return list(yaml.load_all(text, Loader=_AliasLimitedLoader))
        return yaml.load(text, Loader=_AliasLimitedLoader)
    except _AliasError as exc:
        raise DocumentError(f"{source}: {exc}") from None
    except RecursionError:
        raise DocumentError(f"{source}: nested too deeply") from None


def read_limited(path: Path) -> bytes:
    """A document file's bytes, reading at most one byte past the size limit."""
    with path.open("rb") as handle:
        return handle.read(MAX_DOCUMENT_BYTES + 1)


def read_document(path: Path) -> Any:
    """Read and parse a document file within the limits above."""
    return parse_document(read_limited(path), str(path))


def check_parsed(document: Any, source: str) -> None:
    """The limits for a document that arrives parsed (a resource's spec from the API server).

    Walks at most MAX_DOCUMENT_BYTES worth of it (shared sub-objects count each time they
    appear, so a structure that aliases itself stops the walk early): too large, a string
    that is not UTF-8 (a lone surrogate from a ``\\udcff`` escape) or bytes get one line,
    with the path of the offending value.
    """
    budget = MAX_DOCUMENT_BYTES
    stack: list[tuple[str, Any]] = [(source, document)]
    while stack:
        path, value = stack.pop()
        budget -= 1
        if isinstance(value, str):
            try:
                budget -= len(value.encode("utf-8"))
            except UnicodeEncodeError as exc:
                raise DocumentError(
                    f"{path}: not UTF-8 text ({exc.reason} at offset {exc.start})"
                ) from None
        elif isinstance(value, bytes | bytearray):
            raise DocumentError(f"{path}: binary data, not text")
        elif isinstance(value, dict):
            stack.extend((f"{path}.{k}", v) for k, v in reversed(value.items()))
            budget -= sum(len(str(k)) for k in value)
        elif isinstance(value, list | tuple):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(value))))
        if budget < 0:
            raise DocumentError(too_large(source))


def too_large(source: str) -> str:
    """The one line for a document past MAX_DOCUMENT_BYTES."""
    return f"{source}: too large: more than {MAX_DOCUMENT_BYTES:,} bytes (the limit for a document)"


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
