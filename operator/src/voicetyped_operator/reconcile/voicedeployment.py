"""Reconcile one VoiceDeployment: resolve what it references, apply its children, report.

Outcomes, the kstatus way:

* spec refused by the model (what CEL could not express) or by the API server when a child
  is applied: ``Stalled`` (InvalidSpec / ApplyRejected) and :class:`kopf.PermanentError`:
  nothing to retry until the spec changes;
* a Dialog, Integration or Secret missing (or without a valid version): ``Stalled`` naming
  it, children left as they are, :class:`kopf.TemporaryError` so it recovers by itself
  when the object appears (Dialog/Integration changes also trigger it at once);
* the media TLS Secret's certificate expired, not yet valid or not matching its key (or
  the client CA unreadable): ``Stalled`` (InvalidTLSSecret) naming the Secret and the
  problem, nothing applied (the broken certificate is not rolled out), retried like a
  missing Secret so a fixed Secret recovers by itself;
* the console's or browser calling's bearer token (``spec.console.tokenSecretRef``,
  ``spec.webrtc.tokenSecretRef``) empty, short or not a token: ``Stalled``
  (InvalidTokenSecret) naming the Secret, key and field, never the value; retried likewise;
* a served Dialog in a language the speech model cannot recognise (tiny.en and a German
  Dialog): ``Stalled`` (LanguageNotSupported) saying to set ``spec.speech.modelName: base``;
* a dependency still being processed: ``Reconciling`` (WaitingForDependencies), short retry;
* transient API failures: :class:`kopf.TemporaryError` with capped exponential backoff,
  status left alone;
* success: ``observedGeneration`` = generation; ``Ready`` once every Deployment is
  available (status refreshes follow the Deployments' own status changes).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx2
import kopf
from pydantic import ValidationError
from voicetyped_specs.resources.voicedeployment import SERVICES, VoiceDeploymentSpec

from voicetyped_operator import conditions, events, naming, trunks
from voicetyped_operator.documents import SecretMount, pydantic_issues
from voicetyped_operator.kube import Rejected, Transient
from voicetyped_operator.models.status import (
    ComponentStatus,
    DocumentRef,
    VoiceDeploymentStatus,
)
from voicetyped_operator.render import (
    REDIS,
    Dependencies,
    Owner,
    RenderError,
    ServedDialog,
    ServedIntegration,
    possible_children,
    render,
)
from voicetyped_operator.render.common import HTTP_PORT
from voicetyped_operator.render.console import token_problem, token_refs
from voicetyped_operator.render.sip_edge import TLS_KEYS
from voicetyped_operator.state import Key, OperatorState, Reconciled
from voicetyped_operator.tls import check_ca_bundle, check_server_pair

KIND = "VoiceDeployment"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str
    stalled: bool  # False: still being processed elsewhere, soon resolved


class DependencyError(Exception):
    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(p.message for p in problems))

    @property
    def stalled(self) -> bool:
        return any(p.stalled for p in self.problems)

    @property
    def reason(self) -> str:
        chosen = [p for p in self.problems if p.stalled] or self.problems
        reasons = {p.reason for p in chosen}
        return chosen[0].reason if len(reasons) == 1 else "MissingDependencies"


def backoff(state: OperatorState, retry: int) -> float:
    s = state.settings
    return float(min(s.api_retry_max_seconds, s.api_retry_seconds * (2 ** min(retry, 10))))


def reference(name: str, namespace: str, uid: str) -> dict[str, Any]:
    return events.reference(KIND, name, namespace, uid)


def parse_status(raw: Mapping[str, Any] | None) -> VoiceDeploymentStatus:
    try:
        return VoiceDeploymentStatus.model_validate(
            {k: v for k, v in (raw or {}).items() if k in _STATUS_FIELDS}
        )
    except ValidationError:
        return VoiceDeploymentStatus()


_STATUS_FIELDS = {f.alias or n for n, f in VoiceDeploymentStatus.model_fields.items()}


async def reconcile(
    state: OperatorState,
    *,
    name: str,
    namespace: str,
    uid: str,
    generation: int,
    spec: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    retry: int,
) -> None:
    key: Key = (namespace, name)
    async with state.locks[key]:
        previous = state.status.get(key) or parse_status(status)
        state.status[key] = previous
        ref = reference(name, namespace, uid)
        try:
            parsed = VoiceDeploymentSpec.model_validate(dict(spec))
        except ValidationError as exc:
            message = "; ".join(pydantic_issues(exc, "spec"))
            await _write(state, key, ref, generation, conditions.stalled("InvalidSpec", message))
            raise kopf.PermanentError(f"invalid spec: {message}") from None
        state.trunks[key] = tuple(t.name for t in parsed.media.trunks)
        try:
            deps = await resolve(state, namespace, parsed)
        except DependencyError as exc:
            if exc.stalled:
                wanted = conditions.stalled(exc.reason, str(exc))
                delay = state.settings.dependency_retry_seconds
            else:
                wanted = conditions.progressing("WaitingForDependencies", str(exc))
                delay = min(2.0, state.settings.dependency_retry_seconds)
            await _write(state, key, ref, generation, wanted)
            raise kopf.TemporaryError(str(exc), delay=delay) from None
        except Transient as exc:
            raise kopf.TemporaryError(str(exc), delay=backoff(state, retry)) from None
        owner = Owner(name=name, namespace=namespace, uid=uid)
        try:
            children = render(owner, parsed, deps, state.settings)
        except RenderError as exc:
            await _write(state, key, ref, generation, conditions.stalled("InvalidSpec", str(exc)))
            raise kopf.PermanentError(str(exc)) from None
        try:
            applied = await state.kube.apply_all(children)
            await _prune(state, owner, children)
        except Rejected as exc:
            message = f"the API server refused {exc}"
            await _write(state, key, ref, generation, conditions.stalled("ApplyRejected", message))
            if exc.code in (401, 403):  # RBAC may be fixed without a spec change
                raise kopf.TemporaryError(message, delay=backoff(state, retry)) from None
            raise kopf.PermanentError(message) from None
        except Transient as exc:
            raise kopf.TemporaryError(str(exc), delay=backoff(state, retry)) from None
        for result in applied:
            state.applied[(result.kind, namespace, result.name)] = (
                result.generation,
                result.resource_version,
            )
            state.inventory.add((result.kind, namespace, result.name))
            if result.kind == "Deployment" and result.status is not None:
                state.record_readiness(
                    key,
                    result.name.removeprefix(f"{name}-"),
                    int(result.generation or 0),
                    component_status(result.generation, result.status, None),
                    from_watch=False,
                )
        components = (*SERVICES, REDIS) if parsed.runtime.store.type == "managedRedis" else SERVICES
        state.reconciled[key] = Reconciled(uid, generation, deps, tuple(components))
        await _write_ready(state, key, ref)


async def poll_trunks(state: OperatorState) -> None:
    """Every ``trunk_status_seconds``: each media pod's trunk registrations into the
    ``TrunkRegistered-<trunk>`` conditions of VoiceDeployments with trunks (see
    :mod:`voicetyped_operator.trunks`). Failures to read leave the conditions as they are."""
    timeout = httpx2.Timeout(3.0)
    async with httpx2.AsyncClient(timeout=timeout) as client:
        while True:
            await asyncio.sleep(state.settings.trunk_status_seconds)
            for key, names in list(state.trunks.items()):
                if not names or key in state.deleting or key not in state.reconciled:
                    continue
                try:
                    await _poll_one(state, client, key, names)
                except (Transient, Rejected) as exc:
                    log.warning("trunk status of %s/%s: %s", key[0], key[1], exc)
                except Exception:  # a background task: nothing else would ever see it
                    log.exception("trunk status of %s/%s failed", key[0], key[1])


async def _poll_one(
    state: OperatorState, client: httpx2.AsyncClient, key: Key, names: Sequence[str]
) -> None:
    namespace, name = key
    pods = await state.kube.pod_ips(namespace, naming.selector_labels(name, "media"))
    found = await asyncio.gather(
        *(trunks.read_pod(client, ip, HTTP_PORT["media"]) for ip in pods.values())
    )
    reports = dict(zip(pods, found, strict=True))
    async with state.locks[key]:
        previous = state.status.get(key)
        if previous is None or state.trunks.get(key) != tuple(names):
            return
        wanted = trunks.trunk_conditions(
            names, reports, previous.conditions, previous.observed_generation
        )
        updated = previous.model_copy(
            update={"conditions": trunks.replace(previous.conditions, wanted)}
        )
        if conditions.same(updated.conditions, previous.conditions):
            return
        await state.kube.patch_status(
            KIND, namespace, name, updated.model_dump(mode="json", by_alias=True)
        )
        state.status[key] = updated
        for cond in wanted:
            was = conditions.find(previous.conditions, cond.type)
            if cond.status == "False" and (was is None or was.status != "False"):
                ref = reference(name, namespace, state.reconciled[key].uid)
                events.post(ref, "Warning", cond.reason, cond.message)


async def refresh(state: OperatorState, key: Key) -> None:
    """Recompute Ready/Reconciling from the Deployments after their status changed."""
    async with state.locks[key]:
        if key in state.reconciled and key not in state.deleting:
            found = state.reconciled[key]
            await _write_ready(state, key, reference(key[1], key[0], found.uid))


def schedule_refresh(state: OperatorState, key: Key) -> None:
    """Coalesce bursts of Deployment events into one status write."""
    if key in state.refreshes and not state.refreshes[key].done():
        return

    async def later() -> None:
        await asyncio.sleep(state.settings.status_debounce_seconds)
        state.refreshes.pop(key, None)
        try:
            await refresh(state, key)
        except (Transient, Rejected) as exc:
            log.warning("status refresh of %s/%s failed: %s", key[0], key[1], exc)
        except Exception:  # a background task: nothing else would ever see it
            log.exception("status refresh of %s/%s failed", key[0], key[1])

    task = state.spawn(later(), name=f"voicetyped-refresh-{key[0]}/{key[1]}")
    if task is not None:
        state.refreshes[key] = task
        log.debug("status refresh of %s/%s scheduled", key[0], key[1])


def component_status(
    generation: int | None, status: Mapping[str, Any], spec_replicas: int | None
) -> ComponentStatus:
    """A Deployment's rollout the kstatus way: current, updated, all replicas available."""
    desired = spec_replicas if spec_replicas is not None else int(status.get("replicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    observed = int(status.get("observedGeneration") or 0)
    current = generation is None or observed >= generation
    done = current and updated >= desired and available >= desired and total <= desired
    return ComponentStatus(desired=desired, ready=ready, updated=updated, available=done)


async def _write_ready(state: OperatorState, key: Key, ref: dict[str, Any]) -> None:
    found = state.reconciled[key]
    readiness = {c: r.status for c, r in state.readiness[key].items()}
    waiting = []
    for component in found.components:
        got = readiness.get(component)
        if got is None or not got.available:
            detail = f"{got.ready}/{got.desired} ready" if got else "no status yet"
            waiting.append(f"{component} ({detail})")
    total = len(found.components)
    if waiting:
        wanted = conditions.progressing("ComponentsNotReady", "waiting for " + ", ".join(waiting))
    else:
        wanted = conditions.ready(f"all {total} components available")
    await _write(
        state,
        key,
        ref,
        found.generation,
        wanted,
        components={c: readiness[c] for c in found.components if c in readiness},
        summary=f"{total - len(waiting)}/{total}",
        deps=found.deps,
    )


async def _write(
    state: OperatorState,
    key: Key,
    ref: dict[str, Any],
    generation: int,
    wanted: tuple[conditions.State, conditions.State, conditions.State],
    *,
    components: dict[str, ComponentStatus] | None = None,
    summary: str | None = None,
    deps: Dependencies | None = None,
) -> None:
    previous = state.status.get(key) or VoiceDeploymentStatus()
    merged = conditions.merge(previous.conditions, generation, wanted) + trunks.sync(
        previous.conditions, state.trunks.get(key, ()), generation
    )
    updated = previous.model_copy(
        update={
            "observed_generation": generation,
            "conditions": merged,
            **({"components": components} if components is not None else {}),
            **({"summary": summary} if summary is not None else {}),
            **(
                {
                    "dialogs": [
                        DocumentRef(name=d.name, content_hash=d.content_hash) for d in deps.dialogs
                    ],
                    "integrations": [
                        DocumentRef(name=i.name, content_hash=i.content_hash)
                        for i in deps.integrations
                    ],
                }
                if deps is not None
                else {}
            ),
        }
    )
    if key in state.status and updated == previous:
        return  # nothing changed (merge kept every transition time)
    await state.kube.patch_status(
        KIND, key[0], key[1], updated.model_dump(mode="json", by_alias=True)
    )
    state.status[key] = updated
    _post_transitions(ref, previous, updated)


def _post_transitions(
    ref: dict[str, Any], before: VoiceDeploymentStatus, after: VoiceDeploymentStatus
) -> None:
    old = {c.type: c for c in before.conditions}
    for cond in after.conditions:
        was = old.get(cond.type)
        flipped = was is None or was.status != cond.status or was.reason != cond.reason
        if not flipped:
            continue
        if cond.type == "Stalled" and cond.status == "True":
            events.post(ref, "Warning", cond.reason, cond.message)
        elif cond.type == "Ready" and cond.status == "True":
            events.post(ref, "Normal", "Ready", cond.message)
        elif cond.type == "Stalled" and was is not None and was.status == "True":
            events.post(ref, "Normal", "Recovered", "no longer stalled")


async def _prune(state: OperatorState, owner: Owner, children: Sequence[Any]) -> None:
    """Delete children this spec no longer wants (autoscaling off, NetworkPolicies off...)."""
    wanted = {(type(c).__name__, c.metadata.name) for c in children}
    stale = [
        (kind, name)
        for kind, name in possible_children(owner)
        if (kind.__name__, name) not in wanted
        and (kind.__name__, owner.namespace, name) in state.inventory
    ]
    for kind, name in stale:
        await state.kube.delete(kind, owner.namespace, name)
        state.inventory.discard((kind.__name__, owner.namespace, name))
        state.applied.pop((kind.__name__, owner.namespace, name), None)


# ---- dependencies ----------------------------------------------------------------------------


async def resolve(state: OperatorState, namespace: str, spec: VoiceDeploymentSpec) -> Dependencies:
    """The served versions of the Dialogs/Integrations, with every Secret checked."""
    kube = state.kube
    dialogs = await asyncio.gather(*(_dialog(state, namespace, d) for d in spec.dialogs))
    integrations = await asyncio.gather(
        *(_integration(state, namespace, i) for i in spec.integrations)
    )
    problems = [p for p in (*dialogs, *integrations) if isinstance(p, Problem)]
    served_d = [d for d in dialogs if isinstance(d, ServedDialog)]
    problems += language_problems(spec, served_d)
    served_i = [i for i in integrations if isinstance(i, ServedIntegration)]
    needed: dict[str, list[tuple[str, str]]] = {}  # secret -> [(key, who)]
    for integration in served_i:
        for mount in integration.mounts:
            for key in mount.keys:
                needed.setdefault(mount.secret, []).append((key, f"Integration {integration.name}"))
    media = spec.media
    if media.digest_auth is not None:
        ref = media.digest_auth.secret_ref
        needed.setdefault(ref.name, []).append((ref.key, "spec.media.digestAuth.secretRef"))
    for field, secret, key in sip_edge_secrets(spec):
        needed.setdefault(secret, []).append((key, field))
    for field, ref in token_refs(spec):
        needed.setdefault(ref.name, []).append((ref.key, field))
    redis = spec.runtime.store.redis if spec.runtime.store.type == "redis" else None
    if redis is not None:
        ref = redis.url_secret_ref
        needed.setdefault(ref.name, []).append((ref.key, "spec.runtime.store.redis.urlSecretRef"))
        if redis.password_secret_ref is not None:
            ref = redis.password_secret_ref
            needed.setdefault(ref.name, []).append(
                (ref.key, "spec.runtime.store.redis.passwordSecretRef")
            )
    names = sorted(needed)
    found = await asyncio.gather(*(kube.secret_keys(namespace, s) for s in names))
    for secret, keys in zip(names, found, strict=True):
        users = sorted({who for _, who in needed[secret]})
        if keys is None:
            problems.append(
                Problem(
                    "SecretNotFound",
                    f"Secret {namespace}/{secret} (used by {', '.join(users)}) not found",
                    stalled=True,
                )
            )
            continue
        for key, who in needed[secret]:
            if key not in keys:
                problems.append(
                    Problem(
                        "SecretKeyNotFound",
                        f"Secret {namespace}/{secret} has no key {key!r} (used by {who})",
                        stalled=True,
                    )
                )
    if problems:
        raise DependencyError(problems)
    tls_hash = await _check_tls(state, namespace, spec)
    await _check_tokens(state, namespace, spec)
    return Dependencies(dialogs=tuple(served_d), integrations=tuple(served_i), tls_hash=tls_hash)


def sip_edge_secrets(spec: VoiceDeploymentSpec) -> list[tuple[str, str, str]]:
    """(field, Secret, key) of every Secret the media SIP edge mounts."""
    media = spec.media
    out: list[tuple[str, str, str]] = []
    if media.tls is not None:
        field = "spec.media.tls.secretRef"
        out += [(field, media.tls.secret_ref.name, key) for key in TLS_KEYS]
        ca = media.tls.client_ca_secret_ref
        if ca is not None:
            out.append(("spec.media.tls.clientCASecretRef", ca.name, ca.key))
    for i, trunk in enumerate(media.trunks):
        ref = trunk.password_secret_ref
        out.append((f"spec.media.trunks[{i}].passwordSecretRef", ref.name, ref.key))
    return out


async def _check_tls(state: OperatorState, namespace: str, spec: VoiceDeploymentSpec) -> str:
    """The TLS Secret's certificate checked (its rollout hash), or DependencyError naming the
    Secret and the problem: a broken certificate is never rolled out."""
    tls = spec.media.tls
    if tls is None:
        return ""
    name = tls.secret_ref.name
    values = await state.kube.secret_values(namespace, name, TLS_KEYS)
    if values is None:  # deleted since it was found: the next attempt says so
        raise DependencyError([Problem("SecretNotFound", f"Secret {namespace}/{name} gone", True)])
    now = datetime.now(UTC)
    checked = check_server_pair(values.get("tls.crt", b""), values.get("tls.key", b""), now)
    problems = []
    if checked.problem:
        problems.append(
            Problem(
                "InvalidTLSSecret",
                f"Secret {namespace}/{name} (spec.media.tls.secretRef): {checked.problem}",
                stalled=True,
            )
        )
    ca = tls.client_ca_secret_ref
    if ca is not None:
        got = await state.kube.secret_values(namespace, ca.name, [ca.key])
        problem = check_ca_bundle((got or {}).get(ca.key, b""), ca.key)
        if problem:
            problems.append(
                Problem(
                    "InvalidTLSSecret",
                    f"Secret {namespace}/{ca.name} (spec.media.tls.clientCASecretRef): {problem}",
                    stalled=True,
                )
            )
    if problems:
        raise DependencyError(problems)
    return checked.digest


async def _check_tokens(state: OperatorState, namespace: str, spec: VoiceDeploymentSpec) -> None:
    """Each enabled bearer token is usable (the services would refuse or be guessable with an
    empty or short one), or DependencyError naming the Secret, key and field, never the value."""
    problems = []
    for field, ref in token_refs(spec):
        values = await state.kube.secret_values(namespace, ref.name, [ref.key])
        if values is None:  # deleted since it was found: the next attempt says so
            problems.append(Problem("SecretNotFound", f"Secret {namespace}/{ref.name} gone", True))
            continue
        problem = token_problem(values.get(ref.key, b""))
        if problem:
            problems.append(
                Problem(
                    "InvalidTokenSecret",
                    f"Secret {namespace}/{ref.name} key {ref.key!r} ({field}) is no usable "
                    f"bearer token: {problem}",
                    stalled=True,
                )
            )
    if problems:
        raise DependencyError(problems)


async def _document(
    state: OperatorState, kind: str, namespace: str, name: str, config_map: str, field: str
) -> tuple[dict[str, str], dict[str, Any]] | Problem:
    obj, annotations = await asyncio.gather(
        state.kube.get_custom(kind, namespace, name),
        state.kube.get_config_map(namespace, config_map),
    )
    if obj is None:
        return Problem(f"{kind}NotFound", f"{kind} {namespace}/{name} ({field}) not found", True)
    if annotations is not None and naming.CONTENT_HASH in annotations:
        return annotations, obj
    status = obj.get("status") or {}
    generation = int((obj.get("metadata") or {}).get("generation") or 0)
    processed = int(status.get("observedGeneration") or 0) >= generation > 0
    stalled = next((c for c in status.get("conditions") or [] if c.get("type") == "Stalled"), None)
    if processed and stalled is not None and stalled.get("status") == "True":
        why = stalled.get("message") or stalled.get("reason") or "invalid"
        # A missing Secret stays the reason: that is what the user has to create.
        reason = (
            "SecretNotFound" if stalled.get("reason") == "SecretNotFound" else f"{kind}NotReady"
        )
        return Problem(reason, f"{kind} {namespace}/{name} has no valid version yet: {why}", True)
    return Problem(
        f"{kind}Pending", f"{kind} {namespace}/{name} is not rendered yet", stalled=False
    )


async def _dialog(state: OperatorState, namespace: str, name: str) -> ServedDialog | Problem:
    config_map = naming.dialog_config_map(name)
    got = await _document(state, "Dialog", namespace, name, config_map, "spec.dialogs")
    if isinstance(got, Problem):
        return got
    annotations, obj = got
    settings = (obj.get("spec") or {}).get("settings") or {}
    language = str(settings.get("language") or "en")
    return ServedDialog(name, config_map, annotations[naming.CONTENT_HASH], language)


def language_problems(spec: VoiceDeploymentSpec, dialogs: Sequence[ServedDialog]) -> list[Problem]:
    """Dialogs in a language the speech model cannot recognise: the bundled tiny.en knows only
    English (the speech pods would otherwise hear English in every call of such a Dialog). A
    model given by path is not known here: the speech pods check it themselves."""
    speech = spec.speech
    if speech.model is not None or speech.model_name != "tiny.en":
        return []
    return [
        Problem(
            "LanguageNotSupported",
            f"Dialog {d.name} has settings.language {d.language!r}, but spec.speech.modelName "
            "tiny.en is English-only: set spec.speech.modelName: base (multilingual)",
            stalled=True,
        )
        for d in dialogs
        # A BCP 47 tag counts as its language (en-GB is English).
        if d.language.strip().replace("_", "-").split("-", 1)[0].lower() != "en"
    ]


async def _integration(
    state: OperatorState, namespace: str, name: str
) -> ServedIntegration | Problem:
    config_map = naming.integration_config_map(name)
    got = await _document(state, "Integration", namespace, name, config_map, "spec.integrations")
    if isinstance(got, Problem):
        return got
    annotations, _ = got
    try:
        mounts = tuple(
            SecretMount.from_json(m)
            for m in json.loads(annotations.get(naming.SECRET_MOUNTS, "[]"))
        )
    except (ValueError, KeyError, TypeError):
        return Problem(
            "IntegrationPending",
            f"ConfigMap {namespace}/{config_map} has no readable {naming.SECRET_MOUNTS}",
            stalled=False,
        )
    return ServedIntegration(name, config_map, annotations[naming.CONTENT_HASH], mounts)
