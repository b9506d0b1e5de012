"""The LLM client against a real local HTTP server speaking the OpenAI chat-completions schema."""

from __future__ import annotations

import importlib.util
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from voicetyped_runtime.engine import LlmAnswer
from voicetyped_runtime.llm import LlmClient
from voicetyped_specs.dialog import compiled as c
from voicetyped_specs.dialog.model import EventType, LlmSettings


def _load_server_module() -> ModuleType:
    """tests/ is no package and --import-mode=importlib puts nothing on sys.path: load by path."""
    name = "voicetyped_runtime_tests_openai_server"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).with_name("openai_server.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:  # mypy runs from the repository root and names this module so
    from images.runtime.tests.openai_server import Failure, OpenAIServer
else:
    OpenAIServer = _load_server_module().OpenAIServer

REPO = Path(__file__).resolve().parents[3]
APPOINTMENT = REPO / "examples" / "dialogs" / "appointment-confirmation.yaml"
API_KEY = "sk-test-0123456789abcdefSECRET"

CLASSIFY: dict[str, Any] = {
    "mode": "classify",
    "prompt": "Classify the answer.",
    "input": "please cancel it",
    "labels": ["confirm", "reschedule", "cancel", "unclear"],
    "slots": {},
}
EXTRACT: dict[str, Any] = {
    "mode": "extract",
    "prompt": "Extract the preferred weekday.",
    "input": "Friday would be better",
    "labels": [],
    "slots": {"day": "weekday name, e.g. Monday"},
}


@pytest.fixture
async def server() -> AsyncIterator[OpenAIServer]:
    srv = OpenAIServer()
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def _client(
    server: OpenAIServer, http: httpx.AsyncClient, api_key_file: Path | None = None
) -> LlmClient:
    settings = LlmSettings(
        base_url=server.base_url,
        model=server.model,
        api_key_file=str(api_key_file) if api_key_file else None,
    )
    return LlmClient(settings, http)


def _key_file(tmp_path: Path, content: str = API_KEY + "\n") -> Path:
    path = tmp_path / "api-key"
    path.write_text(content)
    return path


# ---- success ----------------------------------------------------------------


async def test_classify_sends_an_openai_request_and_maps_the_label(
    server: OpenAIServer, http: httpx.AsyncClient
) -> None:
    answer = await _client(server, http).ask("llm-1", CLASSIFY, 2.0)

    assert answer == LlmAnswer("llm-1", ok=True, label="cancel")
    [received] = server.requests
    assert (received.method, received.path) == ("POST", "/v1/chat/completions")
    assert received.headers["X-Request-Id"] == "llm-1"
    assert "Authorization" not in received.headers
    body = received.body
    assert body["model"] == "test-model"
    assert body["temperature"] == 0
    assert body["response_format"] == {"type": "json_object"}
    assert isinstance(body["max_tokens"], int) and 0 < body["max_tokens"] <= 256
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    system, user = (m["content"] for m in body["messages"])
    assert user == "please cancel it"
    assert system.startswith("Classify the answer.")
    assert '"confirm", "reschedule", "cancel", "unclear"' in system
    assert "JSON object" in system


async def test_extract_returns_the_slots(server: OpenAIServer, http: httpx.AsyncClient) -> None:
    answer = await _client(server, http).ask("llm-2", EXTRACT, 2.0)

    assert answer == LlmAnswer("llm-2", ok=True, slots={"day": "Friday"})
    system = server.requests[0].body["messages"][0]["content"]
    assert '- "day": weekday name, e.g. Monday' in system
    assert "null" in system


async def test_base_url_with_a_trailing_slash(
    server: OpenAIServer, http: httpx.AsyncClient
) -> None:
    settings = LlmSettings(base_url=server.base_url + "/", model=server.model)
    answer = await LlmClient(settings, http).ask("k", CLASSIFY, 2.0)
    assert answer.ok
    assert server.requests[0].path == "/v1/chat/completions"


@pytest.mark.parametrize(
    ("utterance", "label"),
    [
        ("Yes, I can confirm that.", "confirm"),
        ("Could we reschedule? Friday would suit me better.", "reschedule"),
        ("I need to cancel, sorry.", "cancel"),
        ("yeah that works", "unclear"),
    ],
)
async def test_appointment_confirmation_classify(
    server: OpenAIServer, http: httpx.AsyncClient, utterance: str, label: str
) -> None:
    client, request = _appointment_request(server, http, "ask", utterance)
    assert request["labels"] == ["confirm", "reschedule", "cancel", "unclear"]

    answer = await client.ask("llm-1", request, 2.5)

    assert answer == LlmAnswer("llm-1", ok=True, label=label)
    system = server.requests[0].body["messages"][0]["content"]
    assert system.startswith("The patient was asked whether they can attend their appointment.")


@pytest.mark.parametrize(
    ("utterance", "day"),
    [("Friday would be better", "Friday"), ("maybe on WEDNESDAY?", "Wednesday"), ("soon", "")],
)
async def test_appointment_confirmation_extract(
    server: OpenAIServer, http: httpx.AsyncClient, utterance: str, day: str
) -> None:
    client, request = _appointment_request(server, http, "ask_day", utterance)
    assert request["slots"] == {"day": "weekday name, e.g. Monday"}

    answer = await client.ask("llm-2", request, 2.5)

    assert answer == LlmAnswer("llm-2", ok=True, slots={"day": day})
    assert server.requests[0].body["model"] == "qwen2.5-1.5b-instruct"


def _appointment_request(
    server: OpenAIServer, http: httpx.AsyncClient, state: str, utterance: str
) -> tuple[LlmClient, dict[str, Any]]:
    """The example dialog's llm action on speech in ``state``, rendered as the engine does."""
    dialog = c.load_dialog_file(APPOINTMENT)
    [transition] = [t for t in dialog.states[state].transitions if t.event == EventType.SPEECH]
    [action] = [a for a in transition.actions if isinstance(a, c.Llm)]
    activation = {"transcript": utterance, "vars": dict(dialog.spec.vars)}
    request = {
        "mode": action.spec.mode,
        "prompt": action.prompt.render_text(activation),
        "input": action.input.render_text(activation),
        "labels": list(action.spec.labels),
        "slots": dict(action.spec.slots),
    }
    llm = dialog.spec.settings.llm
    assert llm is not None
    server.model = llm.model
    settings = llm.model_copy(update={"base_url": server.base_url})
    return LlmClient(settings, http), request


@pytest.mark.parametrize("content", ['{"label": "  Confirm "}', '{"label": "CONFIRM"}'])
async def test_classify_accepts_case_and_whitespace_differences(
    server: OpenAIServer, http: httpx.AsyncClient, content: str
) -> None:
    server.content = content
    answer = await _client(server, http).ask("k", CLASSIFY, 2.0)
    assert answer == LlmAnswer("k", ok=True, label="confirm")


async def test_fenced_replies_are_accepted(server: OpenAIServer, http: httpx.AsyncClient) -> None:
    server.fence = True
    client = _client(server, http)
    assert (await client.ask("a", CLASSIFY, 2.0)).label == "cancel"
    assert (await client.ask("b", EXTRACT, 2.0)).slots == {"day": "Friday"}


async def test_extract_accepts_a_flat_object(server: OpenAIServer, http: httpx.AsyncClient) -> None:
    server.flat_slots = True
    answer = await _client(server, http).ask("k", EXTRACT, 2.0)
    assert answer == LlmAnswer("k", ok=True, slots={"day": "Friday"})


@pytest.mark.parametrize(
    "content",
    [
        '{"slots": {"day": null, "count": 2, "ratio": 1.5, "flag": true, "noise": "x"}}',
        '{"day": null, "count": 2.0, "ratio": 1.5, "flag": true, "noise": "x"}',
    ],
)
async def test_extract_coerces_values_and_fills_missing_slots(
    server: OpenAIServer, http: httpx.AsyncClient, content: str
) -> None:
    server.content = content
    request = {
        **EXTRACT,
        "slots": {"day": "d", "count": "n", "ratio": "r", "flag": "f", "when": "w"},
    }
    answer = await _client(server, http).ask("k", request, 2.0)
    assert answer.ok
    assert answer.slots == {"day": "", "count": "2", "ratio": "1.5", "flag": "true", "when": ""}


async def test_extract_all_empty_is_still_ok(server: OpenAIServer, http: httpx.AsyncClient) -> None:
    answer = await _client(server, http).ask("k", {**EXTRACT, "input": "no idea"}, 2.0)
    assert answer == LlmAnswer("k", ok=True, slots={"day": ""})


# ---- failures ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "code", "detail"),
    [
        ("http_500", "http_500", "server had an error"),
        ("http_429", "http_429", "Rate limit"),
        ("malformed_body", "invalid_output", "response body is not JSON"),
        ("non_json_content", "invalid_output", "reply is not JSON"),
        ("bad_label", "invalid_output", "'maybe' is not one of the labels"),
        ("truncated", "invalid_output", "cut off at max_tokens"),
    ],
)
async def test_failure_modes_map_to_error_codes(
    server: OpenAIServer, http: httpx.AsyncClient, failure: Failure, code: str, detail: str
) -> None:
    server.failure = failure
    answer = await _client(server, http).ask("k", CLASSIFY, 2.0)
    assert not answer.ok
    assert answer.error_code == code
    assert detail in answer.error_message
    assert len(answer.error_message) < 200
    assert (answer.label, answer.slots) == ("", {})


