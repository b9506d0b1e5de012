"""Dialog and Integration resources -> validated documents -> ConfigMaps.

Validation is the services' own, from voicetyped-specs: ``load_dialog`` (what the runtime
loads dialogs with) and ``IntegrationSpec.to_document`` (the integration gateway's document).
A document that fails it never reaches a ConfigMap, so the version the services run stays
in place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap
from pydantic import ValidationError
from voicetyped.documents import DocumentError, check_parsed
from voicetyped_specs.dialog.compiled import CompiledDialog, DialogError, load_dialog
from voicetyped_specs.integration import IntegrationSpec
from voicetyped_specs.resources.base import SecretKeyRef

from voicetyped_operator import naming

SECRETS_ROOT = "/var/run/secrets/voicetyped/integrations"
MAX_MESSAGE = 4000


class InvalidDocumentError(ValueError):
    """The document fails the service's validator; ``issues`` name field paths."""

    def __init__(self, kind: str, name: str, issues: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.issues = issues
        super().__init__(f"{kind} {name} is invalid: " + "; ".join(issues))

    def message(self) -> str:
        text = "; ".join(self.issues)
        if len(text) > MAX_MESSAGE:
            text = text[: MAX_MESSAGE - 20] + f"... ({len(self.issues)} problems)"
        return text


def check_spec(kind: str, name: str, spec: Mapping[str, Any]) -> None:
    """The services' document limits (size, UTF-8) on a resource's spec, before validation."""
    try:
        check_parsed(dict(spec), "spec")
    except DocumentError as exc:
        raise InvalidDocumentError(kind, name, [str(exc)]) from None


# ---- Dialog -------------------------------------------------------------------------------


def dialog_document(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The plain dialog document of a Dialog resource (metadata.name names it)."""
    document = dict(spec)
    document.setdefault("name", name)
    return document


def compile_dialog(name: str, spec: Mapping[str, Any]) -> CompiledDialog:
    """Validate with the runtime's validator; raises :class:`InvalidDocumentError`."""
    check_spec("Dialog", name, spec)
    if spec.get("name") not in (None, name):
        raise InvalidDocumentError(
            "Dialog", name, [f"spec.name: must equal metadata.name {name!r}"]
        )
    try:
        return load_dialog(dialog_document(name, spec))
    except DialogError as exc:
        raise InvalidDocumentError(
            "Dialog",
            name,
            [f"spec.{i.path}: {i.message}" if i.path else i.message for i in exc.issues],
        ) from None


def dialog_config_map(name: str, namespace: str, uid: str, compiled: CompiledDialog) -> ConfigMap:
    text = yaml.safe_dump(compiled.document, sort_keys=False, allow_unicode=True, width=100)
    return ConfigMap(
        metadata=ObjectMeta(
            name=naming.dialog_config_map(name),
            namespace=namespace,
            labels=naming.document_labels("Dialog", name),
            annotations={naming.CONTENT_HASH: compiled.content_hash},
            ownerReferences=[naming.owner_reference("Dialog", name, uid)],
        ),
        data={f"{name}.yaml": text},
    )


# ---- Integration -------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretMount:
    """One Secret mounted (some of its keys) into the integration gateway."""

    secret: str
    keys: tuple[str, ...]
    path: str  # directory

    def file(self, key: str) -> str:
        return f"{self.path}/{key}"

    def to_json(self) -> dict[str, Any]:
        return {"secret": self.secret, "keys": list(self.keys), "path": self.path}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SecretMount:
        return cls(
            secret=str(data["secret"]),
            keys=tuple(str(k) for k in data["keys"]),
            path=str(data["path"]),
        )


@dataclass(frozen=True)
class RenderedIntegration:
    name: str  # the document's name (call_hook.service)
    document: dict[str, Any]
    content_hash: str
    mounts: tuple[SecretMount, ...]
    refs: tuple[tuple[str, SecretKeyRef], ...]


def parse_integration(name: str, spec: Mapping[str, Any]) -> IntegrationSpec:
    check_spec("Integration", name, spec)
    try:
        return IntegrationSpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise InvalidDocumentError("Integration", name, pydantic_issues(exc, "spec")) from None


def integration_mounts(name: str, spec: IntegrationSpec) -> tuple[SecretMount, ...]:
    keys: dict[str, list[str]] = {}
    for _, ref in spec.secret_refs():
        keys.setdefault(ref.name, [])
        if ref.key not in keys[ref.name]:
            keys[ref.name].append(ref.key)
    return tuple(
        SecretMount(secret=s, keys=tuple(sorted(k)), path=f"{SECRETS_ROOT}/{name}/{s}")
        for s, k in sorted(keys.items())
    )


def render_integration(name: str, spec: Mapping[str, Any]) -> RenderedIntegration:
    """Secret references -> mounted file paths, validated by the gateway's own model."""
    parsed = parse_integration(name, spec)
    if parsed.name not in (None, name):
        raise InvalidDocumentError("Integration", name, [f"spec.name: must equal {name!r}"])
    mounts = {m.secret: m for m in integration_mounts(name, parsed)}
    try:
        validated = parsed.to_document(name, lambda ref: mounts[ref.name].file(ref.key))
    except ValidationError as exc:
        raise InvalidDocumentError("Integration", name, pydantic_issues(exc, "spec")) from None
    document = validated.model_dump(
        mode="json", by_alias=True, exclude_unset=True, exclude_none=True
    )
    canonical = validated.model_dump(mode="json", by_alias=True)
    return RenderedIntegration(
        name=name,
        document=document,
        content_hash=naming.digest(canonical),
        mounts=tuple(mounts.values()),
        refs=tuple(parsed.secret_refs()),
    )


def integration_config_map(
    name: str, namespace: str, uid: str, rendered: RenderedIntegration
) -> ConfigMap:
    text = yaml.safe_dump(rendered.document, sort_keys=False, allow_unicode=True, width=100)
    mounts = json.dumps([m.to_json() for m in rendered.mounts], separators=(",", ":"))
    return ConfigMap(
        metadata=ObjectMeta(
            name=naming.integration_config_map(name),
            namespace=namespace,
            labels=naming.document_labels("Integration", name),
            annotations={naming.CONTENT_HASH: rendered.content_hash, naming.SECRET_MOUNTS: mounts},
            ownerReferences=[naming.owner_reference("Integration", name, uid)],
        ),
        data={f"{name}.yaml": text},
    )


_INNER_PATH = re.compile(r"^([A-Za-z][\w\-]*(?:\[\d+\])*(?:\.[\w\-]+(?:\[\d+\])*)*): ")
"""A model validator's message that starts with the path of the field it is about."""


def pydantic_issues(exc: ValidationError, prefix: str) -> list[str]:
    """``spec.auth.secretRef.name: String should match pattern ...`` lines."""
    issues = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        inner = _INNER_PATH.match(msg) if err["type"] == "value_error" else None
        if inner is not None:  # "tokenSecretRef: required..." from a model's own check
            loc = f"{loc}.{inner.group(1)}"
            msg = msg[inner.end() :]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field missing"
        issues.append(f"{prefix}{loc}: {msg}")
    return issues
