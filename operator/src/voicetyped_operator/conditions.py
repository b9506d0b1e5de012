"""kstatus conditions: Ready (normal-true), Reconciling and Stalled (abnormal-true).

Every write sets all three, each with the generation it describes; ``lastTransitionTime``
only moves when a condition's status flips, so ``kubectl wait --for=condition=Ready`` and
kstatus-aware tools (Argo CD, Flux, kpt) read them reliably.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from voicetyped_operator.models.status import Condition, ConditionStatus, now

MAX_MESSAGE = 32768
"""The CRDs' maxLength of a condition message (characters): Events carry a cut of it."""


@dataclass(frozen=True)
class State:
    """One condition's wanted state."""

    status: ConditionStatus
    reason: str
    message: str = ""


def ready(message: str) -> tuple[State, State, State]:
    return (
        State("True", "Ready", message),
        State("False", "Reconciled", ""),
        State("False", "NotStalled", ""),
    )


def progressing(reason: str, message: str) -> tuple[State, State, State]:
    return (
        State("False", reason, message),
        State("True", reason, message),
        State("False", "NotStalled", ""),
    )


def stalled(reason: str, message: str) -> tuple[State, State, State]:
    return (
        State("False", reason, message),
        State("False", reason, ""),
        State("True", reason, message),
    )


def merge(
    previous: Sequence[Condition],
    generation: int,
    wanted: tuple[State, State, State],
) -> list[Condition]:
    """The three conditions, keeping transition times of those whose status did not change."""
    kinds = ("Ready", "Reconciling", "Stalled")
    return [condition(previous, generation, k, s) for k, s in zip(kinds, wanted, strict=True)]


def condition(previous: Sequence[Condition], generation: int, kind: str, state: State) -> Condition:
    """One condition of type ``kind``, keeping its transition time unless its status flips
    (also for conditions beside the three, e.g. a Dialog's ``IntegrationsResolved``)."""
    old = find(previous, kind)
    moved = old is None or old.status != state.status or not old.last_transition_time
    return Condition(
        type=kind,
        status=state.status,
        reason=state.reason,
        message=cut(state.message),
        observed_generation=generation,
        last_transition_time=now() if moved or old is None else old.last_transition_time,
    )


def cut(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` within the schema's limit, saying how much was left out."""
    if len(message) <= limit:
        return message
    head = message[: limit - 64]  # room for the note
    return f"{head} … ({len(message) - len(head)} more characters not shown)"


def find(conditions: Sequence[Condition], kind: str) -> Condition | None:
    return next((c for c in conditions if c.type == kind), None)


def same(a: Sequence[Condition], b: Sequence[Condition]) -> bool:
    """Equal apart from transition times (nothing worth a status write)."""

    def key(items: Sequence[Condition]) -> list[tuple[str, str, str, str, int]]:
        return sorted((c.type, c.status, c.reason, c.message, c.observed_generation) for c in items)

    return key(a) == key(b)
