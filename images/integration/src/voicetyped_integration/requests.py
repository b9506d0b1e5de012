"""From an operation and a payload to an HTTP request, and from the response to a result.

Templating (:func:`build_request`), ``{field}`` being a payload field:

* **path**: every ``{field}`` is replaced by the field's value as text,
  URL-encoded as one path segment (``/`` becomes ``%2F``). The value must be
  a non-empty scalar (string, number, boolean); ``.`` and ``..`` are refused
  (they would climb the URL's path).
* **query**: same substitution, the whole value then encoded by httpx. A
  missing or null field is an error even when the whole value is ``{field}``
  (there are no optional query parameters: make two operations instead).
* **headers**: added as written (not templated).
* **body**: with a ``body`` template, strings that are exactly ``{field}``
  take the field's value with its JSON type (objects and lists too); other
  strings get the text substitution; object keys are kept as written. Without
  one, POST/PUT/PATCH send the payload fields not used in the path or query as
  a JSON object; GET and DELETE send no body.

Scalars become text as JSON writes them: ``true``/``false``, ``42``, ``2.5``.
Errors are :class:`PayloadError`, naming the operation and the field, never
a value (payloads hold personal data).

:func:`extract` reads the result: the whole JSON answer, or the fields the
operation's ``extract`` names by dotted path (``delivery.eta_days``,
``items[0].id``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import NoReturn
from urllib.parse import quote

import httpx
from pydantic import JsonValue
from voicetyped_specs.integration import Operation

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class PayloadError(ValueError):
    """The payload cannot fill the operation's request (a field is missing or of the wrong kind)."""


class InvalidResponse(ValueError):  # noqa: N818 (the name the executor expects)
    """The backend's answer is not the JSON the operation expects."""


# ---- the request ------------------------------------------------------------------


class _Renderer:
    def __init__(self, operation_name: str, payload: Mapping[str, JsonValue]) -> None:
        self.operation_name = operation_name
        self.payload = payload

    def fail(self, field: str, problem: str) -> NoReturn:
        raise PayloadError(f"operation {self.operation_name!r}: payload field {field!r} {problem}")

    def value(self, field: str, where: str) -> JsonValue:
        if field not in self.payload:
            self.fail(field, f"is missing (the {where} uses {{{field}}})")
        return self.payload[field]

    def text(self, field: str, where: str) -> str:
        value = self.value(field, where)
        if value is None:
            self.fail(field, f"is null (the {where} needs a value)")
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return value
        if isinstance(value, int | float):
            try:
                return json.dumps(value, allow_nan=False)
            except ValueError:
                self.fail(field, f"is not a finite number (the {where} needs one)")
        self.fail(field, f"is not a string, number or boolean (the {where} needs one)")

    def substitute(self, template: str, where: str) -> str:
        return _PLACEHOLDER.sub(lambda m: self.text(m.group(1), where), template)

    def path(self, template: str) -> str:
        def segment(match: re.Match[str]) -> str:
            field = match.group(1)
            text = self.text(field, "path")
            if text == "":
                self.fail(field, "is empty (the path needs a value)")
            if text in (".", ".."):
                self.fail(field, "is '.' or '..', which cannot be a path segment")
            return quote(text, safe="")

        # A value is never '', '.' or '..', so no value can make a dot segment (with the
        # template's own text either); httpx would resolve one, climbing the path.
        return _PLACEHOLDER.sub(segment, template)

    def body(self, template: JsonValue) -> JsonValue:
        if isinstance(template, str):
            whole = _PLACEHOLDER.fullmatch(template)
            if whole is not None:
                return self.value(whole.group(1), "body")
            return self.substitute(template, "body")
        if isinstance(template, dict):
            return {key: self.body(item) for key, item in template.items()}
        if isinstance(template, list):
            return [self.body(item) for item in template]
        return template


