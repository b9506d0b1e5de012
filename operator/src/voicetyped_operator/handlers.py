"""The kopf handlers: thin, each hands its object to a reconciler.

* VoiceDeployment: create/update/resume -> reconcile (with kopf's retries); an event handler
  that remembers it for the periodic resync and keeps Dialog/Integration ``usedBy`` current.
* Dialog, Integration: create/update/resume -> validate and render; delete (optional, no
  finalizer) -> nudge dependents, which then report the missing object.
* Children (labelled ``app.kubernetes.io/managed-by=voicetyped-operator``, filtered on the
  server): Deployment status -> the owner's readiness; a child changed or deleted by
  someone else -> the owner is nudged and re-applies it.

Indexes map Dialog/Integration names to the VoiceDeployments that use them, a namespace to its
Integrations' operations and an Integration to the Dialogs that call it (a Dialog's
``IntegrationsResolved`` condition, see :mod:`.call_hooks`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import kopf
from lightkube import AsyncClient, KubeConfig

from voicetyped_operator import call_hooks, naming
from voicetyped_operator.kube import Kube
from voicetyped_operator.reconcile import documents as docs
from voicetyped_operator.reconcile import voicedeployment as vds
from voicetyped_operator.reconcile.voicedeployment import component_status
from voicetyped_operator.settings import OperatorSettings
from voicetyped_operator.state import Known, OperatorState, of

SETTINGS = OperatorSettings()
VD = (naming.GROUP, "v1alpha1", "voicedeployments")
DIALOG = (naming.GROUP, "v1alpha1", "dialogs")
INTEGRATION = (naming.GROUP, "v1alpha1", "integrations")
CHILDREN = {
    "Deployment": ("apps", "v1", "deployments"),
    "Service": ("", "v1", "services"),
    "ConfigMap": ("", "v1", "configmaps"),
    "ServiceAccount": ("", "v1", "serviceaccounts"),
    "HorizontalPodAutoscaler": ("autoscaling", "v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("policy", "v1", "poddisruptionbudgets"),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
}
PREFIX = "operator.voicetyped.io"
log = logging.getLogger(__name__)


# ---- lifecycle ---------------------------------------------------------------------------


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    configure(settings)
    client = AsyncClient(KubeConfig.from_env(), field_manager=SETTINGS.field_manager)
    state = OperatorState(
        kube=Kube(client, SETTINGS.field_manager, SETTINGS.concurrency), settings=SETTINGS
    )
    state.spawn(resync(state), name="voicetyped-resync")
    state.spawn(vds.poll_trunks(state), name="voicetyped-trunk-status")
    memo.state = state


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    """kopf runs this once its watchers and handlers have stopped (SIGTERM)."""
    state = getattr(memo, "state", None)
    if isinstance(state, OperatorState):
        await state.close()


async def resync(state: OperatorState) -> None:
    """Re-apply every VoiceDeployment periodically: repairs drift no watch reports.

    A loop of our own rather than ``@kopf.timer``: kopf puts a finalizer on every object
    with a timer, and a finalizer would keep VoiceDeployments (and their namespaces) from
    being deleted whenever the operator is not running.
    """
    while True:
        await asyncio.sleep(state.settings.resync_seconds)
        for (namespace, name), known in list(state.known.items()):
            if (namespace, name) in state.deleting:
                continue
            try:
                await vds.reconcile(
                    state,
                    name=name,
                    namespace=namespace,
                    uid=known.uid,
                    generation=known.generation,
                    spec=known.spec,
                    status=known.status,
                    retry=0,
                )
            except (kopf.PermanentError, kopf.TemporaryError) as exc:
                # Reported in status already; the change handler has its own retries.
                log.debug("resync of %s/%s: %s", namespace, name, exc)
            except Exception:
                log.exception("resync of %s/%s failed", namespace, name)


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf settings: our storages and prefixes, no peering, sane retries, quiet events."""
    from voicetyped_operator.diffbase import HashDiffBaseStorage

    settings.peering.standalone = True
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = HashDiffBaseStorage(prefix=PREFIX)
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    # kopf's own INFO logs ("Handler succeeded") are not Events; ours are posted explicitly.
    settings.posting.level = logging.WARNING
    # Only the Events we post ourselves (events.py: one per transition, cut to the API server's
    # size limit). kopf would also post every failed handler attempt's log line, repeating each
    # retry, and its cut counts characters where the limit counts bytes (refused, and lost).
    settings.posting.loggers = False
    settings.posting.reporting_component = "voicetyped-operator"
    settings.execution.default_backoff = SETTINGS.api_retry_seconds
    settings.networking.request_timeout = 60.0
    settings.networking.connect_timeout = 10.0
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # CRDs come with the chart before the operator starts: no cluster-wide CRD watch needed.
    settings.scanning.disabled = True
    for resource in CHILDREN.values():
        settings.watching.label_selectors[resource] = naming.MANAGED_SELECTOR


# ---- indexes -------------------------------------------------------------------------------


