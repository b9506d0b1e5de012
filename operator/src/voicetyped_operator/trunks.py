"""Each media trunk's registration, read from the media pods, as a status condition.

One condition per trunk, of type ``TrunkRegistered-<trunk>`` (e.g.
``TrunkRegistered-carrier-a``), rather than one ``TrunkRegistered`` naming trunks in its
message: status conditions are a list map keyed by ``type`` (one entry per type), so only a
type per trunk lets each have its own status and transition time, and
``kubectl wait --for=condition=TrunkRegistered-carrier-a`` works. The type is a valid
metav1.Condition type (trunk names are DNS labels). kstatus (Argo CD's and Flux's health,
``kubectl wait --for=condition=Ready``) reads only ``Ready``, ``Reconciling`` and
``Stalled``: a trunk that is not registered leaves them alone, which is what it means (the
deployment serves every other caller), and shows up as its own ``False`` condition.

The status is ``Unknown`` until a media pod has reported the trunk, ``False`` when any
reporting pod is not registered (reason ``NotRegistered``, the pod, registrar and its last
error in the message), ``True`` when every reporting pod is. The reports come from each
media pod's ``GET /v1/trunks`` (``{"trunks": [{"name", "registered", "registrar",
"last_error", ...}]}``, or a bare list), read by :func:`poll` in a loop of the operator's own
(not ``@kopf.timer``: kopf would put a finalizer on every VoiceDeployment, see
``handlers.resync``). Reading and condition building are pure: :func:`parse_report`,
:func:`trunk_conditions`, :func:`sync`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx2

from voicetyped_operator import conditions
from voicetyped_operator.models.status import Condition

PREFIX = "TrunkRegistered-"
log = logging.getLogger(__name__)
MAX_ERROR = 300
"""Characters of a pod's last_error kept in a message (it is the registrar's answer)."""


@dataclass(frozen=True)
class TrunkReport:
    """One trunk as one media pod reports it."""

    name: str
    registered: bool
    registrar: str = ""
    last_error: str = ""


def condition_type(trunk: str) -> str:
    return f"{PREFIX}{trunk}"


def is_trunk_condition(kind: str) -> bool:
    return kind.startswith(PREFIX)


def parse_report(body: Any) -> list[TrunkReport] | None:
    """A ``GET /v1/trunks`` answer; None when it is not one (an older gateway, an error)."""
    items = body.get("trunks") if isinstance(body, Mapping) else body
    if not isinstance(items, list):
        return None
    out = []
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            return None
        if not isinstance(item.get("registered"), bool):
            return None
        out.append(
            TrunkReport(
                name=item["name"],
                registered=item["registered"],
                registrar=str(item.get("registrar") or ""),
                last_error=str(item.get("last_error") or "")[:MAX_ERROR],
            )
        )
    return out


def _state(trunk: str, reports: Mapping[str, Sequence[TrunkReport] | None]) -> conditions.State:
    seen = {
        pod: next((r for r in found if r.name == trunk), None)
        for pod, found in sorted(reports.items())
        if found is not None
    }
    heard = {pod: r for pod, r in seen.items() if r is not None}
    if not heard:
        return conditions.State(
            "Unknown", "NoReport", f"trunk {trunk}: no media pod has reported it yet"
        )
    failing = {pod: r for pod, r in heard.items() if not r.registered}
    if failing:
        details = "; ".join(
            f"pod {pod}: registrar {r.registrar or '?'}: {r.last_error or 'not registered yet'}"
            for pod, r in failing.items()
        )
        return conditions.State(
            "False",
            "NotRegistered",
            f"trunk {trunk} not registered on {len(failing)}/{len(heard)} media pods ({details})",
        )
    registrars = sorted({r.registrar for r in heard.values() if r.registrar})
    return conditions.State(
        "True",
        "Registered",
        f"trunk {trunk} registered with {', '.join(registrars) or 'its registrar'} "
        f"on {len(heard)}/{len(heard)} media pods",
    )


def trunk_conditions(
    trunks: Sequence[str],
    reports: Mapping[str, Sequence[TrunkReport] | None],
    previous: Sequence[Condition],
    generation: int,
) -> list[Condition]:
    """``TrunkRegistered-<trunk>`` for each trunk from every pod's report (pod -> its trunks,
    None: the pod did not answer), keeping transition times that did not flip."""
    return [
        conditions.condition(previous, generation, condition_type(t), _state(t, reports))
        for t in trunks
    ]


def sync(previous: Sequence[Condition], trunks: Sequence[str], generation: int) -> list[Condition]:
    """The trunk conditions for the spec's trunks: those already reported kept, a new trunk
    ``Unknown``, a removed trunk's dropped."""
    out = []
    for trunk in trunks:
        found = conditions.find(previous, condition_type(trunk))
        out.append(
            found
            if found is not None
            else conditions.condition(
                previous, generation, condition_type(trunk), _state(trunk, {})
            )
        )
    return out


def replace(current: Sequence[Condition], trunk_conds: Sequence[Condition]) -> list[Condition]:
    """``current`` with its trunk conditions replaced by ``trunk_conds``, others untouched."""
    return [c for c in current if not is_trunk_condition(c.type)] + list(trunk_conds)


async def read_pod(client: httpx2.AsyncClient, ip: str, port: int) -> list[TrunkReport] | None:
    """One media pod's ``GET /v1/trunks``; None when it does not answer usefully."""
    host = f"[{ip}]" if ":" in ip else ip
    try:
        response = await client.get(f"http://{host}:{port}/v1/trunks")
    except (TimeoutError, httpx2.HTTPError, OSError) as exc:
        log.debug("GET /v1/trunks on %s: %s", ip, exc)
        return None
    if response.status_code != 200:
        return None
    try:
        return parse_report(response.json())
    except ValueError:
        return None