def build_request(
    client: httpx.AsyncClient,
    operation_name: str,
    operation: Operation,
    payload: Mapping[str, JsonValue],
    idempotency_key: str | None,
) -> httpx.Request:
    """The request for one call of ``operation`` (relative to the client's base URL).

    Headers: ``Accept: application/json`` (an operation header may override
    it), the operation's headers, ``Idempotency-Key`` when a key is given. No
    credentials (the authenticator adds them) and no timeout: set
    ``request.extensions["timeout"]`` before sending.
    """
    render = _Renderer(operation_name, payload)
    url = httpx.URL(render.path(operation.path))
    if operation.query:
        params = {
            name: render.substitute(template, f"query parameter {name!r}")
            for name, template in operation.query.items()
        }
        url = url.copy_merge_params(params)  # keeps a query written in the path
    headers = httpx.Headers({"Accept": "application/json"})
    for name, value in operation.headers.items():
        headers[name] = value
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key

    body: JsonValue
    if operation.body is not None:
        body = render.body(operation.body)
    elif operation.method in _BODY_METHODS:
        used = operation.placeholders()
        body = {name: value for name, value in payload.items() if name not in used}
    else:
        return client.build_request(operation.method, url, headers=headers)
    try:
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise PayloadError(
            f"operation {operation_name!r}: the payload holds a number JSON cannot carry "
            "(NaN or infinity)"
        ) from None
    if "Content-Type" not in headers:
        headers["Content-Type"] = "application/json"
    return client.build_request(
        operation.method, url, headers=headers, content=content.encode("utf-8")
    )


# ---- the response -------------------------------------------------------------------


_PATH = re.compile(r"(?:[^.\[\]]+|\[\d+\])(?:\.[^.\[\]]+|\[\d+\])*")
_STEP = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def parse_path(path: str) -> tuple[str | int, ...]:
    """``"items[0].id"`` -> ``("items", 0, "id")``. Raises ValueError for a malformed path.

    Keys are separated by dots and may hold any character but ``.``, ``[`` and
    ``]``; ``[n]`` indexes a list (from 0); ``[0].id`` starts at a list answer.
    """
    if _PATH.fullmatch(path) is None:
        raise ValueError(f"malformed extract path {path!r}")
    return tuple(
        m.group(1) if m.group(1) is not None else int(m.group(2)) for m in _STEP.finditer(path)
    )


class _Missing(InvalidResponse):
    """Nothing at the path (the one failure an optional field's default covers)."""


def _lookup(document: JsonValue, path: str) -> JsonValue:
    try:
        steps = parse_path(path)
    except ValueError as exc:
        raise InvalidResponse(str(exc)) from None
    value = document
    walked = ""
    for step in steps:
        if isinstance(step, int):
            walked += f"[{step}]"
            if not isinstance(value, list) or step >= len(value):
                raise _Missing(f"response has no {path!r} (nothing at {walked!r})")
            value = value[step]
        else:
            walked = f"{walked}.{step}" if walked else step
            if not isinstance(value, dict) or step not in value:
                raise _Missing(f"response has no {path!r} (nothing at {walked!r})")
            value = value[step]
    return value


def _not_json(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not JSON")


def extract(operation: Operation, response: httpx.Response) -> JsonValue:
    """The call's result from a (read) response.

    No body (204, or empty): None when the operation extracts nothing, else
    :class:`InvalidResponse`. Otherwise the JSON answer (InvalidResponse when
    it is not JSON), whole when ``operation.extract`` is empty, else
    ``{name: value at path}``; a path that is not in the answer is an
    InvalidResponse naming it (a present ``null`` is a value), unless the field is optional
    (``extractDefaults``): then it takes its default.
    """
    content = response.content
    if response.status_code == 204 or not content.strip():
        if not operation.extract:
            return None
        raise InvalidResponse(
            f"response (status {response.status_code}) has no body, "
            f"but {sorted(operation.extract.values())} are to be extracted"
        )
    try:
        document: JsonValue = json.loads(content, parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise InvalidResponse(
            f"response (status {response.status_code}, "
            f"content-type {response.headers.get('Content-Type', 'none')!r}) is not valid JSON"
        ) from None
    if not operation.extract:
        return document
    return {
        name: _field(operation, document, name, path) for name, path in operation.extract.items()
    }


def _field(operation: Operation, document: JsonValue, name: str, path: str) -> JsonValue:
    """The value at ``path``; for an optional field (``extractDefaults``) missing, its default."""
    try:
        return _lookup(document, path)
    except _Missing:
        if name in operation.extract_defaults:
            return operation.extract_defaults[name]
        raise