@kopf.index(*VD)
def vd_by_dialog(
    namespace: str | None, name: str, spec: Mapping[str, Any], **_: Any
) -> dict[tuple[str, str], str]:
    return {(namespace or "", str(d)): name for d in spec.get("dialogs") or []}


@kopf.index(*VD)
def vd_by_integration(
    namespace: str | None, name: str, spec: Mapping[str, Any], **_: Any
) -> dict[tuple[str, str], str]:
    return {(namespace or "", str(i)): name for i in spec.get("integrations") or []}


@kopf.index(*INTEGRATION)
def integrations_by_namespace(
    namespace: str | None, name: str, spec: Mapping[str, Any], meta: Mapping[str, Any], **_: Any
) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Namespace -> (name, operations) of each Integration: what call_hooks resolve against.
    One being deleted (held by our finalizer while its deletion handler runs) is gone already:
    the Dialogs that handler nudges must not find it here."""
    if meta.get("deletionTimestamp"):
        return {}
    return {namespace or "": call_hooks.integration_entry(name, spec)}


@kopf.index(*DIALOG)
def dialogs_by_service(
    namespace: str | None, name: str, spec: Mapping[str, Any], **_: Any
) -> dict[tuple[str, str], str]:
    """(namespace, Integration) -> the Dialogs whose call_hooks name it."""
    return {(namespace or "", s): name for s in call_hooks.dialog_services(name, spec)}


def _integrations(kwargs: Mapping[str, Any], namespace: str) -> dict[str, frozenset[str]]:
    found: kopf.Index[str, tuple[str, tuple[str, ...]]] = kwargs["integrations_by_namespace"]
    return call_hooks.catalog(found.get(namespace, []))


async def _integration_changed(
    state: OperatorState,
    kwargs: Mapping[str, Any],
    namespace: str,
    name: str,
    spec: Mapping[str, Any] | None,
) -> None:
    """Re-evaluate the Dialogs that call this Integration (``spec`` None: it was deleted)."""
    service, operations = call_hooks.integration_entry(name, spec or {})
    found: kopf.Index[tuple[str, str], str] = kwargs["dialogs_by_service"]
    dialogs = list(found.get((namespace, service), []))
    value = call_hooks.nudge_value(service, operations if spec is not None else None)
    await docs.nudge_dialogs(state, namespace, dialogs, value)


def _users(kwargs: Mapping[str, Any], index: str, namespace: str, name: str) -> list[str]:
    """The VoiceDeployments an index lists for a Dialog/Integration (kopf passes indexes as
    keyword arguments named like the index function)."""
    found: kopf.Index[tuple[str, str], str] = kwargs[index]
    return sorted(set(found.get((namespace, name), [])))


# ---- VoiceDeployment -----------------------------------------------------------------------


@kopf.on.resume(*VD)
@kopf.on.create(*VD)
@kopf.on.update(*VD)
async def voice_deployment(
    name: str,
    namespace: str | None,
    uid: str,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    retry: int,
    memo: Any,
    **_: Any,
) -> None:
    namespace = namespace or ""
    state = of(memo)
    state.deleting.discard((namespace, name))
    await vds.reconcile(
        state,
        name=name,
        namespace=namespace,
        uid=uid,
        generation=int(meta.get("generation") or 0),
        spec=spec,
        status=status,
        retry=retry,
    )


@kopf.on.event(*VD)
async def voice_deployment_event(
    type: str,
    name: str,
    namespace: str | None,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    memo: Any,
    **kwargs: Any,
) -> None:
    """Track deletions and keep Dialog/Integration ``usedBy`` in step."""
    namespace = namespace or ""
    state = of(memo)
    key = (namespace, name)
    if type != "DELETED":
        state.known[key] = Known(
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 0),
            spec=dict(spec),
            status=dict(status),
        )
    if type == "DELETED" or meta.get("deletionTimestamp"):
        state.deleting.add(key)
        if type == "DELETED":
            state.forget(key)
    served = status.get("dialogs") or []
    dialogs = {str(d) for d in spec.get("dialogs") or []} | {str(d.get("name")) for d in served}
    served_i = status.get("integrations") or []
    integrations = {str(i) for i in spec.get("integrations") or []}
    integrations |= {str(i.get("name")) for i in served_i}

    def users(index: str, document: str) -> list[str]:
        found = _users(kwargs, index, namespace, document)
        # kopf may still list a deleted object in its index while its DELETED event is
        # handled, and no later event of this object would correct usedBy.
        return [u for u in found if not (type == "DELETED" and u == name)]

    for dialog in sorted(dialogs):
        await docs.refresh_used_by(
            state, "Dialog", namespace, dialog, users("vd_by_dialog", dialog)
        )
    for integration in sorted(integrations):
        await docs.refresh_used_by(
            state, "Integration", namespace, integration, users("vd_by_integration", integration)
        )


# ---- Dialog / Integration ------------------------------------------------------------------


def _serve_document(
    resource: tuple[str, str, str],
    kind: Literal["Dialog", "Integration"],
    index: str,
    reconcile: Callable[..., Awaitable[None]],
) -> None:
    """Register the handlers of one document kind: create/update/resume -> validate and
    render (``reconcile``); delete -> nudge the VoiceDeployments found in ``index``. A Dialog
    is checked against its namespace's Integrations; an Integration created, changed or
    deleted re-evaluates the Dialogs that call it."""
    handler_id = kind.lower()

    async def changed(
        name: str,
        namespace: str | None,
        uid: str,
        meta: kopf.Meta,
        spec: kopf.Spec,
        status: kopf.Status,
        retry: int,
        memo: Any,
        **kwargs: Any,
    ) -> None:
        namespace = namespace or ""
        state = of(memo)
        extra: dict[str, Any] = {}
        if kind == "Dialog":
            extra["integrations"] = _integrations(kwargs, namespace)
        else:
            await _integration_changed(state, kwargs, namespace, name, spec)
        await reconcile(
            state,
            name=name,
            namespace=namespace,
            uid=uid,
            generation=int(meta.get("generation") or 0),
            spec=spec,
            status=status,
            used_by=_users(kwargs, index, namespace, name),
            retry=retry,
            **extra,
        )

    async def deleted(name: str, namespace: str | None, memo: Any, **kwargs: Any) -> None:
        namespace = namespace or ""
        users = _users(kwargs, index, namespace, name)
        await docs.trigger_dependents(of(memo), kind, namespace, name, "deleted", users)

    for register in (kopf.on.resume, kopf.on.create, kopf.on.update):
        register(*resource, id=handler_id)(changed)
    kopf.on.delete(*resource, id=f"{handler_id}_deleted", optional=True)(deleted)
    if kind == "Integration":
        kopf.on.event(*resource, id="integration_gone")(_integration_gone)


async def _integration_gone(
    event: Mapping[str, Any], name: str, namespace: str | None, memo: Any, **kwargs: Any
) -> None:
    """An Integration deleted: the Dialogs calling it re-evaluate. A watch event, not the
    optional delete handler: without a finalizer of ours the object is gone before kopf could
    run that one (and kopf has already dropped it from the indexes)."""
    if event.get("type") == "DELETED":
        await _integration_changed(of(memo), kwargs, namespace or "", name, None)


_serve_document(DIALOG, "Dialog", "vd_by_dialog", docs.reconcile_dialog)
_serve_document(INTEGRATION, "Integration", "vd_by_integration", docs.reconcile_integration)


# ---- children ------------------------------------------------------------------------------


async def child_event(kind: str, type: str | None, body: kopf.Body, memo: Any) -> None:
    state = of(memo)
    meta = body.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    child = (kind, namespace, name)
    labels = meta.get("labels") or {}
    if type == "DELETED":
        state.inventory.discard(child)
    else:
        state.inventory.add(child)
    owner_vd = labels.get(naming.VD_LABEL)
    if owner_vd and kind == "Deployment" and type != "DELETED":
        component = str(labels.get(naming.COMPONENT, ""))
        key = (namespace, str(owner_vd))
        spec = body.get("spec") or {}
        got = component_status(
            meta.get("generation"), body.get("status") or {}, spec.get("replicas")
        )
        generation = int(meta.get("generation") or 0)
        if state.record_readiness(key, component, generation, got, from_watch=True):
            vds.schedule_refresh(state, key)
    if type is None:  # the initial listing: nothing changed, the resume handlers re-apply
        return
    drifted = _drifted(state, child, type, meta)
    if not drifted:
        return
    state.applied.pop(child, None)
    value = f"{kind}/{name}@{meta.get('resourceVersion', '')}"
    if owner_vd:
        key = (namespace, str(owner_vd))
        if key in state.deleting or key not in state.reconciled:
            return
        await state.kube.annotate(
            "VoiceDeployment", namespace, str(owner_vd), {naming.DRIFT_TRIGGER: value}
        )
    elif kind == "ConfigMap":
        for doc_kind, label in (
            ("Dialog", naming.DIALOG_LABEL),
            ("Integration", naming.INTEGRATION_LABEL),
        ):
            owner = labels.get(label)
            if owner:
                await state.kube.annotate(
                    doc_kind, namespace, str(owner), {naming.DRIFT_TRIGGER: value}
                )


def _drifted(
    state: OperatorState, child: tuple[str, str, str], type: str, meta: Mapping[str, Any]
) -> bool:
    """Changed or deleted by someone else since our last apply."""
    recorded = state.applied.get(child)
    if recorded is None:
        return False  # not ours to judge (never applied by this process)
    if type == "DELETED":
        return True
    generation, resource_version = recorded
    current = meta.get("generation")
    if generation is not None and current is not None:
        return int(current) > generation
    return str(meta.get("resourceVersion", "")) != resource_version


def _register_children() -> None:
    for kind, resource in CHILDREN.items():

        async def handler(
            type: str | None, body: kopf.Body, memo: Any, _kind: str = kind, **_: Any
        ) -> None:
            await child_event(_kind, type, body, memo)

        kopf.on.event(
            *resource,
            id=f"child-{kind.lower()}",
            labels={naming.MANAGED_BY_LABEL: naming.MANAGED_BY},
        )(handler)


_register_children()
