"""A Dialog's ``call_hook`` targets against the Integrations of its namespace: the Dialog's
``IntegrationsResolved`` condition.

The check is the CLI's (:func:`voicetyped_specs.dialog.hooks.check_call_hooks`); what the
operator adds is where the Integrations come from and when to look again:

* an index of the Integrations of each namespace with their operation names
  (:func:`integration_entry`), from their specs as the watch delivers them;
* an index of the Dialogs that name each Integration (:func:`dialog_services`), so that an
  Integration created, changed (its operations) or deleted re-evaluates exactly those Dialogs:
  they are annotated (:func:`nudge_value` changes only when the operations do), which runs
  their handler.

A dangling call_hook does not stop the Dialog from being served (``Ready`` stays about the
dialog itself: Integrations may well be applied after the Dialogs); the condition is False
with reason ``DanglingCallHook`` and the call_hooks' paths, so ``kubectl wait
--for=condition=IntegrationsResolved dialog/NAME`` waits for them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError
from voicetyped_specs.dialog import model as m
from voicetyped_specs.dialog.compiled import CompiledDialog
from voicetyped_specs.dialog.hooks import check_call_hooks, services

from voicetyped_operator.conditions import State
from voicetyped_operator.documents import dialog_document

CONDITION = "IntegrationsResolved"
RESOLVED = "Resolved"
DANGLING = "DanglingCallHook"


def integration_entry(name: str, spec: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    """(name call_hooks use, sorted operation names) of an Integration resource."""
    operations = spec.get("operations")
    names = tuple(sorted(str(o) for o in operations)) if isinstance(operations, Mapping) else ()
    return str(spec.get("name") or name), names


def dialog_services(name: str, spec: Mapping[str, Any]) -> set[str]:
    """The Integrations a Dialog resource's call_hooks name (none when its spec is not a valid
    dialog shape: it is re-evaluated when fixed)."""
    try:
        return services(m.Dialog.model_validate(dialog_document(name, spec)))
    except ValidationError:
        return set()


def catalog(entries: Iterable[tuple[str, tuple[str, ...]]]) -> dict[str, frozenset[str]]:
    return {name: frozenset(operations) for name, operations in entries}


def resolution(compiled: CompiledDialog, integrations: Mapping[str, frozenset[str]]) -> State:
    """The ``IntegrationsResolved`` condition of a valid dialog."""
    issues = check_call_hooks(compiled.spec, integrations)
    if issues:
        return State("False", DANGLING, "; ".join(f"spec.{i}" for i in issues))
    used = sorted(services(compiled.spec))
    if not used:
        return State("True", RESOLVED, "the dialog has no call_hook")
    return State("True", RESOLVED, f"every call_hook resolves (Integrations: {', '.join(used)})")


def nudge_value(name: str, operations: Iterable[str] | None) -> str:
    """The annotation value telling a Dialog that Integration ``name`` changed: the same for
    the same operations (so re-applying it triggers nothing), ``deleted`` when it is gone."""
    if operations is None:
        return f"Integration/{name}=deleted"
    digest = hashlib.sha256(",".join(sorted(operations)).encode()).hexdigest()[:16]
    return f"Integration/{name}={digest}"
