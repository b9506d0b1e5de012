"""Dialogs and Integrations are validated by the services' own code and rendered."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from voicetyped.documents import unwrap
from voicetyped_operator import naming
from voicetyped_operator.documents import (
    SECRETS_ROOT,
    InvalidDocumentError,
    compile_dialog,
    dialog_config_map,
    integration_config_map,
    render_integration,
)
from voicetyped_specs.dialog.compiled import load_dialog
from voicetyped_specs.integration import Integration
from voicetyped_testkit.footprint import measure
from voicetyped_testkit.hostile import GROWTH_BYTES, HOSTILE, SECONDS

REPO = Path(__file__).resolve().parents[2]
Example = Callable[[str], dict[str, Any]]


def test_example_dialog_is_the_dialogs_example(example: Example) -> None:
    dialogs_example = REPO / "examples" / "dialogs" / "order-status.yaml"
    # One copy: the example directory's dialog is the dialogs' example file itself.
    assert (REPO / "examples" / "order-status" / "dialog.yaml").resolve() == dialogs_example
    plain = unwrap(yaml.safe_load(dialogs_example.read_text()), "Dialog")
    resource = example("dialog")
    assert {"name": resource["metadata"]["name"], **resource["spec"]} == plain


def test_example_integration_matches_the_integrations_example(example: Example) -> None:
    plain = yaml.safe_load((REPO / "examples" / "integrations" / "shop.yaml").read_text())
    spec = example("integration")["spec"]
    # Same document apart from where the backend is and how the key arrives.
    for key in ("timeoutMs", "retry", "rateLimit", "circuitBreaker", "redact", "operations"):
        assert spec[key] == plain[key], key
    assert spec["auth"]["header"] == plain["auth"]["header"]


def test_dialog_is_compiled_by_the_runtime_validator(example: Example) -> None:
    resource = example("dialog")
    compiled = compile_dialog("order-status", resource["spec"])
    same = load_dialog({"name": "order-status", **resource["spec"]})
    assert compiled.content_hash == same.content_hash
    config_map = dialog_config_map("order-status", "ns", "uid-1", compiled)
    meta = config_map.metadata
    assert meta is not None and meta.name == "voicetyped-dialog-order-status"
    assert meta.annotations == {naming.CONTENT_HASH: compiled.content_hash}
    assert meta.ownerReferences is not None and meta.ownerReferences[0].kind == "Dialog"
    assert config_map.data is not None
    rendered = yaml.safe_load(config_map.data["order-status.yaml"])
    # What the runtime reads back is the same dialog.
    assert load_dialog(rendered).content_hash == compiled.content_hash


def test_dialog_issues_name_the_spec_path(example: Example) -> None:
    spec = copy.deepcopy(example("dialog")["spec"])
    spec["states"]["greet"]["transitions"][0]["condition"] = "vars.nope > 1"
    spec["initial"] = "nowhere"
    with pytest.raises(InvalidDocumentError) as caught:
        compile_dialog("order-status", spec)
    text = caught.value.message()
    assert "spec.states.greet.transitions[0].condition" in text
    assert "vars.nope" in text and "spec.initial" in text
    with pytest.raises(InvalidDocumentError, match=r"spec\.name: must equal"):
        compile_dialog("order-status", {**spec, "name": "other"})


def test_integration_secret_refs_become_mounted_files(example: Example) -> None:
    rendered = render_integration("shop", example("integration")["spec"])
    path = f"{SECRETS_ROOT}/shop/shop-api-key/api-key"
    assert rendered.document["auth"] == {
        "type": "apiKey",
        "prefix": "",
        "valueFile": path,
        "header": "X-API-Key",
    }
    assert [m.to_json() for m in rendered.mounts] == [
        {"secret": "shop-api-key", "keys": ["api-key"], "path": f"{SECRETS_ROOT}/shop/shop-api-key"}
    ]
    # The gateway's own model accepts the rendered document.
    assert Integration.model_validate(rendered.document).auth.value_file == path
    config_map = integration_config_map("shop", "ns", "uid", rendered)
    assert config_map.metadata is not None and config_map.metadata.annotations is not None
    assert naming.SECRET_MOUNTS in config_map.metadata.annotations


def test_integration_mtls_and_ca() -> None:
    rendered = render_integration(
        "bank",
        {
            "baseURL": "https://bank/api",
            "auth": {"type": "mtls", "tlsSecretName": "bank-client"},
            "tls": {"caSecretRef": {"name": "bank-ca", "key": "ca.crt"}},
            "operations": {"balance": {"path": "/balance"}},
        },
    )
    assert rendered.document["auth"] == {
        "type": "mtls",
        "certFile": f"{SECRETS_ROOT}/bank/bank-client/tls.crt",
        "keyFile": f"{SECRETS_ROOT}/bank/bank-client/tls.key",
    }
    assert rendered.document["tls"] == {"caFile": f"{SECRETS_ROOT}/bank/bank-ca/ca.crt"}
    assert {m.secret: m.keys for m in rendered.mounts} == {
        "bank-ca": ("ca.crt",),
        "bank-client": ("tls.crt", "tls.key"),
    }


def test_invalid_integration_names_fields() -> None:
    with pytest.raises(InvalidDocumentError) as caught:
        render_integration("shop", {"baseURL": "https://x/api", "operations": {}, "retry": 5})
    text = caught.value.message()
    assert "spec.operations" in text and "spec.retry" in text


# ---- hostile specs --------------------------------------------------------------------

HOSTILE_SPECS = {
    # What an unlimited YAML loader makes of a billion-laughs file: lists sharing lists.
    "billion-laughs": "{'initial': 'a', 'states': {'a': {'terminal': True}}, "
    f"'vars': yaml.safe_load({HOSTILE['billion-laughs']!r})}}",
    "five-megabytes": "{'initial': 'a', 'description': 'x' * 5_000_000, "
    "'states': {'a': {'terminal': True}}}",
    # JSON's "\udce9" escape: a string that is no text (how Python keeps a stray byte 0xe9).
    "not-utf8": "{'initial': 'a', 'description': 'caf\\udce9', "
    "'states': {'a': {'terminal': True}}}",
    "binary": "{'initial': 'a', 'description': bytes(range(256)), "
    "'states': {'a': {'terminal': True}}}",
}
STALLED_WITH = {
    "billion-laughs": "spec: too large: more than 1,048,576 bytes (the limit for a document)",
    "five-megabytes": "spec: too large: more than 1,048,576 bytes (the limit for a document)",
    "not-utf8": "spec.description: not UTF-8 text (surrogates not allowed at offset 3)",
    "binary": "spec.description: binary data, not text",
}


def test_hostile_dialog_and_integration_specs_are_refused_with_one_line() -> None:
    calls = {}
    for kind, spec in HOSTILE_SPECS.items():
        calls[f"Dialog {kind}"] = f"_refused(compile_dialog, {spec})"
        calls[f"Integration {kind}"] = f"_refused(render_integration, {spec})"
    found = measure(
        """
        import yaml
        from voicetyped_operator.documents import (
            InvalidDocumentError, compile_dialog, render_integration,
        )

        def _refused(check, spec):
            try:
                check("x", spec)
            except InvalidDocumentError as exc:
                return exc.message()  # the Ready condition's message
            return "accepted"
        """,
        calls,
    )
    for label, footprint in found.items():
        kind = label.split()[1]
        assert footprint.outcome == repr(STALLED_WITH[kind]), label
        assert footprint.seconds < SECONDS, (label, footprint)
        assert footprint.grew_bytes < GROWTH_BYTES, (label, footprint)
