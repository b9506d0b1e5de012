"""CallSession survives JSON and protobuf round trips exactly."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from pydantic import ValidationError
from voicetyped.session import (
    BackendResultEvent,
    CallerInfo,
    CallHook,
    CallSession,
    DTMFEvent,
    Hangup,
    SpeechEvent,
    SpeechTiming,
    Transfer,
)
from voicetyped.session_proto import session_from_proto, session_to_proto
from voicetyped.v1 import session_pb2

from .strategies import json_values, sessions


def _same_json(a: Any, b: Any) -> bool:
    """Equality that also tells int from float and -0.0 from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@settings(max_examples=300)
@given(sessions)
def test_json_round_trip_is_lossless(session: CallSession) -> None:
    text = session.model_dump_json()
    back = CallSession.model_validate_json(text)
    assert back == session
    assert _same_json(json.loads(back.model_dump_json()), json.loads(text))


@settings(max_examples=300)
@given(sessions)
def test_proto_round_trip_is_lossless(session: CallSession) -> None:
    wire = session_to_proto(session).SerializeToString()
    msg = session_pb2.CallSession.FromString(wire)
    back = session_from_proto(msg)
    assert back == session
    assert _same_json(back.model_dump(mode="json"), session.model_dump(mode="json"))
    # And back to the same bytes: the conversion is a bijection on valid sessions.
    assert session_to_proto(back).SerializeToString(deterministic=True) == session_to_proto(
        session
    ).SerializeToString(deterministic=True)


@given(json_values)
def test_backend_response_keeps_number_types(value: Any) -> None:
    session = CallSession(
        session_id="s",
        caller=CallerInfo(caller_id="+15550100"),
        state="x",
        events=[BackendResultEvent(response=value)],
    )
    back = session_from_proto(session_to_proto(session))
    assert isinstance(back.events[0], BackendResultEvent)
    assert _same_json(back.events[0].response, value)


def test_json_shape_is_tagged_and_readable() -> None:
    session = CallSession(
        session_id="c-1",
        caller=CallerInfo(caller_id="+15550100"),
        state="greet",
        events=[DTMFEvent(digit="1", duration_ms=120)],
        actions=[CallHook(service="orders", method="lookup", payload={"order": 42})],
    )
    assert json.loads(session.model_dump_json()) == {
        "session_id": "c-1",
        "caller": {"caller_id": "+15550100", "sip_headers": []},
        "state": "greet",
        "events": [{"type": "dtmf", "digit": "1", "duration_ms": 120}],
        "actions": [
            {"type": "call_hook", "service": "orders", "method": "lookup", "payload": {"order": 42}}
        ],
    }
    assert session.idempotency_key(0) == "c-1:0"
    with pytest.raises(IndexError):
        session.idempotency_key(1)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: DTMFEvent(digit="11"), "digit"),
        (lambda: DTMFEvent(digit="E"), "digit"),
        (lambda: Transfer(target="http://example.com"), "target"),
        (lambda: Hangup(reason_code=0), "reason_code"),
        (
            lambda: SpeechEvent(
                transcript="x", confidence=1.5, timing=SpeechTiming(start_ms=0, end_ms=1)
            ),
            "confidence",
        ),
        (lambda: SpeechTiming(start_ms=10, end_ms=5), "end_ms"),
        (lambda: CallHook(service="", method="m"), "service"),
    ],
)
def test_invalid_values_are_rejected_with_the_field_named(build: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        build()
    assert field in str(info.value)


def test_unknown_event_type_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"union_tag_invalid|does not match any"):
        CallSession.model_validate(
            {
                "session_id": "s",
                "caller": {"caller_id": "x"},
                "state": "a",
                "events": [{"type": "fax"}],
            }
        )


def test_proto_with_a_non_object_payload_is_rejected() -> None:
    msg = session_pb2.CallSession(session_id="s", state="a")
    msg.actions.add().call_hook.CopyFrom(
        session_pb2.CallHook(service="a", method="b", payload_json="[1]")
    )
    with pytest.raises(ValueError, match="JSON object"):
        session_from_proto(msg)
    empty = session_pb2.CallSession(session_id="s", state="a")
    empty.events.add()
    with pytest.raises(ValueError, match="no event set"):
        session_from_proto(empty)
