"""The LLM client behind the dialog ``llm`` action: one OpenAI chat-completions call.

The engine emits ``AskLlm(key, request, deadline_ms)`` with an already rendered
request (``mode``, ``prompt``, ``input``, ``labels``, ``slots``);
:meth:`LlmClient.ask` turns it into a single ``POST {base_url}/chat/completions``
and the reply into an :class:`LlmAnswer`. It never raises: a timeout, an HTTP
error, an unreachable server or a reply that breaks the contract all come back
as ``ok=False`` with an ``error_code`` the dialog can branch on (``timeout``,
``http_<status>``, ``unavailable``, ``invalid_output``, ``invalid_request``).

Hand-written on httpx instead of the official ``openai`` SDK: the SDK is a large
dependency (its own retry/backoff policy, pydantic models for the whole API,
streaming, files, ...) for what is here one POST with one JSON body and one
field read back, and its automatic retries would fight the strict per-call
deadline the dialog needs. Any OpenAI-compatible server (vLLM, llama.cpp,
Ollama, OpenAI itself) speaks this much of the schema.

The API key (``api_key_file``) is read once and only ever goes into the
``Authorization`` header: error messages and logs are redacted of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from pydantic import JsonValue
from voicetyped_specs.dialog.model import LlmSettings

from voicetyped_runtime.engine_io import LlmAnswer

log = logging.getLogger(__name__)

CLASSIFY_MAX_TOKENS = 64
EXTRACT_MAX_TOKENS_BASE = 64
EXTRACT_MAX_TOKENS_PER_SLOT = 64
EXTRACT_MAX_TOKENS_CAP = 1024
_EXCERPT = 80  # longest piece of model output quoted in an error message

_FENCE = re.compile(r"^```[A-Za-z]*[ \t]*\n?(.*?)\n?[ \t]*```$", re.DOTALL)
_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: header-safe


class _LlmError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


class LlmClient:
    """Classify or extract with an OpenAI-compatible chat endpoint (one call per ask)."""

    def __init__(self, settings: LlmSettings, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._http = http
        self._url = settings.base_url.rstrip("/") + "/chat/completions"
        self._api_key = _read_api_key(settings.api_key_file) if settings.api_key_file else ""

    async def ask(self, key: str, request: Mapping[str, Any], timeout_s: float) -> LlmAnswer:
        """One answer for one request, within ``timeout_s`` overall; never raises."""
        try:
            if timeout_s <= 0:
                raise _LlmError("timeout", "no time left for the LLM request")
            answer = await self._ask(key, request, timeout_s)
        except _LlmError as error:
            message = self._redact(error.message)
            log.warning(
                "llm request failed",
                extra={"request_key": key, "error_code": error.code, "detail": message},
            )
            return LlmAnswer(key, ok=False, error_code=error.code, error_message=message)
        except Exception as exc:  # a bug here must not take the call down
            log.exception("llm client error", extra={"request_key": key})
            return LlmAnswer(key, ok=False, error_code="internal", error_message=type(exc).__name__)
        return answer

    async def _ask(self, key: str, request: Mapping[str, Any], timeout_s: float) -> LlmAnswer:
        mode, prompt, text, labels, slots = _validated(request)
        body: dict[str, Any] = {
            "model": self._settings.model,
            "messages": [
                {"role": "system", "content": _system_message(mode, prompt, labels, slots)},
                {"role": "user", "content": text},
            ],
            "temperature": 0,
            "max_tokens": _max_tokens(mode, slots),
            "response_format": {"type": "json_object"},
        }
        headers = {"Accept": "application/json", "X-Request-Id": key}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._http.post(
                    self._url, json=body, headers=headers, timeout=httpx.Timeout(timeout_s)
                )
        except (TimeoutError, httpx.TimeoutException):
            raise _LlmError("timeout", f"no answer within {timeout_s:g} s") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            reason = f"LLM endpoint unreachable ({type(exc).__name__})"
            raise _LlmError("unavailable", reason) from None
        if response.status_code != 200:
            raise _LlmError(
                f"http_{response.status_code}",
                f"LLM endpoint answered HTTP {response.status_code}{_error_detail(response)}",
            )
        reply = _reply_object(response)
        if mode == "classify":
            return LlmAnswer(key, ok=True, label=_label(reply, labels))
        return LlmAnswer(key, ok=True, slots=_slots(reply, slots))

    def _redact(self, message: str) -> str:
        return message.replace(self._api_key, "***") if self._api_key else message


# ---- request ----------------------------------------------------------------


def _read_api_key(path: str) -> str:
    """The key in ``path``, stripped; errors name the file, never its content."""
    key = Path(path).read_text(encoding="utf-8", errors="replace").strip()
    if not key:
        raise ValueError(f"LLM API key file {path} is empty")
    if not _KEY_CHARS.match(key):
        raise ValueError(f"LLM API key file {path} holds characters not allowed in a header")
    return key


def _validated(
    request: Mapping[str, Any],
) -> tuple[str, str, str, list[str], dict[str, str]]:
    mode = request.get("mode")
    prompt = request.get("prompt", "")
    text = request.get("input", "")
    labels = request.get("labels") or []
    slots = request.get("slots") or {}
    if mode not in ("classify", "extract"):
        raise _LlmError("invalid_request", f"unknown mode {str(mode)[:20]!r}")
    if not isinstance(prompt, str) or not isinstance(text, str):
        raise _LlmError("invalid_request", "prompt and input must be strings")
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise _LlmError("invalid_request", "labels must be a list of non-empty strings")
    if not isinstance(slots, Mapping) or not all(isinstance(k, str) and k for k in slots):
        raise _LlmError("invalid_request", "slots must map names to descriptions")
    if mode == "classify" and not labels:
        raise _LlmError("invalid_request", "classify needs labels")
    if mode == "extract" and not slots:
        raise _LlmError("invalid_request", "extract needs slots")
    return mode, prompt, text, list(labels), {k: str(v) for k, v in slots.items()}


def _system_message(mode: str, prompt: str, labels: list[str], slots: dict[str, str]) -> str:
    head = prompt.strip() + "\n\n" if prompt.strip() else ""
    if mode == "classify":
        choices = ", ".join(json.dumps(label) for label in labels)
        return (
            f"{head}Classify the user's message into exactly one of these labels: {choices}.\n"
            'Reply with a JSON object and nothing else: {"label": "<one of the labels>"}. '
            "The label must be copied exactly from the list."
        )
    fields = "\n".join(f"- {json.dumps(name)}: {desc}" for name, desc in slots.items())
    shape = ", ".join(f"{json.dumps(name)}: <string or null>" for name in slots)
    return (
        f"{head}Extract these fields from the user's message:\n{fields}\n"
        f'Reply with a JSON object and nothing else: {{"slots": {{{shape}}}}}. '
        "Use null for a field the message does not state; do not guess."
    )


def _max_tokens(mode: str, slots: dict[str, str]) -> int:
    if mode == "classify":
        return CLASSIFY_MAX_TOKENS
    wanted = EXTRACT_MAX_TOKENS_BASE + EXTRACT_MAX_TOKENS_PER_SLOT * len(slots)
    return min(EXTRACT_MAX_TOKENS_CAP, wanted)


# ---- response ---------------------------------------------------------------


def _error_detail(response: httpx.Response) -> str:
    """``: <message>`` from an OpenAI-style error body, if there is one (short)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return f": {_excerpt(message)}" if isinstance(message, str) and message else ""


