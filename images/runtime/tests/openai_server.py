"""A real HTTP server speaking the OpenAI chat-completions schema, for the LLM client tests.

``POST /v1/chat/completions`` is validated the way OpenAI validates it (model,
messages with roles, temperature, max_tokens, response_format, the word "json"
when a JSON object is demanded, unknown arguments, the bearer token) and
answered with a proper ``chat.completion`` object.

The "model" is deterministic and reads the client's system message:

* classify (the system message asks for a ``"label"``): the label whose word
  starts a word of the user text; else ``unclear`` if offered, else the last label.
* extract (the system message lists ``- "name": description`` fields): a
  weekday for ``day``, a clock time for ``time``, a number for ``number``,
  null for anything else.

Failure modes are switched per test with :attr:`OpenAIServer.failure`, a delay
with :attr:`OpenAIServer.delay_s`; every request received (also the rejected
ones) is kept in :attr:`OpenAIServer.requests`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from multidict import CIMultiDictProxy

Failure = Literal[
    "http_500",  # an internal server error (OpenAI's error body)
    "http_429",  # rate limited, with Retry-After
    "malformed_body",  # 200 with a truncated JSON body
    "non_json_content",  # a chatty answer instead of a JSON object
    "bad_label",  # a label outside the offered set
    "truncated",  # the reply cut at max_tokens (finish_reason "length")
    "echo_auth",  # a 400 whose message echoes the Authorization header (a leaky proxy)
    "slow_body",  # 200 at once, then the body a byte every 0.1 s (no single read is slow)
]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
KNOWN_ARGUMENTS = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "top_p",
        "n",
        "stream",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "user",
        "seed",
        "response_format",
        "tools",
        "tool_choice",
    }
)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_FIELD = re.compile(r'^- ("(?:[^"\\]|\\.)*"):', re.MULTILINE)
_TIME = re.compile(r"\b(\d{1,2}(?::\d{2})?\s*(?:am|pm))\b", re.IGNORECASE)
_NUMBER = re.compile(r"\b\d+\b")


@dataclass
class Received:
    method: str
    path: str
    headers: CIMultiDictProxy[str]  # case-insensitive, as HTTP header names are
    body: Any  # the parsed JSON body, or the raw text if it was not JSON


@dataclass
class OpenAIServer:
    """One server on 127.0.0.1 (an ephemeral port); ``start`` / ``stop`` from a fixture."""

    model: str = "test-model"
    api_key: str | None = None
    failure: Failure | None = None
    delay_s: float = 0.0
    fence: bool = False  # wrap the reply in a ```json fence, as chatty models do
    flat_slots: bool = False  # extract: {"day": ...} instead of {"slots": {"day": ...}}
    content: str | None = None  # answer exactly this content (overrides the model)
    requests: list[Received] = field(default_factory=list)
    _runner: web.AppRunner | None = field(default=None, repr=False)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        self._stopping.set()  # ends delayed answers at once
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- the endpoint -------------------------------------------------------

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        raw = await request.text()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw
        self.requests.append(Received(request.method, request.path, request.headers, body))
        if self.delay_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.delay_s)
        if self.failure == "echo_auth":
            auth = request.headers.get("Authorization", "")
            return _error(400, f"Bad request with authorization {auth!r}", "invalid_request_error")
        if self.api_key is not None:
            auth = request.headers.get("Authorization", "")
            if auth != f"Bearer {self.api_key}":
                return _error(
                    401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
                )
        if request.content_type != "application/json" or not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.")
        problem = self._validate(body)
        if problem is not None:
            status, message = problem
            return _error(status, message)
        if self.failure == "http_500":
            return _error(
                500, "The server had an error while processing your request.", "server_error"
            )
        if self.failure == "http_429":
            response = _error(
                429, "Rate limit reached for requests.", "requests", "rate_limit_exceeded"
            )
            response.headers["Retry-After"] = "1"
            return response
        if self.failure == "malformed_body":
            return web.Response(
                text='{"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"mess',
                content_type="application/json",
            )
        if self.failure == "slow_body":
            return await self._drip(request, json.dumps(self._completion(body)).encode())
        return web.json_response(self._completion(body))

    async def _drip(self, request: web.Request, data: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(data)
        await response.prepare(request)
        for i in range(len(data)):
            await response.write(data[i : i + 1])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 0.1)
            if self._stopping.is_set():
                break
        return response

    def _validate(self, body: dict[str, Any]) -> tuple[int, str] | None:
        unknown = sorted(set(body) - KNOWN_ARGUMENTS)
        if unknown:
            return 400, f"Unrecognized request argument supplied: {unknown[0]}"
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return 400, "you must provide a model parameter"
        if model != self.model:
            return 404, f"The model `{model}` does not exist or you do not have access to it."
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return 400, "'messages' must be a non-empty array"
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                return 400, f"Invalid value for 'messages[{i}].role'"
            if not isinstance(message.get("content"), str):
                return 400, f"Invalid type for 'messages[{i}].content': expected a string"
        temperature = body.get("temperature", 1)
        if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
            return 400, "'temperature' must be a number between 0 and 2"
        max_tokens = body.get("max_tokens", 16)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            return 400, "'max_tokens' must be a positive integer"
        response_format = body.get("response_format", {"type": "text"})
        if not isinstance(response_format, dict) or response_format.get("type") not in (
            "text",
            "json_object",
            "json_schema",
        ):
            return 400, "Invalid value for 'response_format.type'"
        if response_format["type"] == "json_object" and not any(
            "json" in m["content"].lower() for m in messages
        ):
            return 400, (
                "'messages' must contain the word 'json' in some form, to use "
                "'response_format' of type 'json_object'."
            )
        return None

    # ---- the "model" --------------------------------------------------------

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        messages: list[dict[str, str]] = body["messages"]
        system = "\n".join(m["content"] for m in messages if m["role"] in ("system", "developer"))
        user = "\n".join(m["content"] for m in messages if m["role"] == "user")
        content = self.content if self.content is not None else self._answer(system, user)
        finish = "stop"
        if self.failure == "truncated":
            content, finish = content[: max(1, len(content) // 2)], "length"
        elif self.fence:
            content = f"```json\n{content}\n```"
        prompt_tokens = len((system + " " + user).split())
        completion_tokens = max(1, len(content) // 4)
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "system_fingerprint": "fp_test",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _answer(self, system: str, user: str) -> str:
        if self.failure == "non_json_content":
            return "Sure! Based on what the caller said, I think they want to confirm."
        if '"label"' in system:
            labels = _labels(system)
            if self.failure == "bad_label":
                return json.dumps({"label": "maybe"})
            return json.dumps({"label": _classify(user, labels)})
        slots = {name: _extract(name, user) for name in _fields(system)}
        return json.dumps(slots if self.flat_slots else {"slots": slots})


def _error(
    status: int, message: str, kind: str = "invalid_request_error", code: str | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status)


def _labels(system: str) -> list[str]:
    """The quoted labels on the line that offers them."""
    for line in system.splitlines():
        if "labels:" in line:
            return [json.loads(f'"{m}"') for m in _QUOTED.findall(line.split("labels:", 1)[1])]
    return []


def _fields(system: str) -> list[str]:
    names: list[str] = [json.loads(m) for m in _FIELD.findall(system)]
    return names


def _classify(user: str, labels: list[str]) -> str:
    text = user.lower()
    for label in labels:
        if re.search(rf"\b{re.escape(label.lower())}", text):
            return label
    if "unclear" in labels:
        return "unclear"
    return labels[-1] if labels else ""


def _extract(name: str, user: str) -> str | None:
    text = user.lower()
    if name == "day":
        for day in WEEKDAYS:
            if re.search(rf"\b{day}\b", text):
                return day.capitalize()
        return None
    if name == "time":
        match = _TIME.search(user)
        return match.group(1) if match else None
    if name == "number":
        match = _NUMBER.search(user)
        return match.group(0) if match else None
    return None
