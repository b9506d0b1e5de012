"""crds/ is generated from the models, structural, and documented for kubectl explain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from voicetyped_operator import argocd, crds
from voicetyped_operator.schema import walk

REPO = Path(__file__).resolve().parents[2]
OUTS = [REPO / "crds", REPO / "charts" / "voicetyped-operator" / "crds"]
COMMAND = (
    "python -m voicetyped_operator.crds --out crds --out charts/voicetyped-operator/crds "
    "(make crds)"
)


@pytest.mark.parametrize("out", OUTS, ids=lambda p: str(p.relative_to(REPO)))
def test_generated_crds_are_fresh(out: Path) -> None:
    stale = crds.stale(out)
    assert not stale, f"{out.relative_to(REPO)} is stale ({', '.join(stale)}): run {COMMAND}"


def test_argocd_snippet_is_fresh() -> None:
    root = REPO / "charts" / "voicetyped-operator" / "argocd"
    assert (root / argocd.SNIPPET).read_text() == argocd.snippet(root), (
        "argocd-cm-patch.yaml is stale: run python -m voicetyped_operator.argocd "
        "--root charts/voicetyped-operator/argocd (make crds)"
    )


def _schemas() -> list[tuple[str, dict[str, Any]]]:
    return [
        (kind.kind, crds.definition(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        for kind in crds.kinds()
    ]


@pytest.mark.parametrize(
    ("kind", "schema"), _schemas(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_schemas_are_structural(kind: str, schema: dict[str, Any]) -> None:
    forbidden = {"$ref", "$defs", "oneOf", "allOf", "not", "uniqueItems", "propertyNames",
                 "patternProperties", "const", "title", "discriminator"}  # fmt: skip
    for path, node in walk(schema):
        assert not forbidden & set(node), (kind, path, forbidden & set(node))
        free = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
            "x-kubernetes-int-or-string"
        )
        assert "type" in node or free, (kind, path, node)
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), (kind, path)
            assert all(set(o) == {"type"} for o in node["anyOf"]), (kind, path)
        if node.get("additionalProperties") is False:
            raise AssertionError((kind, path, "additionalProperties: false"))
        inside = path.startswith((".spec", ".status"))
        if inside and node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node, (kind, path)
        if inside and node.get("type") == "array":
            assert "maxItems" in node, (kind, path)


def test_free_form_only_where_the_document_is_free_form() -> None:
    free = {
        (kind, path)
        for kind, schema in _schemas()
        for path, node in walk(schema)
        if node.get("x-kubernetes-preserve-unknown-fields")
    }
    allowed_leaves = {
        ".affinity",
        ".payload.*",
        ".vars.*",
        ".body",
        ".extractDefaults.*",
        ".metadata",
    }
    for kind, path in free:
        assert any(path.endswith(leaf) for leaf in allowed_leaves), (kind, path)


def test_spec_fields_are_described_for_kubectl_explain() -> None:
    for kind, schema in _schemas():
        spec = schema["properties"]["spec"]
        assert spec.get("description"), kind
        for name, prop in spec["properties"].items():
            assert prop.get("description"), f"{kind}.spec.{name} has no description"


def test_dialog_spec_is_the_runtime_model() -> None:
    spec = dict(_schemas())["Dialog"]["properties"]["spec"]
    assert "name" not in spec["required"]
    state = spec["properties"]["states"]["additionalProperties"]
    assert set(state["properties"]) == {
        "on_enter", "transitions", "terminal", "no_input_timeout_ms", "endpointing"
    }  # fmt: skip
    action = state["properties"]["on_enter"]["items"]
    assert action["minProperties"] == action["maxProperties"] == 1
    assert set(action["properties"]) == {
        "play_tts", "transfer", "hangup", "call_hook", "set", "collect_digits", "start_timer",
        "cancel_timer", "llm",
    }  # fmt: skip
    assert action["properties"]["hangup"]["nullable"] is True  # `- hangup:` alone


def test_printer_columns() -> None:
    for kind in crds.kinds():
        version = crds.definition(kind)["spec"]["versions"][0]
        columns = version["additionalPrinterColumns"]
        assert columns[0]["name"] == "Ready"
        assert [c["name"] for c in columns if "priority" not in c][-1] == "Age"
        assert any(c.get("priority") == 1 for c in columns)
        assert version["subresources"] == {"status": {}}


def test_written_files_match_definitions() -> None:
    for kind in crds.kinds():
        text = (REPO / "crds" / kind.file_name).read_text()
        assert yaml.safe_load(text) == crds.definition(kind)
