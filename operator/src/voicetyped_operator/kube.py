"""The operator's API calls (lightkube, async), and how their failures are classified.

Children are written with server-side apply (one field manager, ``force``): re-applying an
unchanged object is a no-op on the server, so reconciling is idempotent and cheap. Failures
become kopf errors with our own delays: transient ones (connection, timeouts, 409, 429,
5xx) a :class:`kopf.TemporaryError` with capped exponential backoff, a 422 from the API
server (the spec produced an object it refuses) a :class:`Rejected` naming the object.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import ConfigMap, Pod, Secret
from lightkube.types import PatchType

from voicetyped_operator import naming
from voicetyped_operator.render import Child, ChildKind

VoiceDeployment = create_namespaced_resource(
    naming.GROUP, "v1alpha1", "VoiceDeployment", "voicedeployments"
)
Dialog = create_namespaced_resource(naming.GROUP, "v1alpha1", "Dialog", "dialogs")
Integration = create_namespaced_resource(naming.GROUP, "v1alpha1", "Integration", "integrations")
T = TypeVar("T")
CUSTOM = {"VoiceDeployment": VoiceDeployment, "Dialog": Dialog, "Integration": Integration}


class Rejected(Exception):  # noqa: N818  (it is the API server's answer, not our error)
    """The API server refused an object (422 Invalid, 403 Forbidden...): not transient."""

    def __init__(self, what: str, code: int, message: str) -> None:
        self.what = what
        self.code = code
        super().__init__(f"{what}: {message}")


class Transient(Exception):  # noqa: N818
    """A failure worth retrying (network, conflicts, throttling, server errors)."""


TRANSIENT_CODES = {408, 409, 429, 500, 502, 503, 504}


def describe(kind: str, namespace: str, name: str) -> str:
    return f"{kind} {namespace}/{name}"


def classify(error: BaseException, what: str) -> Exception:
    """A lightkube/httpx failure as :class:`Transient` or :class:`Rejected`."""
    if isinstance(error, ApiError):
        code = int(error.status.code or 0)
        message = error.status.message or str(error)
        if code in TRANSIENT_CODES or code == 0:
            return Transient(f"{what}: {code} {message}")
        return Rejected(what, code, message)
    if isinstance(error, httpx2.HTTPError | OSError | asyncio.TimeoutError):
        return Transient(f"{what}: {type(error).__name__}: {error}")
    return error if isinstance(error, Exception) else Exception(str(error))


async def attempt(request: Awaitable[T], what: str) -> tuple[T | None, bool]:
    """Await an API call: ``(result, True)``, ``(None, False)`` when the object does not
    exist (404), any other failure classified (:func:`classify`)."""
    try:
        return await request, True
    except ApiError as exc:
        if exc.status.code == 404:
            return None, False
        raise classify(exc, what) from exc
    except Exception as exc:
        raise classify(exc, what) from exc


@dataclass
class Applied:
    kind: str
    name: str
    generation: int | None
    resource_version: str
    status: dict[str, Any] | None


class Kube:
    """One lightkube client shared by every handler."""

    def __init__(self, client: AsyncClient, field_manager: str, concurrency: int) -> None:
        self.client = client
        self.field_manager = field_manager
        self.limit = asyncio.Semaphore(concurrency)

    async def close(self) -> None:
        await self.client.close()

    async def apply(self, obj: Child) -> Applied:
        kind = type(obj).__name__
        meta = obj.metadata
        assert meta is not None and meta.name and meta.namespace
        what = describe(kind, meta.namespace, meta.name)
        async with self.limit:
            try:
                result = await self.client.patch(
                    type(obj),
                    meta.name,
                    obj.to_dict(),
                    namespace=meta.namespace,
                    patch_type=PatchType.APPLY,
                    field_manager=self.field_manager,
                    force=True,
                )
            except Exception as exc:
                raise classify(exc, what) from exc
        rmeta = result.metadata
        assert rmeta is not None
        raw_status = getattr(result, "status", None)
        status: dict[str, Any] | None = None
        if raw_status is not None and hasattr(raw_status, "to_dict"):
            status = raw_status.to_dict()
        return Applied(kind, meta.name, rmeta.generation, rmeta.resourceVersion or "", status)

    async def apply_all(self, objects: Iterable[Child]) -> list[Applied]:
        """Apply concurrently (bounded); the first refusal wins over transient errors."""
        results = await asyncio.gather(*(self.apply(o) for o in objects), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if isinstance(error, Rejected):
                raise error
        if errors:
            raise errors[0]
        return [r for r in results if isinstance(r, Applied)]

    async def delete(self, kind: ChildKind, namespace: str, name: str) -> bool:
        """Delete if present; False when it was already gone."""
        what = describe(kind.__name__, namespace, name)
        async with self.limit:
            _, found = await attempt(self.client.delete(kind, name, namespace=namespace), what)
        return found

    async def get_custom(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A voicetyped.io object as a dict, or None when it does not exist."""
        what = describe(kind, namespace, name)
        obj, _ = await attempt(self.client.get(CUSTOM[kind], name, namespace=namespace), what)
        if obj is None:
            return None
        result: dict[str, Any] = obj.to_dict()  # type: ignore[no-untyped-call]
        return result

    async def get_config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's annotations, or None when it does not exist."""
        what = describe("ConfigMap", namespace, name)
        obj, _ = await attempt(self.client.get(ConfigMap, name, namespace=namespace), what)
        if obj is None:
            return None
        meta = obj.metadata
        return dict(meta.annotations or {}) if meta is not None else {}

    async def secret_keys(self, namespace: str, name: str) -> set[str] | None:
        """The keys of a Secret (never its values), or None when it does not exist.

        A plain GET by name: the operator's RBAC has ``get`` on Secrets, not list/watch.
        """
        what = describe("Secret", namespace, name)
        obj, _ = await attempt(self.client.get(Secret, name, namespace=namespace), what)
        if obj is None:
            return None
        return set(obj.data or {}) | set(obj.stringData or {})

    async def secret_values(
        self, namespace: str, name: str, keys: Iterable[str]
    ) -> dict[str, bytes] | None:
        """The decoded values of ``keys`` of a Secret (those it has), or None when it does not
        exist. Only for checks (the media TLS certificate): never logged, stored or reported."""
        what = describe("Secret", namespace, name)
        obj, _ = await attempt(self.client.get(Secret, name, namespace=namespace), what)
        if obj is None:
            return None
        data = obj.data or {}
        out: dict[str, bytes] = {}
        for key in keys:
            if key in data:
                try:
                    out[key] = base64.b64decode(data[key], validate=True)
                except ValueError:
                    out[key] = b""
        return out

    async def pod_ips(self, namespace: str, labels: Mapping[str, str]) -> dict[str, str]:
        """Running pods with these labels: name -> pod IP (the trunk status reads)."""
        what = describe("Pod", namespace, ",".join(f"{k}={v}" for k, v in labels.items()))
        out: dict[str, str] = {}
        try:
            async for pod in self.client.list(Pod, namespace=namespace, labels=dict(labels)):
                status, meta = pod.status, pod.metadata
                if status and status.phase == "Running" and status.podIP and meta and meta.name:
                    out[meta.name] = status.podIP
        except Exception as exc:
            raise classify(exc, what) from exc
        return out

    async def patch_status(
        self, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        what = describe(kind, namespace, name) + " status"
        resource = CUSTOM[kind]
        # Deleted meanwhile (404): nothing to report on.
        await attempt(
            self.client.patch(
                resource.Status,
                name,
                {"status": dict(status)},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            ),
            what,
        )

    async def annotate(
        self, kind: str, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> bool:
        """Set annotations on a voicetyped.io object; False when it no longer exists."""
        what = describe(kind, namespace, name)
        _, found = await attempt(
            self.client.patch(
                CUSTOM[kind],
                name,
                {"metadata": {"annotations": dict(annotations)}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            ),
            what,
        )
        return found
