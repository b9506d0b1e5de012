"""One Integration definition, two forms: the gateway's document (files) and the custom
resource's spec (Secret references) share every field, rule and bound but the credentials."""

from __future__ import annotations

from typing import Any

import cel_expr_python.cel as cel
import pytest
from pydantic import BaseModel, ValidationError
from voicetyped_specs.integration import (
    CREDENTIALS,
    FileAuth,
    Integration,
    IntegrationBase,
    IntegrationSpec,
    SecretAuth,
)
from voicetyped_specs.resources.base import SecretKeyRef

BASE = {"baseURL": "https://shop.example/api", "operations": {"get": {"path": "/x/{id}"}}}
REF = {"name": "s", "key": "k"}


def test_every_shared_field_has_one_definition() -> None:
    shared = set(IntegrationBase.model_fields) - {"name", "auth"}
    for form in (Integration, IntegrationSpec):
        for name in shared:
            # FieldInfo is copied into each subclass: the same declaration prints the same.
            assert repr(form.model_fields[name]) == repr(IntegrationBase.model_fields[name])
    assert set(Integration.model_fields) == set(IntegrationSpec.model_fields)


def test_every_credential_has_a_file_and_a_reference() -> None:
    for credential in CREDENTIALS:
        assert credential.file_field in _aliases(FileAuth)
        assert credential.ref_field in _aliases(SecretAuth)


def _aliases(model: type[BaseModel]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


RESOURCES: dict[str, dict[str, Any]] = {
    "none": {},
    "apiKey": {"type": "apiKey", "query": "k", "prefix": "Key ", "secretRef": REF},
    "oauth2": {
        "type": "oauth2",
        "tokenURL": "https://idp.example/token",
        "clientIdSecretRef": {"name": "oauth", "key": "id"},
        "clientSecretSecretRef": {"name": "oauth", "key": "secret"},
        "scopes": ["orders.read"],
        "audience": "shop",
    },
    "mtls": {"type": "mtls", "tlsSecretName": "client-tls"},
}


@pytest.mark.parametrize("scheme", sorted(RESOURCES))
def test_a_resource_becomes_the_gateways_document(scheme: str) -> None:
    spec = IntegrationSpec.model_validate(
        {**BASE, "auth": RESOURCES[scheme], "tls": {"caSecretRef": {"name": "ca", "key": "c"}}}
    )

    def file_of(ref: SecretKeyRef) -> str:
        return f"/mnt/{ref.name}/{ref.key}"

    document = spec.to_document("shop", file_of)
    assert document.name == "shop" and document.tls.ca_file == "/mnt/ca/c"
    assert document.auth.type == spec.auth.type
    for credential in CREDENTIALS:
        ref = spec.auth.ref(credential)
        expected = file_of(ref) if ref is not None else None
        assert document.auth.model_dump(by_alias=True)[credential.file_field] == expected
    shared = set(IntegrationBase.model_fields) - {"name", "auth"}
    assert document.model_dump(include=shared) == spec.model_dump(include=shared)
    # The same document read back from its YAML/JSON form.
    assert Integration.model_validate(document.model_dump(mode="json", by_alias=True)) == document


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"type": "apiKey", "header": "X"}, "apiKey auth needs valueFile"),
        ({"type": "apiKey", "valueFile": "/k"}, "exactly one of header or query"),
        ({"type": "oauth2", "clientIdFile": "/i"}, "oauth2 auth needs tokenURL and clientSecret"),
        ({"type": "mtls", "certFile": "/c"}, "mtls auth needs keyFile"),
        ({"type": "none", "header": "X"}, "auth.header belongs to apiKey auth, not none"),
        ({"type": "mtls", "certFile": "/c", "keyFile": "/k", "valueFile": "/v"}, "valueFile"),
        ({"type": "apiKey", "header": "X", "valueFile": "/k", "secretRef": REF}, "secretRef"),
    ],
)
def test_the_document_names_what_is_wrong(auth: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Integration.model_validate({**BASE, "name": "shop", "auth": auth})


def test_the_document_refuses_credentials_outside_auth_like_the_resource() -> None:
    for form, extra in ((Integration, {"name": "shop"}), (IntegrationSpec, {})):
        ops = {"get": {"path": "/x", "headers": {"Authorization": "Bearer x"}}}
        with pytest.raises(ValidationError, match=r"operations\.get\.headers\.Authorization"):
            form.model_validate({**BASE, **extra, "operations": ops})
        with pytest.raises(ValidationError, match="timeoutMs"):
            form.model_validate({**BASE, **extra, "timeoutMs": 600001})


def test_defaults_written_in_by_the_api_server_are_not_settings() -> None:
    # The CRD's defaults give every auth prefix, scopes and refreshBeforeSeconds.
    defaults = {"prefix": "", "scopes": [], "refreshBeforeSeconds": 30}
    for scheme, auth in RESOURCES.items():
        spec = IntegrationSpec.model_validate({**BASE, "auth": {**defaults, **auth}})
        assert spec.auth.type == (auth.get("type") or "none"), scheme


# The CRD's CEL rules for auth, evaluated here with the CEL the dialogs use: they must agree
# with the model on every case (one set of rules, two evaluators).
CASES: list[dict[str, Any]] = [
    *RESOURCES.values(),
    {"type": "apiKey", "header": "X"},
    {"type": "apiKey", "header": "X", "query": "k", "secretRef": REF},
    {"type": "apiKey", "secretRef": REF},
    {"type": "oauth2", "tokenURL": "https://idp/t", "clientIdSecretRef": REF},
    {"type": "oauth2", "clientIdSecretRef": REF, "clientSecretSecretRef": REF},
    {"type": "mtls"},
    {"type": "apiKey", "header": "X", "secretRef": REF, "value": "inline"},
    {"type": "none", "clientSecret": "inline"},
    {"type": "mtls", "tlsSecretName": "t", "keyFile": "/k"},
]


def _cel_rules() -> list[str]:
    schema = SecretAuth.model_json_schema(by_alias=True)  # what the CRD is generated from
    return [str(rule["rule"]) for rule in schema["x-kubernetes-validations"]]


@pytest.mark.parametrize("auth", CASES)
def test_the_crds_cel_rules_agree_with_the_model(auth: dict[str, Any]) -> None:
    env = cel.NewEnv(variables={"self": cel.Type.Map(cel.Type.STRING, cel.Type.DYN)})
    data = {"self": {"type": "none", **auth}}
    cel_ok = all(env.compile(rule).eval(data=data).plain_value() is True for rule in _cel_rules())
    try:
        SecretAuth.model_validate(auth)
        model_ok = True
    except ValidationError:
        model_ok = False
    assert cel_ok == model_ok, auth
