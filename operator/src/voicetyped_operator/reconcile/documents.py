"""Reconcile Dialogs and Integrations: validate, render the ConfigMap, tell dependents.

An invalid edit is reported (``Stalled`` with every issue and its field path, a Warning
Event) and the ConfigMap keeps the last valid version, so running calls and the runtime's
hot reload never see it. A valid change updates the ConfigMap and its content-hash
annotation, and nudges every VoiceDeployment that serves the document (an annotation
change, which reaches their kopf handler with its retries).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import kopf
from pydantic import ValidationError

from voicetyped_operator import call_hooks, conditions, events, naming
from voicetyped_operator.documents import (
    InvalidDocumentError,
    compile_dialog,
    dialog_config_map,
    integration_config_map,
    render_integration,
)
from voicetyped_operator.kube import Rejected, Transient
from voicetyped_operator.models.status import DialogStatus, IntegrationStatus
from voicetyped_operator.reconcile.voicedeployment import backoff
from voicetyped_operator.state import OperatorState

DocKind = Literal["Dialog", "Integration"]
log = logging.getLogger(__name__)


StatusT = TypeVar("StatusT", DialogStatus, IntegrationStatus)


def _parse(model: type[StatusT], raw: Mapping[str, Any] | None) -> StatusT:
    fields = {f.alias or n for n, f in model.model_fields.items()}
    try:
        return model.model_validate({k: v for k, v in (raw or {}).items() if k in fields})
    except ValidationError:
        return model()


async def trigger_dependents(
    state: OperatorState, kind: DocKind, namespace: str, name: str, value: str, users: Iterable[str]
) -> None:
    """Annotate each VoiceDeployment serving this document so its handler runs again."""
    annotation = {naming.DEPENDENCY_TRIGGER: f"{kind}/{name}={value}"}
    results = await asyncio.gather(
        *(state.kube.annotate("VoiceDeployment", namespace, vd, annotation) for vd in users),
        return_exceptions=True,
    )
    for vd, result in zip(users, results, strict=False):
        if isinstance(result, BaseException):
            log.warning("could not nudge VoiceDeployment %s/%s: %s", namespace, vd, result)


async def reconcile_dialog(
    state: OperatorState,
    *,
    name: str,
    namespace: str,
    uid: str,
    generation: int,
    spec: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    used_by: Sequence[str],
    retry: int,
    integrations: Mapping[str, frozenset[str]] | None = None,
) -> None:
    """``integrations`` (name -> operations) are those of the namespace: the dialog's
    call_hooks are checked against them (the ``IntegrationsResolved`` condition)."""
    previous = _parse(DialogStatus, status)
    ref = events.reference("Dialog", name, namespace, uid)
    users = sorted(used_by)
    try:
        compiled = compile_dialog(name, spec)
    except InvalidDocumentError as exc:
        await _invalid(state, "Dialog", ref, previous, generation, exc, users, "InvalidDialog")
        raise kopf.PermanentError(str(exc)) from None
    config_map = dialog_config_map(name, namespace, uid, compiled)
    await _apply(state, "Dialog", ref, previous, generation, config_map, users, retry)
    message = (
        f"{len(compiled.states)} states, initial {compiled.initial!r}, served from ConfigMap "
        f"{naming.dialog_config_map(name)}"
    )
    kept = conditions.merge(previous.conditions, generation, conditions.ready(message))
    if integrations is not None:
        wanted = call_hooks.resolution(compiled, integrations)
        kept.append(
            conditions.condition(previous.conditions, generation, call_hooks.CONDITION, wanted)
        )
        _report_dangling(ref, previous, wanted)
    updated = previous.model_copy(
        update={
            "observed_generation": generation,
            "conditions": kept,
            "states": len(compiled.states),
            "initial": compiled.initial,
            "content_hash": compiled.content_hash,
            "config_map": naming.dialog_config_map(name),
            "used_by": users,
        }
    )
    await _finish(state, "Dialog", ref, previous, updated, compiled.content_hash, users)


def _report_dangling(ref: dict[str, Any], previous: DialogStatus, wanted: conditions.State) -> None:
    """A Warning Event when call_hooks start dangling (or dangle differently)."""
    old = conditions.find(previous.conditions, call_hooks.CONDITION)
    if wanted.status == "False" and (
        old is None or old.status != "False" or old.message != conditions.cut(wanted.message)
    ):
        events.post(ref, "Warning", wanted.reason, wanted.message)


async def nudge_dialogs(
    state: OperatorState, namespace: str, dialogs: Iterable[str], value: str
) -> None:
    """Annotate each Dialog whose call_hooks name a changed Integration: its handler runs
    again and re-evaluates ``IntegrationsResolved`` (an unchanged value is a no-op)."""
    annotation = {naming.DEPENDENCY_TRIGGER: value}
    for dialog in sorted(set(dialogs)):
        try:
            await state.kube.annotate("Dialog", namespace, dialog, annotation)
        except (Transient, Rejected) as exc:
            log.warning("could not nudge Dialog %s/%s: %s", namespace, dialog, exc)


async def reconcile_integration(
    state: OperatorState,
    *,
    name: str,
    namespace: str,
    uid: str,
    generation: int,
    spec: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    used_by: Sequence[str],
    retry: int,
) -> None:
    previous = _parse(IntegrationStatus, status)
    ref = events.reference("Integration", name, namespace, uid)
    users = sorted(used_by)
    try:
        rendered = render_integration(name, spec)
    except InvalidDocumentError as exc:
        await _invalid(
            state, "Integration", ref, previous, generation, exc, users, "InvalidIntegration"
        )
        raise kopf.PermanentError(str(exc)) from None
    # Every referenced Secret and key must exist before the gateway may see this version.
    secrets = sorted({ref_.name for _, ref_ in rendered.refs})
    try:
        found = await asyncio.gather(*(state.kube.secret_keys(namespace, s) for s in secrets))
    except Transient as exc:
        raise kopf.TemporaryError(str(exc), delay=backoff(state, retry)) from None
    keys = dict(zip(secrets, found, strict=True))
    problems = []
    for path, secret_ref in rendered.refs:
        have = keys[secret_ref.name]
        if have is None:
            problems.append(f"Secret {namespace}/{secret_ref.name} ({path}) not found")
        elif secret_ref.key not in have:
            problems.append(
                f"Secret {namespace}/{secret_ref.name} has no key {secret_ref.key!r} ({path})"
            )
    if problems:
        message = "; ".join(dict.fromkeys(problems))
        if previous.content_hash:
            message += f" (still serving version {previous.content_hash})"
        wanted = conditions.stalled("SecretNotFound", message)
        updated = previous.model_copy(
            update={
                "observed_generation": generation,
                "conditions": conditions.merge(previous.conditions, generation, wanted),
                "used_by": users,
            }
        )
        await _write(state, "Integration", ref, previous, updated)
        raise kopf.TemporaryError(message, delay=state.settings.dependency_retry_seconds)
    config_map = integration_config_map(name, namespace, uid, rendered)
    await _apply(state, "Integration", ref, previous, generation, config_map, users, retry)
    message = (
        f"{len(rendered.document['operations'])} operations, served from ConfigMap "
        f"{naming.integration_config_map(name)}"
    )
    updated = previous.model_copy(
        update={
            "observed_generation": generation,
            "conditions": conditions.merge(
                previous.conditions, generation, conditions.ready(message)
            ),
            "operations": len(rendered.document["operations"]),
            "content_hash": rendered.content_hash,
            "config_map": naming.integration_config_map(name),
            "secrets": secrets,
            "used_by": users,
        }
    )
    await _finish(state, "Integration", ref, previous, updated, rendered.content_hash, users)


async def _invalid(
    state: OperatorState,
    kind: DocKind,
    ref: dict[str, Any],
    previous: DialogStatus | IntegrationStatus,
    generation: int,
    exc: InvalidDocumentError,
    users: list[str],
    reason: str,
) -> None:
    detail = exc.message()
    if previous.content_hash:
        detail = (
            f"generation {generation} is invalid, still serving version "
            f"{previous.content_hash}: {detail}"
        )
    wanted = conditions.stalled(reason, detail)
    updated = previous.model_copy(
        update={
            "observed_generation": generation,
            "conditions": conditions.merge(previous.conditions, generation, wanted),
            "used_by": users,
        }
    )
    await _write(state, kind, ref, previous, updated)
    if not previous.content_hash:
        # Dependents wait for a first valid version: let them report why.
        meta = ref["metadata"]
        await trigger_dependents(
            state, kind, meta["namespace"], meta["name"], f"invalid@{generation}", users
        )


async def _apply(
    state: OperatorState,
    kind: DocKind,
    ref: dict[str, Any],
    previous: DialogStatus | IntegrationStatus,
    generation: int,
    config_map: Any,
    users: list[str],
    retry: int,
) -> None:
    try:
        applied = await state.kube.apply(config_map)
    except Transient as exc:
        raise kopf.TemporaryError(str(exc), delay=backoff(state, retry)) from None
    except Rejected as exc:
        message = f"the API server refused {exc}"
        wanted = conditions.stalled("RenderFailed", message)
        updated = previous.model_copy(
            update={
                "observed_generation": generation,
                "conditions": conditions.merge(previous.conditions, generation, wanted),
                "used_by": users,
            }
        )
        await _write(state, kind, ref, previous, updated)
        raise kopf.PermanentError(message) from None
    meta = ref["metadata"]
    state.applied[("ConfigMap", meta["namespace"], applied.name)] = (None, applied.resource_version)
    state.inventory.add(("ConfigMap", meta["namespace"], applied.name))


async def _finish(
    state: OperatorState,
    kind: DocKind,
    ref: dict[str, Any],
    previous: DialogStatus | IntegrationStatus,
    updated: DialogStatus | IntegrationStatus,
    content_hash: str,
    users: list[str],
) -> None:
    await _write(state, kind, ref, previous, updated)
    meta = ref["metadata"]
    state.used_by[(kind, meta["namespace"], meta["name"])] = users
    if previous.content_hash != content_hash:
        if previous.content_hash:
            events.post(
                ref,
                "Normal",
                "Updated",
                f"ConfigMap updated: version {previous.content_hash} -> {content_hash}",
            )
        await trigger_dependents(state, kind, meta["namespace"], meta["name"], content_hash, users)


async def _write(
    state: OperatorState,
    kind: DocKind,
    ref: dict[str, Any],
    previous: DialogStatus | IntegrationStatus,
    updated: DialogStatus | IntegrationStatus,
) -> None:
    if updated == previous:
        return
    meta = ref["metadata"]
    try:
        await state.kube.patch_status(
            kind, meta["namespace"], meta["name"], updated.model_dump(mode="json", by_alias=True)
        )
    except Transient as exc:
        raise kopf.TemporaryError(str(exc), delay=state.settings.api_retry_seconds) from None
    old = conditions.find(previous.conditions, "Stalled")
    new = conditions.find(updated.conditions, "Stalled")
    if (
        new is not None
        and new.status == "True"
        and (old is None or old.status != "True" or old.message != new.message)
    ):
        events.post(ref, "Warning", new.reason, new.message)
    ready_old = conditions.find(previous.conditions, "Ready")
    ready_new = conditions.find(updated.conditions, "Ready")
    if (
        ready_new is not None
        and ready_new.status == "True"
        and (ready_old is None or ready_old.status != "True")
    ):
        events.post(ref, "Normal", "Ready", ready_new.message)


async def refresh_used_by(
    state: OperatorState, kind: DocKind, namespace: str, name: str, users: Sequence[str]
) -> None:
    """Keep ``status.usedBy`` of a Dialog/Integration in step with the VoiceDeployments."""
    key = (kind, namespace, name)
    wanted = sorted(users)
    if state.used_by.get(key) == wanted:
        return
    try:
        exists = await state.kube.get_custom(kind, namespace, name)
        if exists is None:
            return
        await state.kube.patch_status(kind, namespace, name, {"usedBy": wanted})
    except (Transient, Rejected) as exc:
        log.warning("could not update usedBy of %s %s/%s: %s", kind, namespace, name, exc)
        return
    state.used_by[key] = wanted
