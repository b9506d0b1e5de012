"""Lossless conversion between the CallSession model and ``voicetyped.v1.CallSession``.

JSON values (CallHook payloads, backend responses) travel as compact JSON text
(see proto/voicetyped/v1/common.proto for why not google.protobuf.Struct).
"""

from __future__ import annotations

import json
from typing import assert_never

from pydantic import JsonValue

from voicetyped.session import (
    Action,
    BackendResultEvent,
    CallerInfo,
    CallHook,
    CallSession,
    DTMFEvent,
    Event,
    Hangup,
    PlayTTS,
    SipHeader,
    SpeechEvent,
    SpeechTiming,
    TimeoutEvent,
    Transfer,
)
from voicetyped.v1 import common_pb2, session_pb2


def dump_json_value(value: JsonValue) -> str:
    """Compact, exact JSON text (no NaN/Infinity, non-ASCII kept as UTF-8)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def load_json_value(text: str) -> JsonValue:
    def _reject_constant(name: str) -> JsonValue:
        raise ValueError(f"JSON constant {name} is not allowed")

    value: JsonValue = json.loads(text, parse_constant=_reject_constant)
    return value


def caller_to_proto(caller: CallerInfo) -> common_pb2.CallerInfo:
    return common_pb2.CallerInfo(
        caller_id=caller.caller_id,
        sip_headers=[common_pb2.SipHeader(name=h.name, value=h.value) for h in caller.sip_headers],
    )


def caller_from_proto(msg: common_pb2.CallerInfo) -> CallerInfo:
    return CallerInfo(
        caller_id=msg.caller_id,
        sip_headers=[SipHeader(name=h.name, value=h.value) for h in msg.sip_headers],
    )


def speech_to_proto(event: SpeechEvent) -> common_pb2.SpeechEvent:
    return common_pb2.SpeechEvent(
        transcript=event.transcript,
        confidence=event.confidence,
        timing=common_pb2.SpeechTiming(start_ms=event.timing.start_ms, end_ms=event.timing.end_ms),
    )


def speech_from_proto(msg: common_pb2.SpeechEvent) -> SpeechEvent:
    return SpeechEvent(
        transcript=msg.transcript,
        confidence=msg.confidence,
        timing=SpeechTiming(start_ms=msg.timing.start_ms, end_ms=msg.timing.end_ms),
    )


def event_to_proto(event: Event) -> session_pb2.SessionEvent:
    match event:
        case SpeechEvent():
            return session_pb2.SessionEvent(speech=speech_to_proto(event))
        case DTMFEvent():
            return session_pb2.SessionEvent(
                dtmf=common_pb2.DtmfEvent(digit=event.digit, duration_ms=event.duration_ms)
            )
        case TimeoutEvent():
            return session_pb2.SessionEvent(
                timeout=session_pb2.TimeoutEvent(elapsed_ms=event.elapsed_ms)
            )
        case BackendResultEvent():
            return session_pb2.SessionEvent(
                backend_result=session_pb2.BackendResultEvent(
                    response_json=dump_json_value(event.response)
                )
            )
        case _:
            assert_never(event)


def event_from_proto(msg: session_pb2.SessionEvent) -> Event:
    kind = msg.WhichOneof("event")
    if kind == "speech":
        return speech_from_proto(msg.speech)
    if kind == "dtmf":
        return DTMFEvent(digit=msg.dtmf.digit, duration_ms=msg.dtmf.duration_ms)
    if kind == "timeout":
        return TimeoutEvent(elapsed_ms=msg.timeout.elapsed_ms)
    if kind == "backend_result":
        return BackendResultEvent(response=load_json_value(msg.backend_result.response_json))
    raise ValueError("SessionEvent has no event set")


def action_to_proto(action: Action) -> session_pb2.SessionAction:
    match action:
        case PlayTTS():
            return session_pb2.SessionAction(
                play_tts=session_pb2.PlayTts(text=action.text, voice=action.voice)
            )
        case Transfer():
            return session_pb2.SessionAction(
                transfer=session_pb2.Transfer(target_uri=action.target)
            )
        case Hangup():
            return session_pb2.SessionAction(
                hangup=session_pb2.Hangup(reason_code=action.reason_code)
            )
        case CallHook():
            return session_pb2.SessionAction(
                call_hook=session_pb2.CallHook(
                    service=action.service,
                    method=action.method,
                    payload_json=dump_json_value(action.payload),
                )
            )
        case _:
            assert_never(action)


def action_from_proto(msg: session_pb2.SessionAction) -> Action:
    kind = msg.WhichOneof("action")
    if kind == "play_tts":
        voice = msg.play_tts.voice if msg.play_tts.HasField("voice") else None
        return PlayTTS(text=msg.play_tts.text, voice=voice)
    if kind == "transfer":
        return Transfer(target=msg.transfer.target_uri)
    if kind == "hangup":
        return Hangup(reason_code=msg.hangup.reason_code)
    if kind == "call_hook":
        payload = load_json_value(msg.call_hook.payload_json)
        if not isinstance(payload, dict):
            raise ValueError("CallHook.payload_json must be a JSON object")
        return CallHook(service=msg.call_hook.service, method=msg.call_hook.method, payload=payload)
    raise ValueError("SessionAction has no action set")


def session_to_proto(session: CallSession) -> session_pb2.CallSession:
    return session_pb2.CallSession(
        session_id=session.session_id,
        caller=caller_to_proto(session.caller),
        state=session.state,
        events=[event_to_proto(e) for e in session.events],
        actions=[action_to_proto(a) for a in session.actions],
    )


def session_from_proto(msg: session_pb2.CallSession) -> CallSession:
    return CallSession(
        session_id=msg.session_id,
        caller=caller_from_proto(msg.caller),
        state=msg.state,
        events=[event_from_proto(e) for e in msg.events],
        actions=[action_from_proto(a) for a in msg.actions],
    )
