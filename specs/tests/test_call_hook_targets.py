"""call_hook targets checked against Integration documents, and Integration files validated
offline (what `voicetyped dialog validate --integration`, `voicetyped up` and the operator use)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from voicetyped_specs.dialog import model as m
from voicetyped_specs.dialog.compiled import load_dialog, load_dialog_file, parse_yaml
from voicetyped_specs.dialog.hooks import call_hooks, check_call_hooks
from voicetyped_specs.integration_files import IntegrationFileError, load_catalog

REPO = Path(__file__).resolve().parents[2]

DIALOG = """
name: t
initial: a
states:
  a:
    on_enter:
      - call_hook: {service: shopp, method: get_order}
      - call_hook: {service: shop, method: get_ordr}
      - call_hook: {service: shop, method: get_order}
    transitions:
      - event: backend_result
        actions:
          - call_hook: {service: crm, method: anything}
        target: b
  b: {terminal: true}
global_transitions:
  - event: dtmf
    actions: [{call_hook: {service: shop, method: request_callback}}]
"""


def spec() -> m.Dialog:
    return load_dialog(parse_yaml(textwrap.dedent(DIALOG))).spec


def test_every_call_hook_is_found_with_its_path() -> None:
    assert [(h.path, h.service, h.method) for h in call_hooks(spec())] == [
        ("states.a.on_enter[0].call_hook", "shopp", "get_order"),
        ("states.a.on_enter[1].call_hook", "shop", "get_ordr"),
        ("states.a.on_enter[2].call_hook", "shop", "get_order"),
        ("states.a.transitions[0].actions[0].call_hook", "crm", "anything"),
        ("global_transitions[0].actions[0].call_hook", "shop", "request_callback"),
    ]


def test_dangling_targets_are_named_with_the_closest_names() -> None:
    catalog = load_catalog([REPO / "examples" / "integrations"])
    assert catalog == {
        "shop": frozenset({"get_order", "request_callback"}),
        "clinic": frozenset({"next_appointment", "confirm", "cancel", "reschedule"}),
    }
    assert [str(i) for i in check_call_hooks(spec(), catalog)] == [
        "states.a.on_enter[0].call_hook.service: no Integration 'shopp' "
        "(did you mean 'shop'?) (loaded: clinic, shop)",
        "states.a.on_enter[1].call_hook.method: Integration 'shop' has no operation "
        "'get_ordr' (did you mean 'get_order'?) (its operations: get_order, request_callback)",
        "states.a.transitions[0].actions[0].call_hook.service: no Integration 'crm' "
        "(loaded: clinic, shop)",
    ]
    assert check_call_hooks(spec(), {**catalog, "shopp": frozenset({"get_order"}),
                                     "crm": frozenset({"anything"})})[0].path.endswith(
        "on_enter[1].call_hook.method"
    )  # fmt: skip


def test_an_example_dialog_resolves_against_the_example_integrations() -> None:
    catalog = load_catalog([REPO / "examples" / "integrations"])
    for path in sorted((REPO / "examples" / "dialogs").glob("*.yaml")):
        assert check_call_hooks(load_dialog_file(path).spec, catalog) == [], path
    assert check_call_hooks(load_dialog_file(REPO / "examples/dialogs/order-status.yaml").spec, {})


def test_integration_files_are_validated_with_field_paths(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        textwrap.dedent(
            """
            name: shop
            baseURL: ftp://x
            operations:
              get_order: {path: /o, extrct: {a: b}, method: FETCH}
            """
        )
    )
    (tmp_path / "resource.yaml").write_text(
        textwrap.dedent(
            """
            apiVersion: voicetyped.io/v1alpha1
            kind: Integration
            metadata: {name: crm}
            spec:
              baseURL: http://crm
              auth: {type: apiKey, header: X-Key}
              operations: {lookup: {path: /l}}
            """
        )
    )
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(IntegrationFileError) as caught:
        load_catalog([tmp_path])
    assert [str(i) for i in caught.value.issues] == [
        f"{tmp_path}/bad.yaml: baseURL: String should match pattern '^https?://[^\\s/]+.*$'",
        f"{tmp_path}/bad.yaml: operations.get_order.method: "
        "Input should be 'GET', 'POST', 'PUT', 'PATCH' or 'DELETE'",
        f"{tmp_path}/bad.yaml: operations.get_order.extrct: unknown field",
        f"{tmp_path}/broken.yaml: YAML error at line 2, column 1: did not find expected ',' or ']'",
        f"{tmp_path}/resource.yaml: spec.auth: apiKey auth needs secretRef",
    ]


def test_a_resource_is_named_by_its_metadata_and_names_are_unique(tmp_path: Path) -> None:
    resource = """
        apiVersion: voicetyped.io/v1alpha1
        kind: Integration
        metadata: {name: crm}
        spec:
          baseURL: http://crm
          operations: {lookup: {path: /l}}
        """
    (tmp_path / "a.yaml").write_text(textwrap.dedent(resource))
    assert load_catalog([tmp_path]) == {"crm": frozenset({"lookup"})}
    (tmp_path / "b.yaml").write_text(textwrap.dedent(resource))
    with pytest.raises(IntegrationFileError, match=r"b\.yaml: name: 'crm' is also defined in"):
        load_catalog([tmp_path])
    with pytest.raises(IntegrationFileError, match=r"nowhere\.yaml: unreadable"):
        load_catalog([tmp_path / "nowhere.yaml"])
