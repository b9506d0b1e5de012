"""Malformed and hostile objects: refused by the schema/CEL, or reported in status.

More than a hundred VoiceDeployments, Dialogs and Integrations with wrong types, huge
strings, inline secrets, unknown states and the like are sent to the API server (with
strict field validation, as kubectl does). Each case says what must happen:

* ``reject``: the API server answers 422 (OpenAPI schema or a CEL rule) or 400 (strict
  decoding: unknown fields) with a message naming the field; nothing is stored;
* ``report``: it is stored, and the operator reports it in status (``Stalled``, the
  reason given, a message naming the problem) without crashing or retrying in a loop.

At the end the operator process is still running and healthy, and a valid object in the
same namespace still becomes Ready.
"""

from __future__ import annotations

import copy
import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from tests.e2e.kube import Kube
    from tests.e2e.operator_support import Operator

pytestmark = pytest.mark.e2e


s = sys.modules["voicetyped_e2e_operator_support"]  # conftest.py loads it, with its fixtures

HUGE = "x" * 100_000
PLURALS = {
    "VoiceDeployment": "voicedeployments",
    "Dialog": "dialogs",
    "Integration": "integrations",
}

VALID_DIALOG = {
    "initial": "greet",
    "states": {
        "greet": {
            "on_enter": [{"play_tts": {"text": "Hello"}}],
            "transitions": [{"event": "speech", "target": "bye"}],
        },
        "bye": {"on_enter": [{"play_tts": {"text": "Bye"}}], "terminal": True},
    },
}
VALID_VD = {"dialogs": ["fuzz-ok"], "media": {"allowedSourceCIDRs": ["10.0.0.0/8"]}}
VALID_INTEGRATION = {"baseURL": "http://backend:8080/api", "operations": {"get": {"path": "/x"}}}
BASES = {"VoiceDeployment": VALID_VD, "Dialog": VALID_DIALOG, "Integration": VALID_INTEGRATION}


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    mutate: Callable[[dict[str, Any]], None]
    expect: str  # "reject" or "report"
    says: str  # a substring of the API server's message or of the Stalled condition
    reason: str = ""  # report: the Stalled reason
    name: str = ""  # metadata.name override


