"""A Dialog's IntegrationsResolved condition: its call_hooks against the Integrations of its
namespace, re-evaluated when one of those appears, changes its operations or goes (no cluster:
the handler's reconcile with a recording API client)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from voicetyped_operator import call_hooks, events, naming
from voicetyped_operator.kube import Applied
from voicetyped_operator.reconcile import documents as docs
from voicetyped_operator.settings import OperatorSettings
from voicetyped_operator.state import OperatorState

Example = Callable[[str], dict[str, Any]]


class RecordingKube:
    """What reconcile_dialog asks of the API server, answered and recorded."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.annotated: list[tuple[str, str, str, dict[str, str]]] = []

    async def apply(self, obj: Any) -> Applied:
        return Applied("ConfigMap", obj.metadata.name, None, "1", None)

    async def patch_status(
        self, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        self.statuses.append(dict(status))

    async def annotate(
        self, kind: str, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> bool:
        self.annotated.append((kind, namespace, name, dict(annotations)))
        return True


@pytest.fixture
def posted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    seen: list[tuple[str, str, str]] = []
    monkeypatch.setattr(
        events, "post", lambda ref, kind, reason, msg: seen.append((kind, reason, msg))
    )
    return seen


async def _reconcile(
    kube: RecordingKube,
    spec: dict[str, Any],
    integrations: dict[str, frozenset[str]],
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    state = OperatorState(kube=kube, settings=OperatorSettings())  # type: ignore[arg-type]
    await docs.reconcile_dialog(
        state, name="order-status", namespace="shop", uid="u", generation=1, spec=spec,
        status=status, used_by=[], retry=0, integrations=integrations,
    )  # fmt: skip
    return kube.statuses[-1]


def _resolved(status: dict[str, Any]) -> dict[str, Any]:
    found = [c for c in status["conditions"] if c["type"] == "IntegrationsResolved"]
    assert len(found) == 1, status["conditions"]
    condition: dict[str, Any] = found[0]
    return condition


async def test_a_dangling_call_hook_is_a_false_condition_and_ready_stays(
    example: Example, posted: list[tuple[str, str, str]]
) -> None:
    spec = example("dialog")["spec"]
    kube = RecordingKube()
    status = await _reconcile(kube, spec, {"shopp": frozenset({"get_order"})})
    resolved = _resolved(status)
    assert resolved["status"] == "False" and resolved["reason"] == "DanglingCallHook"
    assert (
        "call_hook.service: no Integration 'shop' (did you mean 'shopp'?)" in (resolved["message"])
    )
    assert resolved["message"].startswith("spec.states.")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"  # still served: the Integration may come later
    assert [(k, r) for k, r, _ in posted] == [("Warning", "DanglingCallHook"), ("Normal", "Ready")]
    # The Integration appears: the same Dialog, looked at again, resolves.
    operations = frozenset({"get_order", "request_callback"})
    again = await _reconcile(kube, spec, {"shop": operations}, status)
    resolved_now = _resolved(again)
    assert (resolved_now["status"], resolved_now["reason"]) == ("True", "Resolved")
    assert resolved_now["message"] == "every call_hook resolves (Integrations: shop)"
    assert resolved_now["lastTransitionTime"]


async def test_an_operation_missing_names_the_method(example: Example, posted: Any) -> None:
    spec = example("dialog")["spec"]
    status = await _reconcile(RecordingKube(), spec, {"shop": frozenset({"get_orders"})})
    message = _resolved(status)["message"]
    assert "call_hook.method: Integration 'shop' has no operation 'get_order' " in message
    assert "(did you mean 'get_orders'?)" in message


def test_indexes_and_nudges(example: Example) -> None:
    dialog = example("dialog")
    assert call_hooks.dialog_services("order-status", dialog["spec"]) == {"shop"}
    broken = copy.deepcopy(dialog["spec"])
    broken["states"] = "not a mapping"
    assert call_hooks.dialog_services("order-status", broken) == set()
    integration = example("integration")
    name, operations = call_hooks.integration_entry("shop", integration["spec"])
    assert (name, operations) == ("shop", ("get_order", "request_callback"))
    same = call_hooks.nudge_value("shop", reversed(operations))
    assert same == call_hooks.nudge_value("shop", operations)  # re-applied: no new event
    assert same != call_hooks.nudge_value("shop", ("get_order",))
    assert call_hooks.nudge_value("shop", None) == "Integration/shop=deleted"


async def test_nudging_annotates_each_dialog_once() -> None:
    kube = RecordingKube()
    state = OperatorState(kube=kube, settings=OperatorSettings())  # type: ignore[arg-type]
    await docs.nudge_dialogs(state, "shop", ["b", "a", "b"], "Integration/shop=deleted")
    trigger = {naming.DEPENDENCY_TRIGGER: "Integration/shop=deleted"}
    assert kube.annotated == [("Dialog", "shop", "a", trigger), ("Dialog", "shop", "b", trigger)]
