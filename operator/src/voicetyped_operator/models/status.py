"""Status of the custom resources, the kstatus way.

``observedGeneration`` at the top and in every condition; ``Ready`` (normal-true) plus the
abnormal-true ``Reconciling`` and ``Stalled``; CamelCase reasons; ``lastTransitionTime``
moves only when a condition's status changes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import Field
from voicetyped_specs.resources.base import Spec

MAX_CONDITIONS = 32
"""Ready, Reconciling, Stalled, one per media trunk (at most 16) and room to spare."""
ConditionType = Literal["Ready", "Reconciling", "Stalled"]
ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Spec):
    """One kstatus condition."""

    type: str = Field(
        max_length=316,
        description="Ready, Reconciling, Stalled; a VoiceDeployment also has "
        "TrunkRegistered-<trunk> per media trunk.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        "", max_length=128, pattern=r"^([A-Za-z]([A-Za-z0-9]*[A-Za-z0-9])?)?$",
        description="CamelCase reason.",
    )  # fmt: skip
    message: str = Field("", max_length=32768, description="Human-readable detail.")
    observed_generation: int = Field(0, ge=0, description="Generation this condition is for.")
    last_transition_time: str = Field(
        "", max_length=64, description="When the status last changed (RFC 3339)."
    )


class ComponentStatus(Spec):
    """Replicas of one service's Deployment."""

    desired: int = Field(0, ge=0, description="Replicas wanted (the HPA's choice when scaling).")
    ready: int = Field(0, ge=0, description="Replicas ready.")
    updated: int = Field(0, ge=0, description="Replicas of the current pod template.")
    available: bool = Field(False, description="Rolled out and all desired replicas available.")


class DocumentRef(Spec):
    """A Dialog or Integration served by a VoiceDeployment, with the version in use."""

    name: str = Field(max_length=253)
    content_hash: str = Field("", max_length=64)


class StatusBase(Spec):
    observed_generation: int = Field(0, ge=0, description="Generation last reconciled.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Ready, Reconciling, Stalled (and TrunkRegistered-<trunk> per media trunk).",
    )


class VoiceDeploymentStatus(StatusBase):
    components: dict[str, ComponentStatus] = Field(
        default_factory=dict,
        max_length=8,
        description="media, speech, runtime, integration, redis.",
    )
    summary: str = Field("", max_length=64, description="Ready components, e.g. 4/4.")
    dialogs: list[DocumentRef] = Field(default_factory=list, max_length=64)
    integrations: list[DocumentRef] = Field(default_factory=list, max_length=64)


class DialogStatus(StatusBase):
    states: int = Field(0, ge=0, description="States of the served version.")
    initial: str = Field("", max_length=253, description="Initial state of the served version.")
    content_hash: str = Field("", max_length=64, description="Hash of the served version.")
    config_map: str = Field("", max_length=253, description="ConfigMap holding the served version.")
    used_by: list[str] = Field(
        default_factory=list, max_length=1024, description="VoiceDeployments serving it."
    )


class IntegrationStatus(StatusBase):
    operations: int = Field(0, ge=0, description="Operations of the served version.")
    content_hash: str = Field("", max_length=64, description="Hash of the served version.")
    config_map: str = Field("", max_length=253, description="ConfigMap holding the served version.")
    secrets: list[str] = Field(
        default_factory=list, max_length=64, description="Secrets it mounts into the gateway."
    )
    used_by: list[str] = Field(
        default_factory=list, max_length=1024, description="VoiceDeployments serving it."
    )


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
