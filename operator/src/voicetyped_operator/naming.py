"""Names, labels and owner references of everything the operator creates."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from lightkube.models.meta_v1 import OwnerReference

GROUP = "voicetyped.io"
API_VERSION = f"{GROUP}/v1alpha1"
MANAGED_BY = "voicetyped-operator"
PART_OF = "voicetyped"

# Labels (app.kubernetes.io recommended labels plus our own for look-ups).
NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
PART_OF_LABEL = "app.kubernetes.io/part-of"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
VERSION = "app.kubernetes.io/version"
VD_LABEL = f"{GROUP}/voicedeployment"
DIALOG_LABEL = f"{GROUP}/dialog"
INTEGRATION_LABEL = f"{GROUP}/integration"

# Annotations.
CONTENT_HASH = f"{GROUP}/content-hash"
DIALOGS_HASH = f"{GROUP}/dialogs-hash"
INTEGRATIONS_HASH = f"{GROUP}/integrations-hash"
CONFIG_HASH = f"{GROUP}/config-hash"
TLS_HASH = f"{GROUP}/sip-tls-hash"
SECRET_MOUNTS = f"{GROUP}/secret-mounts"
DEPENDENCY_TRIGGER = f"{GROUP}/dependency-changed"
DRIFT_TRIGGER = f"{GROUP}/drift-detected"

MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"


def child_name(vd: str, component: str) -> str:
    return f"{vd}-{component}"


def dialog_config_map(dialog: str) -> str:
    return f"voicetyped-dialog-{dialog}"


def integration_config_map(integration: str) -> str:
    return f"voicetyped-integration-{integration}"


def selector_labels(vd: str, component: str) -> dict[str, str]:
    """The Deployment selector (immutable): never add to it."""
    return {NAME: f"voicetyped-{component}", INSTANCE: vd, COMPONENT: component}


def labels(vd: str, component: str, version: str | None = None) -> dict[str, str]:
    out = {
        **selector_labels(vd, component),
        PART_OF_LABEL: PART_OF,
        MANAGED_BY_LABEL: MANAGED_BY,
        VD_LABEL: vd,
    }
    if version:
        out[VERSION] = _label_value(version)
    return out


def document_labels(kind: str, name: str) -> dict[str, str]:
    key = DIALOG_LABEL if kind == "Dialog" else INTEGRATION_LABEL
    return {
        NAME: f"voicetyped-{kind.lower()}",
        INSTANCE: name,
        COMPONENT: kind.lower(),
        PART_OF_LABEL: PART_OF,
        MANAGED_BY_LABEL: MANAGED_BY,
        key: name,
    }


def owner_reference(kind: str, name: str, uid: str) -> OwnerReference:
    return OwnerReference(
        apiVersion=API_VERSION,
        kind=kind,
        name=name,
        uid=uid,
        controller=True,
        blockOwnerDeletion=True,
    )


def digest(value: Any) -> str:
    """A short stable hash of JSON-able data (annotations that roll pods on change)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def owner_of(meta: Mapping[str, Any], kind: str) -> str | None:
    """Name of the controlling owner of ``kind`` in an object's metadata."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("apiVersion", "").startswith(f"{GROUP}/"):
            return str(ref.get("name"))
    return None


def _label_value(value: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in value)[:63]
    return cleaned.strip("-_.")
