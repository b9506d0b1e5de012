"""Reading documents safely: size, YAML aliases, encoding and binary data, each one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from voicetyped.documents import (
    MAX_DOCUMENT_BYTES,
    DocumentError,
    check_parsed,
    parse_document,
    read_document,
)
from voicetyped_testkit.footprint import measure
from voicetyped_testkit.hostile import GROWTH_BYTES, HOSTILE, REFUSED_WITH, SECONDS


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_documents_are_refused_with_one_line(kind: str) -> None:
    with pytest.raises(DocumentError) as info:
        parse_document(HOSTILE[kind], "dialog.yaml")
    assert str(info.value) == f"dialog.yaml: {REFUSED_WITH[kind]}"


def test_hostile_documents_are_refused_quickly_and_in_little_memory(tmp_path: Path) -> None:
    for kind, data in HOSTILE.items():
        (tmp_path / f"{kind}.yaml").write_bytes(data)
    found = measure(
        "from pathlib import Path\nfrom voicetyped.documents import read_document",
        {kind: f"read_document(Path({str(tmp_path / kind)!r} + '.yaml'))" for kind in HOSTILE},
    )
    for kind, footprint in found.items():
        assert footprint.outcome.startswith("DocumentError: "), (kind, footprint)
        assert footprint.outcome.endswith(REFUSED_WITH[kind]), (kind, footprint)
        assert footprint.seconds < SECONDS, (kind, footprint)
        assert footprint.grew_bytes < GROWTH_BYTES, (kind, footprint)


def test_a_billion_laughs_structure_costs_nothing_unrefused() -> None:
    # The same file read without the limit builds only shared lists: it is walking the
    # expanded tree (validation, hashing) that exhausts memory, so the refusal comes first.
    unlimited = yaml.safe_load(HOSTILE["billion-laughs"])
    assert unlimited["lol9"][0] is unlimited["lol8"]


def test_shared_anchors_of_ordinary_size_are_fine() -> None:
    text = """
    retry: &retry {event: timeout, target: ask}
    states:
      ask: {transitions: [*retry, *retry]}
      again: {transitions: [*retry]}
    """
    data = parse_document(text, "d.yaml")
    assert data["states"]["again"]["transitions"] == [{"event": "timeout", "target": "ask"}]


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    with pytest.raises(DocumentError) as info:
        parse_document("a: &a [1, *a]\n", "loop.yaml")
    assert str(info.value) == "loop.yaml: a YAML alias refers to a node that contains it (a cycle)"


def test_exactly_the_limit_is_read_and_one_byte_more_is_not(tmp_path: Path) -> None:
    head = b"name: x\ndescription: '"
    body = b"x" * (MAX_DOCUMENT_BYTES - len(head) - 2) + b"'\n"
    path = tmp_path / "edge.yaml"
    path.write_bytes(head + body)
    assert read_document(path)["name"] == "x"
    path.write_bytes(head + b"x" + body)
    with pytest.raises(DocumentError, match="too large"):
        read_document(path)


def test_utf8_with_a_byte_order_mark_reads() -> None:
    assert parse_document("\ufeffname: café\n".encode(), "bom.yaml") == {"name": "café"}


def test_yaml_syntax_errors_keep_their_position() -> None:
    with pytest.raises(yaml.YAMLError) as info:
        parse_document("name: [\n", "broken.yaml")
    mark = getattr(info.value, "problem_mark", None)
    assert mark is not None
    assert (mark.line, mark.column) == (1, 0)


def test_deep_nesting_is_a_yaml_error_not_a_crash() -> None:
    with pytest.raises(yaml.YAMLError, match="exceeded maximum nesting depth"):
        parse_document(b"[" * 100_000 + b"]" * 100_000, "deep.yaml")


# ---- documents that arrive parsed (a resource's spec) ------------------------------------


def test_a_parsed_document_over_the_limit_is_refused() -> None:
    with pytest.raises(DocumentError) as info:
        check_parsed({"description": "x" * (MAX_DOCUMENT_BYTES + 1)}, "spec")
    assert str(info.value) == (
        "spec: too large: more than 1,048,576 bytes (the limit for a document)"
    )


def test_a_self_sharing_parsed_document_stops_the_walk_early() -> None:
    # What an unlimited YAML loader builds: 10**9 strings if walked in full.
    found = measure(
        "import yaml\nfrom voicetyped.documents import check_parsed\n"
        f"laughs = yaml.safe_load({HOSTILE['billion-laughs']!r})",
        {"walk": "check_parsed(laughs, 'spec')"},
    )["walk"]
    assert found.outcome == (
        "DocumentError: spec: too large: more than 1,048,576 bytes (the limit for a document)"
    )
    assert found.seconds < SECONDS
    assert found.grew_bytes < GROWTH_BYTES


def test_a_lone_surrogate_or_bytes_in_a_parsed_document_are_named_by_path() -> None:
    with pytest.raises(DocumentError) as info:
        check_parsed({"states": {"a": {"on_enter": [{"play_tts": {"text": "\udcff"}}]}}}, "spec")
    assert str(info.value) == (
        "spec.states.a.on_enter[0].play_tts.text: not UTF-8 text (surrogates not allowed at "
        "offset 0)"
    )
    with pytest.raises(DocumentError) as info:
        check_parsed({"payload": b"\x00\x01"}, "spec")
    assert str(info.value) == "spec.payload: binary data, not text"


def test_an_ordinary_parsed_document_passes() -> None:
    check_parsed({"name": "x", "states": {"a": {"terminal": True, "n": [1, 2.5, None]}}}, "spec")