@pytest.mark.parametrize(
    ("mode", "content", "detail"),
    [
        ("classify", '["confirm"]', "not a JSON object"),
        ("classify", '{"answer": "confirm"}', 'no string "label"'),
        ("classify", '{"label": 3}', 'no string "label"'),
        ("classify", "", "reply is not JSON"),
        ("extract", "null", "not a JSON object"),
        ("extract", "Friday", "reply is not JSON"),
    ],
)
async def test_schema_violations_are_invalid_output(
    server: OpenAIServer, http: httpx.AsyncClient, mode: str, content: str, detail: str
) -> None:
    server.content = content
    request = CLASSIFY if mode == "classify" else EXTRACT
    answer = await _client(server, http).ask("k", request, 2.0)
    assert (answer.ok, answer.error_code) == (False, "invalid_output")
    assert detail in answer.error_message


async def test_a_rejected_request_is_an_http_error(
    server: OpenAIServer, http: httpx.AsyncClient
) -> None:
    settings = LlmSettings(base_url=server.base_url, model="no-such-model")
    answer = await LlmClient(settings, http).ask("k", CLASSIFY, 2.0)
    assert (answer.ok, answer.error_code) == (False, "http_404")
    assert "no-such-model" in answer.error_message


async def test_unreachable_server_is_unavailable(http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the request
    settings = LlmSettings(base_url=f"http://127.0.0.1:{port}/v1", model="m")
    answer = await LlmClient(settings, http).ask("k", CLASSIFY, 2.0)
    assert (answer.ok, answer.error_code) == (False, "unavailable")
    assert "ConnectError" in answer.error_message


async def test_timeout_is_respected(server: OpenAIServer, http: httpx.AsyncClient) -> None:
    server.delay_s = 3.0
    client = _client(server, http)
    started = time.monotonic()
    answer = await client.ask("k", CLASSIFY, 0.5)
    elapsed = time.monotonic() - started
    assert (answer.ok, answer.error_code) == (False, "timeout")
    assert "0.5 s" in answer.error_message
    assert 0.45 <= elapsed <= 0.8
    server.delay_s = 0  # the client is still usable afterwards
    assert (await client.ask("k2", CLASSIFY, 2.0)).ok


async def test_timeout_is_overall_not_per_read(
    server: OpenAIServer, http: httpx.AsyncClient
) -> None:
    server.failure = "slow_body"  # each read well within 0.5 s, the whole body far beyond
    started = time.monotonic()
    answer = await _client(server, http).ask("k", EXTRACT, 0.5)
    elapsed = time.monotonic() - started
    assert (answer.ok, answer.error_code) == (False, "timeout")
    assert 0.45 <= elapsed <= 0.8


@pytest.mark.parametrize("timeout_s", [0.0, -1.0])
async def test_no_time_left_is_a_timeout_without_a_request(
    server: OpenAIServer, http: httpx.AsyncClient, timeout_s: float
) -> None:
    answer = await _client(server, http).ask("k", CLASSIFY, timeout_s)
    assert (answer.ok, answer.error_code) == (False, "timeout")
    assert server.requests == []


@pytest.mark.parametrize(
    "request_",
    [
        {**CLASSIFY, "mode": "summarize"},
        {**CLASSIFY, "labels": []},
        {**CLASSIFY, "labels": "confirm"},
        {**EXTRACT, "slots": {}},
        {**CLASSIFY, "input": 42},
        {},
    ],
)
async def test_a_malformed_request_is_answered_not_raised(
    server: OpenAIServer, http: httpx.AsyncClient, request_: dict[str, Any]
) -> None:
    answer = await _client(server, http).ask("k", request_, 2.0)
    assert (answer.ok, answer.error_code) == (False, "invalid_request")
    assert server.requests == []


# ---- the API key ------------------------------------------------------------


async def test_api_key_is_sent_as_bearer(
    server: OpenAIServer, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    server.api_key = API_KEY
    answer = await _client(server, http, _key_file(tmp_path)).ask("llm-7", CLASSIFY, 2.0)
    assert answer.ok
    headers = server.requests[0].headers
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert headers["X-Request-Id"] == "llm-7"


async def test_api_key_file_is_read_once(
    server: OpenAIServer, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    server.api_key = API_KEY
    key_file = _key_file(tmp_path)
    client = _client(server, http, key_file)
    key_file.unlink()
    assert (await client.ask("k", CLASSIFY, 2.0)).ok


async def test_a_wrong_key_is_http_401_without_the_key(
    server: OpenAIServer, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    server.api_key = "sk-the-right-one"
    answer = await _client(server, http, _key_file(tmp_path)).ask("k", CLASSIFY, 2.0)
    assert (answer.ok, answer.error_code) == (False, "http_401")
    assert API_KEY not in answer.error_message


@pytest.mark.parametrize(
    "failure",
    [
        None,
        "echo_auth",
        "http_500",
        "http_429",
        "malformed_body",
        "non_json_content",
        "bad_label",
        "truncated",
    ],
)
async def test_the_key_never_appears_in_answers_or_logs(
    server: OpenAIServer,
    http: httpx.AsyncClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    failure: Failure | None,
) -> None:
    caplog.set_level(logging.DEBUG)
    server.api_key = API_KEY
    server.failure = failure
    client = _client(server, http, _key_file(tmp_path))
    answers = [await client.ask("a", CLASSIFY, 2.0), await client.ask("b", EXTRACT, 2.0)]
    for answer in answers:
        assert API_KEY not in repr(answer)
    for record in caplog.records:
        assert API_KEY not in record.getMessage()
        assert API_KEY not in repr(record.__dict__)
    assert API_KEY not in caplog.text
    if failure == "echo_auth":  # a server echoing the header: redacted, not passed on
        assert answers[0].error_code == "http_400"
        assert "Bearer ***" in answers[0].error_message


async def test_the_key_is_not_in_timeout_or_connection_errors(
    server: OpenAIServer, http: httpx.AsyncClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.api_key = API_KEY
    server.delay_s = 3.0
    key_file = _key_file(tmp_path)
    timed_out = await _client(server, http, key_file).ask("k", CLASSIFY, 0.3)
    settings = LlmSettings(base_url="http://127.0.0.1:1/v1", model="m", api_key_file=str(key_file))
    unreachable = await LlmClient(settings, http).ask("k", CLASSIFY, 1.0)
    assert (timed_out.error_code, unreachable.error_code) == ("timeout", "unavailable")
    assert API_KEY not in repr(timed_out) + repr(unreachable) + caplog.text


@pytest.mark.parametrize("content", ["", "  \n", "sk-with a space", "sk-ünïcode"])
async def test_a_bad_key_file_fails_at_construction_without_its_content(
    http: httpx.AsyncClient, tmp_path: Path, content: str
) -> None:
    key_file = _key_file(tmp_path, content)
    settings = LlmSettings(base_url="http://127.0.0.1:1/v1", model="m", api_key_file=str(key_file))
    with pytest.raises(ValueError, match="api-key") as info:
        LlmClient(settings, http)
    if content.strip():
        assert content.strip() not in str(info.value)
