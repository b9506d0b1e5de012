"""Logs are JSON lines that carry session_id and never carry secrets."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from voicetyped.service.logs import REDACTED, configure_logging, get_logger, session_context


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]


def test_session_id_is_on_every_line_of_a_call(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("runtime")
    log = get_logger("test")

    async def call(session_id: str) -> None:
        with session_context(session_id):
            log.info("turn", n=1)
            await asyncio.sleep(0)
            logging.getLogger("some.library").warning("stdlib line")

    async def main() -> None:
        await asyncio.gather(call("a"), call("b"))
        log.info("outside")

    asyncio.run(main())
    lines = _lines(capsys)
    turns = [line for line in lines if line["event"] == "turn"]
    assert sorted(str(line["session_id"]) for line in turns) == ["a", "b"]
    stdlib = [line for line in lines if line["event"] == "stdlib line"]
    assert sorted(str(line["session_id"]) for line in stdlib) == ["a", "b"]
    assert all(line["service"] == "runtime" and "timestamp" in line for line in lines)
    outside = next(line for line in lines if line["event"] == "outside")
    assert "session_id" not in outside


def test_secrets_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("integration")
    get_logger("test").info(
        "request",
        headers={"Authorization": "Bearer abc", "Accept": "json"},
        api_key="k-123",
        client_secret="s3cr3t",
        nested=[{"password": "pw"}],
    )
    line = _lines(capsys)[-1]
    assert line["headers"] == {"Authorization": REDACTED, "Accept": "json"}
    assert line["api_key"] == REDACTED
    assert line["client_secret"] == REDACTED
    assert line["nested"] == [{"password": REDACTED}]
    assert "abc" not in json.dumps(line) and "s3cr3t" not in json.dumps(line)


def test_exceptions_are_rendered_inside_the_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("media")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("test").exception("failed")
    line = _lines(capsys)[-1]
    assert "RuntimeError: boom" in str(line["exception"])


def test_stdlib_extra_fields_become_keys_and_are_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("media")
    logging.getLogger("some.library").info(
        "SIP request refused", extra={"status": 400, "detail": "bad CSeq", "password": "pw"}
    )
    line = _lines(capsys)[-1]
    assert (line["event"], line["status"], line["detail"]) == (
        "SIP request refused",
        400,
        "bad CSeq",
    )
    assert line["password"] == REDACTED
