"""Shared building blocks of the specs: camelCase on the wire, strict, immutable."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# DNS-1123 subdomain (names of Secrets, ConfigMaps, Dialogs, Integrations).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Keys of Secret/ConfigMap data.
DATA_KEY = r"^[-._a-zA-Z0-9]+$"
# Label keys/values and node selector entries.
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# resource.Quantity as the API server parses it.
_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
QUANTITY = rf"^(\+|-)?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUMBER}))?$"

ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
Quantity = Annotated[int | Annotated[str, Field(pattern=QUANTITY, max_length=64)], Field()]


class Spec(BaseModel):
    """Base of every spec model: camelCase aliases, unknown fields refused, frozen."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry."""
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules into the generated CRD schema."""
    return {"x-kubernetes-validations": list(rules)}


class SecretKeyRef(Spec):
    """A key of a Secret in the same namespace. The operator only checks that it exists
    (reading it by name); pods get it as a mounted file or an environment variable."""

    name: ObjectName = Field(description="Name of the Secret (same namespace).")
    key: str = Field(
        min_length=1, max_length=253, pattern=DATA_KEY, description="Key within the Secret."
    )


class ResourceRequirements(Spec):
    """Compute resources of the service's container (as in a Pod spec)."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict, description="Minimum resources, e.g. {cpu: 500m, memory: 512Mi}."
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict, description="Maximum resources, e.g. {memory: 1Gi}."
    )


class Toleration(Spec):
    """A Pod toleration (see the Pod spec)."""

    key: str | None = Field(None, max_length=316, description="Taint key; empty with Exists: all.")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Exists or Equal.")
    value: str | None = Field(None, max_length=63, description="Taint value (Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate; empty: all effects."
    )
    toleration_seconds: int | None = Field(
        None, ge=0, description="NoExecute only: how long the pod stays bound after the taint."
    )


NodeSelector = Annotated[
    dict[Annotated[str, Field(max_length=316)], Annotated[str, Field(max_length=63)]],
    Field(max_length=32),
]