def put(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set ``obj[path]`` (dotted; ``metadata.x`` for metadata, else inside spec)."""

    def apply(obj: dict[str, Any]) -> None:
        parts = path.split(".")
        node = obj if parts[0] == "metadata" else obj["spec"]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    return apply


def drop(path: str) -> Callable[[dict[str, Any]], None]:
    def apply(obj: dict[str, Any]) -> None:
        parts = path.split(".")
        node = obj["spec"]
        for part in parts[:-1]:
            node = node[part]
        del node[parts[-1]]

    return apply


def both(*steps: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def apply(obj: dict[str, Any]) -> None:
        for step in steps:
            step(obj)

    return apply


def _vd(id: str, mutate: Callable[[dict[str, Any]], None], says: str, **kw: str) -> Case:
    return Case(id, "VoiceDeployment", mutate, kw.pop("expect", "reject"), says, **kw)


def _dlg(id: str, mutate: Callable[[dict[str, Any]], None], says: str, **kw: str) -> Case:
    return Case(id, "Dialog", mutate, kw.pop("expect", "reject"), says, **kw)


def _int(id: str, mutate: Callable[[dict[str, Any]], None], says: str, **kw: str) -> Case:
    return Case(id, "Integration", mutate, kw.pop("expect", "reject"), says, **kw)


def _greet_transition(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return put("states.greet.transitions", [{"event": "speech", "target": "bye", **fields}])


def _greet_action(action: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return put("states.greet.on_enter", [action])


REPORT = {"expect": "report"}
CASES: list[Case] = [
    # ---- VoiceDeployment: refused by the schema or CEL ----
    _vd("dialogs-string", put("dialogs", "fuzz-ok"), "spec.dialogs"),
    _vd("dialogs-empty", put("dialogs", []), "spec.dialogs"),
    _vd("dialogs-number", put("dialogs", [1]), "spec.dialogs[0]"),
    _vd("dialogs-bad-name", put("dialogs", ["Bad_Name"]), "spec.dialogs[0]"),
    _vd("dialogs-duplicate", put("dialogs", ["fuzz-ok", "fuzz-ok"]), "Duplicate value"),
    _vd("dialogs-huge", put("dialogs", [HUGE]), "spec.dialogs[0]"),
    _vd("media-list", put("media", []), "spec.media"),
    _vd("media-missing", drop("media"), "spec.media"),
    _vd("replicas-string", put("media.replicas", "many"), "spec.media.replicas"),
    _vd("replicas-negative", put("media.replicas", -1), "spec.media.replicas"),
    _vd("replicas-float", put("media.replicas", 1.5), "spec.media.replicas"),
    _vd("replicas-huge", put("media.replicas", 10**12), "spec.media.replicas"),
    _vd("sip-port-range", put("media.sip.port", 70000), "spec.media.sip.port"),
    _vd("sip-transport", put("media.sip.transports", ["sctp"]), "spec.media.sip.transports[0]"),
    _vd("rtp-inverted", put("media.rtp", {"portMin": 30000, "portMax": 20000}), "portMax must"),
    _vd("rtp-low", put("media.rtp", {"portMin": 100, "portMax": 200}), "spec.media.rtp.portMin"),
    _vd("codec-unknown", put("media.codecs", ["mp3"]), "spec.media.codecs[0]"),
    _vd("codecs-empty", put("media.codecs", []), "spec.media.codecs"),
    _vd("cidr-garbage", put("media.allowedSourceCIDRs", ["not-a-cidr"]), "must be CIDRs"),
    _vd("open-sip", put("media.allowedSourceCIDRs", []), "toll fraud"),
    _vd(
        "hostnet-lb",
        both(put("media.hostNetwork", True), put("media.serviceType", "LoadBalancer")),
        "hostNetwork media pods",
    ),
    _vd("service-type", put("media.serviceType", "Public"), "spec.media.serviceType"),
    _vd("image-huge", put("media.image", HUGE), "spec.media.image"),
    _vd("media-dialog-unlisted", put("media.dialog", "other"), "media.dialog must be one of"),
    _vd("route-unlisted", put("media.dialogRoutes", {"100": "other"}), "dialogRoutes must"),
    _vd(
        "autoscaling-range",
        put("media.autoscaling", {"minReplicas": 5, "maxReplicas": 2}),
        "minReplicas must not exceed maxReplicas",
    ),
    _vd("autoscaling-no-max", put("media.autoscaling", {"minReplicas": 1}), "maxReplicas"),
    _vd("drain-zero", put("media.drainSeconds", 0), "spec.media.drainSeconds"),
    _vd(
        "digest-bad-secret",
        put("media.digestAuth", {"secretRef": {"name": "UPPER", "key": "users"}}),
        "spec.media.digestAuth.secretRef.name",
    ),
    _vd("quantity-garbage", put("media.resources.requests", {"cpu": "lots"}), "requests.cpu"),
    _vd("toleration-op", put("media.tolerations", [{"operator": "Maybe"}]), "operator"),
    _vd("node-selector-type", put("media.nodeSelector", {"a": 5}), "spec.media.nodeSelector.a"),
    _vd(
        "gpu-whispercpp",
        put("speech.gpu", {"enabled": True}),
        "gpu.enabled needs backend faster-whisper",
    ),
    _vd(
        "gpu-target-without-gpu",
        put("speech.autoscaling", {"maxReplicas": 3, "targetGPUUtilization": 50}),
        "targetGPUUtilization needs gpu.enabled",
    ),
    _vd(
        "speech-no-target",
        put("speech.autoscaling", {"maxReplicas": 3}),
        "set targetGPUUtilization and/or targetCPUUtilization",
    ),
    _vd("backend-unknown", put("speech.backend", "vosk"), "spec.speech.backend"),
    _vd("gpu-count-zero", put("speech.gpu", {"count": 0}), "spec.speech.gpu.count"),
    _vd("redis-no-ref", put("runtime.store", {"type": "redis"}), "type redis needs"),
    _vd("store-type", put("runtime.store", {"type": "etcd"}), "spec.runtime.store.type"),
    _vd("unknown-field", put("foo", 1), 'unknown field "spec.foo"'),
    _vd("unknown-nested", put("media.bar", 1), 'unknown field "spec.media.bar"'),
    _vd("name-too-long", lambda o: None, "at most 40 characters", name="f" * 41),
    _vd("name-digit", lambda o: None, "DNS labels starting with a letter", name="1fuzz"),
    _vd("netpol-type", put("networkPolicy.enabled", "yes"), "spec.networkPolicy.enabled"),
    _vd("pull-secret-empty", put("imagePullSecrets", [""]), "spec.imagePullSecrets[0]"),
    _vd("integrations-huge", put("integrations", ["i" * 300]), "spec.integrations[0]"),
    _vd("log-level", put("runtime.logLevel", "verbose"), "spec.runtime.logLevel"),
    _vd("console-no-token", put("console.enabled", True), "tokenSecretRef is required when"),
    _vd("console-inline-token", put("console.token", "x"), 'unknown field "spec.console.token"'),
    _vd("console-cidr", put("console.allowedSourceCIDRs", ["lan"]), "must be CIDRs"),
    _vd(
        "webrtc-no-token",
        put("webrtc", {"enabled": True, "allowedSourceCIDRs": ["10.0.0.0/8"]}),
        "tokenSecretRef is required when",
    ),
    _vd(
        "webrtc-no-networks",
        put("webrtc", {"enabled": True, "tokenSecretRef": {"name": "fuzz-secret", "key": "k"}}),
        "list the browsers' networks",
    ),
    _vd("webrtc-dialog-unlisted", put("webrtc.dialog", "other"), "webrtc.dialog must be one of"),
    _vd("webrtc-ttl", put("webrtc.tokenTtlSeconds", 5), "spec.webrtc.tokenTtlSeconds"),
    # ---- VoiceDeployment: stored, reported by the operator ----
    _vd(
        "missing-dialog", put("dialogs", ["nowhere"]), "nowhere", reason="DialogNotFound", **REPORT
    ),
    _vd(
        "missing-integration",
        put("integrations", ["nobody"]),
        "nobody",
        reason="IntegrationNotFound",
        **REPORT,
    ),
    _vd(
        "affinity-unknown",
        put("media.affinity", {"bogus": {}}),
        "spec.media.affinity",
        reason="InvalidSpec",
        **REPORT,
    ),
    _vd(
        "affinity-wrong-type",
        put("speech.affinity", {"nodeAffinity": "everywhere"}),
        "spec.speech.affinity",
        reason="InvalidSpec",
        **REPORT,
    ),
    _vd(
        "digest-missing-secret",
        put("media.digestAuth", {"secretRef": {"name": "no-such-users", "key": "users"}}),
        "no-such-users",
        reason="SecretNotFound",
        **REPORT,
    ),
    _vd(
        "redis-missing-secret",
        put(
            "runtime.store",
            {"type": "redis", "redis": {"urlSecretRef": {"name": "no-redis", "key": "url"}}},
        ),
        "no-redis",
        reason="SecretNotFound",
        **REPORT,
    ),
    _vd(
        "console-missing-secret",
        put("console", {"enabled": True, "tokenSecretRef": {"name": "no-token", "key": "t"}}),
        "(used by spec.console.tokenSecretRef) not found",
        reason="SecretNotFound",
        **REPORT,
    ),
    _vd(
        "console-weak-token",  # fuzz-secret's k is "v"
        put("console", {"enabled": True, "tokenSecretRef": {"name": "fuzz-secret", "key": "k"}}),
        "(spec.console.tokenSecretRef) is no usable bearer token: it is shorter than 16",
        reason="InvalidTokenSecret",
        **REPORT,
    ),
    _vd(
        "requests-over-limits",
        put("runtime.resources", {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
        "must be less than or equal to cpu limit",
        reason="ApplyRejected",
        **REPORT,
    ),
    _vd(
        "toleration-exists-value",
        put("integration.tolerations", [{"key": "k", "operator": "Exists", "value": "v"}]),
        "Deployment",
        reason="ApplyRejected",
        **REPORT,
    ),
    _vd(
        "node-selector-key",
        put("media.nodeSelector", {"not a label!": "v"}),
        "Deployment",
        reason="ApplyRejected",
        **REPORT,
    ),
    # ---- Dialog: refused by the schema or CEL ----
    _dlg("states-list", put("states", []), "spec.states"),
    _dlg("states-empty", put("states", {}), "spec.states"),
    _dlg("initial-unknown", put("initial", "nowhere"), "initial must name one of the states"),
    _dlg(
        "target-unknown",
        _greet_transition(target="nowhere"),
        "every transition target must name one of the states",
    ),
    _dlg(
        "global-target-unknown",
        put("global_transitions", [{"event": "error", "target": "void"}]),
        "every global transition target",
    ),
    _dlg(
        "state-name",
        put("states", {"bad name!": {"terminal": True}, "greet": {"terminal": True}}),
        "keys must match",
    ),
    _dlg(
        "two-actions-in-one",
        _greet_action({"play_tts": {"text": "a"}, "hangup": {}}),
        "must have at most 1 item",
    ),
    _dlg("action-unknown", _greet_action({"dance": {}}), 'unknown field "spec.states.greet'),
    _dlg("text-huge", _greet_action({"play_tts": {"text": HUGE}}), "Too long"),
    _dlg("event-unknown", _greet_transition(event="shout"), "spec.states.greet.transitions[0]"),
    _dlg("spec-name", put("name", "someone-else"), "spec.name must equal metadata.name"),
    _dlg("name-with-dot", lambda o: None, "Dialog names are DNS labels", name="a.b"),
    _dlg(
        "digits-too-many",
        _greet_action({"collect_digits": {"max_digits": 100}}),
        "max_digits",
    ),
    _dlg("threshold", put("settings", {"intent_threshold": 2}), "intent_threshold"),
    _dlg("on-enter-string", put("states.greet.on_enter", "play"), "on_enter"),
    _dlg("reason-code", _greet_action({"hangup": {"reason_code": 500}}), "reason_code"),
    _dlg("vars-list", put("vars", ["a"]), "spec.vars"),
    _dlg("terminal-string", put("states.bye.terminal", "yes"), "terminal"),
    _dlg("timeout-negative", put("settings", {"no_input_timeout_ms": -1}), "no_input_timeout_ms"),
    _dlg("transition-no-event", put("states.greet.transitions", [{"target": "bye"}]), "event"),
    _dlg("intent-key", put("intents", {"bad key": ["hi"]}), "keys must match"),
    _dlg("description-huge", put("description", "d" * 10_000), "spec.description"),
    _dlg("timer-name", _greet_action({"start_timer": {"name": "bad-name", "ms": 5}}), "name"),
    # ---- Dialog: stored, reported by the runtime's validator ----
    _dlg(
        "cel-syntax",
        _greet_transition(condition="digit =="),
        "states.greet.transitions[0].condition",
        reason="InvalidDialog",
        **REPORT,
    ),
    _dlg(
        "undefined-var",
        _greet_transition(condition="vars.nope > 1"),
        "vars.nope",
        reason="InvalidDialog",
        **REPORT,
    ),
    _dlg(
        "unknown-intent",
        _greet_transition(condition='intent == "refund"'),
        "unknown intent 'refund'",
        reason="InvalidDialog",
        **REPORT,
    ),
    _dlg(
        "timer-never-started",
        put("states.greet.transitions", [{"event": "timeout", "timer": "later", "target": "bye"}]),
        "timer 'later' is never started",
        reason="InvalidDialog",
        **REPORT,
    ),
    _dlg(
        "no-way-out",
        put("states.bye.terminal", False),
        "no way out",
        reason="InvalidDialog",
        **REPORT,
    ),
    _dlg(
        "template-unclosed",
        _greet_action({"play_tts": {"text": "Hi {{ caller.id"}}),
        "states.greet.on_enter[0]",
        reason="InvalidDialog",
        **REPORT,
    ),
    _dlg(
        "llm-unconfigured",
        _greet_action({"llm": {"mode": "classify", "prompt": "p", "labels": ["a", "b"]}}),
        "settings.llm",
        reason="InvalidDialog",
        **REPORT,
    ),
    _dlg(
        "digits-min-over-max",
        _greet_action({"collect_digits": {"max_digits": 2, "min_digits": 5}}),
        "min_digits must not exceed max_digits",
        reason="InvalidDialog",
        **REPORT,
    ),
    _dlg(
        "set-var-name",
        _greet_action({"set": {"bad-name": "1"}}),
        "states.greet.on_enter[0]",
        reason="InvalidDialog",
        **REPORT,
    ),
    _dlg(
        "var-name",
        put("vars", {"9lives": 1}),
        "vars",
        reason="InvalidDialog",
        **REPORT,
    ),
    _dlg(
        "transfer-http",
        _greet_action({"transfer": {"target": "http://evil.example"}}),
        "states.greet.on_enter[0]",
        reason="InvalidDialog",
        **REPORT,
    ),
    _dlg(
        "llm-one-label",
        _greet_action({"llm": {"mode": "classify", "prompt": "p", "labels": ["only"]}}),
        "at least two labels",
        reason="InvalidDialog",
        **REPORT,
    ),
    _dlg(
        # Under 1,024 characters, over 1,024 bytes: the Event must be cut by bytes.
        "multibyte-message",
        put(
            "states.greet.transitions",
            [
                {"event": "speech", "condition": f'intent == "{"€" * 100}{i}"', "target": "bye"}
                for i in range(4)
            ],
        ),
        "unknown intent '€€€",
        reason="InvalidDialog",
        **REPORT,
    ),
    # ---- Integration: refused (inline secrets among them) ----
    _int("inline-value", put("auth", {"type": "apiKey", "value": "s3cr3t"}), "inline secrets"),
    _int("inline-token", put("auth", {"type": "none", "token": "t0k"}), "inline secrets"),
    _int("inline-password", put("auth", {"password": "hunter2"}), "inline secrets"),
    _int(
        "inline-client-secret",
        put("auth", {"type": "oauth2", "clientSecret": "cs"}),
        "inline secrets",
    ),
    _int("inline-private-key", put("auth", {"type": "mtls", "privateKey": "k"}), "inline secrets"),
    _int("value-file", put("auth", {"valueFile": "/etc/passwd"}), "file paths are set"),
    _int("client-secret-file", put("auth", {"clientSecretFile": "/x"}), "file paths are set"),
    _int(
        "header-authorization",
        put("operations", {"get": {"path": "/x", "headers": {"Authorization": "Bearer x"}}}),
        "must not carry credentials",
    ),
    _int(
        "header-api-key",
        put("operations", {"get": {"path": "/x", "headers": {"X-API-Key": "k"}}}),
        "must not carry credentials",
    ),
    _int(
        "header-cookie",
        put("operations", {"get": {"path": "/x", "headers": {"cookie": "s=1"}}}),
        "must not carry credentials",
    ),
    _int(
        "query-api-key",
        put("operations", {"get": {"path": "/x", "query": {"api_key": "k"}}}),
        "must not carry credentials",
    ),
    _int(
        "query-token",
        put("operations", {"get": {"path": "/x", "query": {"Token": "t"}}}),
        "must not carry credentials",
    ),
    _int("url-credentials", put("baseURL", "https://user:pass@host/api"), "must not carry"),
    _int("url-scheme", put("baseURL", "ftp://files"), "spec.baseURL"),
    _int("apikey-no-ref", put("auth", {"type": "apiKey", "header": "X-Key"}), "needs secretRef"),
    _int(
        "apikey-header-and-query",
        put(
            "auth",
            {
                "type": "apiKey",
                "header": "X-Key",
                "query": "key",
                "secretRef": {"name": "k", "key": "k"},
            },
        ),
        "exactly one of header or query",
    ),
    _int("oauth2-no-refs", put("auth", {"type": "oauth2"}), "oauth2 auth needs"),
    _int("mtls-no-secret", put("auth", {"type": "mtls"}), "mtls auth needs tlsSecretName"),
    _int(
        "mtls-http",
        put("auth", {"type": "mtls", "tlsSecretName": "client-tls"}),
        "mtls auth needs an https:// baseURL",
    ),
    _int("operations-empty", put("operations", {}), "spec.operations"),
    _int("method", put("operations", {"get": {"path": "/x", "method": "FETCH"}}), "method"),
    _int("retry-attempts", put("retry", {"maxAttempts": 100}), "spec.retry.maxAttempts"),
    _int(
        "breaker-threshold",
        put("circuitBreaker", {"failureRateThreshold": 2}),
        "failureRateThreshold",
    ),
    _int("timeout-zero", put("timeoutMs", 0), "spec.timeoutMs"),
    _int("auth-type", put("auth", {"type": "basic"}), "spec.auth.type"),
    _int("path-huge", put("operations", {"get": {"path": HUGE}}), "Too long"),
    _int("auth-unknown-field", put("auth", {"secret": "x"}), 'unknown field "spec.auth.secret"'),
    _int("operation-key", put("operations", {"bad key": {"path": "/x"}}), "keys must match"),
    _int(
        "secret-ref-name",
        put("auth", {"type": "apiKey", "header": "X", "secretRef": {"name": "Bad", "key": "k"}}),
        "spec.auth.secretRef.name",
    ),
    _int("integration-spec-name", put("name", "other"), "spec.name must equal metadata.name"),
    # ---- Integration: stored, reported ----
    _int(
        "missing-secret",
        put(
            "auth",
            {"type": "apiKey", "header": "X-Key", "secretRef": {"name": "absent-key", "key": "k"}},
        ),
        "absent-key",
        reason="SecretNotFound",
        **REPORT,
    ),
    _int(
        "missing-secret-key",
        put(
            "auth",
            {
                "type": "apiKey",
                "header": "X-Key",
                "secretRef": {"name": "fuzz-secret", "key": "nope"},
            },
        ),
        "has no key 'nope'",
        reason="SecretNotFound",
        **REPORT,
    ),
    _int(
        "missing-ca",
        put("tls", {"caSecretRef": {"name": "no-ca", "key": "ca.crt"}}),
        "no-ca",
        reason="SecretNotFound",
        **REPORT,
    ),
]


def _object(case: Case, index: int) -> dict[str, Any]:
    obj = {
        "apiVersion": "voicetyped.io/v1alpha1",
        "kind": case.kind,
        "metadata": {"name": case.name or f"fuzz-{index}"},
        "spec": copy.deepcopy(BASES[case.kind]),
    }
    case.mutate(obj)
    return obj


def _said(answer: httpx.Response) -> str:
    """The API server's refusal: its message and each cause's field and message."""
    body = answer.json()
    causes = (body.get("details") or {}).get("causes") or []
    return " | ".join(
        [str(body.get("message", ""))]
        + [f"{c.get('field', '')}: {c.get('message', '')}" for c in causes]
    )


def _reported(obj: dict[str, Any] | None, case: Case) -> str | None:
    """The Stalled message when the operator has reported this case for its generation."""
    if obj is None:
        return None
    stalled = s.condition(obj, "Stalled")
    ready = s.condition(obj, "Ready")
    if stalled is None or ready is None:
        return None
    if stalled.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    if stalled["status"] == "True" and ready["status"] == "False":
        return str(stalled.get("reason")) + ": " + str(stalled.get("message"))
    return None


def test_malformed_and_hostile_objects_are_refused_or_reported(
    kube: Kube, namespace: str, operator: Operator, api: httpx.Client
) -> None:
    assert len(CASES) >= 100, len(CASES)
    assert len({c.id for c in CASES}) == len(CASES)
    # What the "valid base" objects need, so that each case has exactly one problem.
    kube.apply(
        [
            {
                "apiVersion": "voicetyped.io/v1alpha1",
                "kind": "Dialog",
                "metadata": {"name": "fuzz-ok"},
                "spec": VALID_DIALOG,
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "fuzz-secret"},
                "stringData": {"k": "v"},
            },
        ],
        namespace,
    )
    s.wait_condition(kube, s.DIALOG, "fuzz-ok", namespace, "Ready")
    problems: list[str] = []
    stored: list[tuple[Case, str]] = []
    for index, case in enumerate(CASES):
        obj = _object(case, index)
        url = f"/apis/voicetyped.io/v1alpha1/namespaces/{namespace}/{PLURALS[case.kind]}"
        answer = api.post(url, json=obj, params={"fieldValidation": "Strict"})
        if case.expect == "reject":
            # 422 Invalid (schema, CEL) or 400 BadRequest (strict decoding: unknown fields).
            if answer.status_code not in (400, 422):
                problems.append(f"{case.id}: expected 400/422, got {answer.status_code}")
                if answer.status_code == 201:
                    stored.append((case, obj["metadata"]["name"]))
                continue
            said = _said(answer)
            if case.says not in said:
                problems.append(f"{case.id}: refused without {case.says!r}: {said[:600]}")
        else:
            if answer.status_code != 201:
                problems.append(f"{case.id}: expected 201, got {answer.status_code} {answer.text}")
                continue
            stored.append((case, obj["metadata"]["name"]))
    # Every stored case is reported with its reason and a message naming the problem.
    deadline = time.monotonic() + 120
    pending = [(c, n) for c, n in stored if c.expect == "report"]
    while pending and time.monotonic() < deadline:
        still = []
        for case, name in pending:
            resource = f"{PLURALS[case.kind]}.v1alpha1.voicetyped.io"
            message = _reported(s.get(kube, resource, name, namespace), case)
            if message is None:
                still.append((case, name))
            elif not message.startswith(f"{case.reason}: ") or case.says not in message:
                problems.append(f"{case.id}: reported as {message[:400]!r}")
        pending = still
        time.sleep(1)
    problems += [f"{c.id}: not reported in status after 120 s" for c, _ in pending]
    assert not problems, "\n".join(problems)
    # ...and with a Warning Event the API server accepted (cut to its 1,024-byte limit; the
    # full text stays in status).
    reported = [(c, n) for c, n in stored if c.expect == "report"]

    def warned(case: Case, name: str) -> dict[str, Any] | None:
        found = [e for e in s.events(kube, namespace, name) if e["type"] == "Warning"]
        return next((e for e in found if e["reason"] == case.reason), None)

    for case, name in reported:
        event = s.wait_for(
            f"the {case.id} Warning Event", functools.partial(warned, case, name), 30
        )
        size = len(event["message"].encode())
        assert size <= 1024, (case.id, size)
        if case.id == "multibyte-message":
            assert event["message"].endswith("(cut: the full text is in status.conditions)")
            resource = f"{PLURALS[case.kind]}.v1alpha1.voicetyped.io"
            full = s.condition(s.get(kube, resource, name, namespace), "Stalled")
            assert full is not None and len(full["message"].encode()) > 1024, full
            assert full["message"].startswith(event["message"].split(" … (cut")[0])
    assert "Failed to post an event" not in operator.tail(2000), operator.tail(2000)
    # Nothing the schema refused was stored.
    names = {
        o["metadata"]["name"]
        for kind in PLURALS.values()
        for o in kube.items(f"{kind}.v1alpha1.voicetyped.io", "-n", namespace)
    }
    refused = {
        _object(c, i)["metadata"]["name"] for i, c in enumerate(CASES) if c.expect == "reject"
    }
    assert not names & refused
    # The operator survived all of it and still works.
    assert operator.alive() and operator.healthy(), operator.tail()
    assert "Traceback" not in operator.tail(400), operator.tail(400)
    kube.apply(
        {
            "apiVersion": "voicetyped.io/v1alpha1",
            "kind": "Dialog",
            "metadata": {"name": "after-fuzz"},
            "spec": VALID_DIALOG,
        },
        namespace,
    )
    s.wait_condition(kube, s.DIALOG, "after-fuzz", namespace, "Ready")
    # Invalid objects are not retried in a hot loop: the generation stays, nothing new to do.
    for case, name in stored:
        resource = f"{PLURALS[case.kind]}.v1alpha1.voicetyped.io"
        obj = s.get(kube, resource, name, namespace)
        assert obj is not None and obj["metadata"]["generation"] == 1, (case.id, obj)