def _reply_object(response: httpx.Response) -> dict[str, Any]:
    """The JSON object in ``choices[0].message.content``."""
    try:
        body = response.json()
    except ValueError:
        raise _LlmError("invalid_output", "response body is not JSON") from None
    choices = body.get("choices") if isinstance(body, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise _LlmError("invalid_output", "response has no choices[0].message.content")
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        reply = json.loads(text)
    except ValueError:
        cut = isinstance(choice, dict) and choice.get("finish_reason") == "length"
        reason = "reply cut off at max_tokens" if cut else "reply is not JSON"
        raise _LlmError("invalid_output", f"{reason}: {_excerpt(text)}") from None
    if not isinstance(reply, dict):
        raise _LlmError("invalid_output", f"reply is not a JSON object: {_excerpt(text)}")
    return reply


def _label(reply: dict[str, Any], labels: list[str]) -> str:
    value = reply.get("label")
    if not isinstance(value, str):
        raise _LlmError("invalid_output", 'reply has no string "label"')
    by_norm = {_norm(label): label for label in labels}
    label = by_norm.get(_norm(value))
    if label is None:
        raise _LlmError("invalid_output", f"label {_excerpt(value)!r} is not one of the labels")
    return label


def _slots(reply: dict[str, Any], names: dict[str, str]) -> dict[str, JsonValue]:
    nested = reply.get("slots")
    source: dict[str, Any] = nested if isinstance(nested, dict) else reply
    by_norm = {_norm(k): v for k, v in source.items() if isinstance(k, str)}
    out: dict[str, JsonValue] = {}
    for name in names:
        value = source[name] if name in source else by_norm.get(_norm(name))
        out[name] = _slot_text(value)
    return out


def _slot_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT else flat[: _EXCERPT - 1] + "…"
