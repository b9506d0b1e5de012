"""The generated voicetyped.v1 code is fresh and the contracts cover every interaction."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import MethodDescriptor
from voicetyped.v1 import integration_pb2, runtime_pb2, speech_pb2

REPO = Path(__file__).resolve().parents[2]
GENERATED = REPO / "common" / "src" / "voicetyped" / "v1"


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("proto_generate", REPO / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["proto_generate"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    generator = _load_generator()
    fresh = {
        p.relative_to(tmp_path / "voicetyped" / "v1"): p.read_bytes()
        for p in generator.generate(tmp_path)
    }
    committed = {
        p.relative_to(GENERATED): p.read_bytes()
        for p in GENERATED.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert sorted(map(str, committed)) == sorted(map(str, fresh)), "run `make proto`"
    stale = [str(name) for name, data in fresh.items() if committed[name] != data]
    assert not stale, f"generated code is stale, run `make proto`: {stale}"


def _method(service: str, name: str, module: object) -> MethodDescriptor:
    desc = module.DESCRIPTOR.services_by_name[service]  # type: ignore[attr-defined]
    method: MethodDescriptor = desc.methods_by_name[name]
    return method


def _oneof_fields(message: object, oneof: str) -> set[str]:
    return {f.name for f in message.DESCRIPTOR.oneofs_by_name[oneof].fields}  # type: ignore[attr-defined]


def test_media_speech_audio_stream_is_bidirectional_with_playback_down() -> None:
    m = _method("SpeechGateway", "StreamAudio", speech_pb2)
    assert (m.client_streaming, m.server_streaming) == (True, True)
    assert m.input_type.full_name == "voicetyped.v1.AudioUplink"
    assert _oneof_fields(speech_pb2.AudioUplink, "msg") == {"start", "audio"}
    # speech -> media playback audio and its control travel down the same stream.
    assert _oneof_fields(speech_pb2.AudioDownlink, "msg") == {"ready", "playback", "control"}


def test_runtime_speech_stream_carries_transcripts_up_and_tts_down() -> None:
    m = _method("SpeechGateway", "Converse", speech_pb2)
    assert (m.client_streaming, m.server_streaming) == (True, True)
    assert _oneof_fields(speech_pb2.SpeechCommand, "msg") == {"start", "speak", "cancel", "context"}
    assert _oneof_fields(speech_pb2.SpeechUpdate, "msg") == {
        "transcript",
        "vad",
        "playback",
        "error",
    }
    kinds = set(speech_pb2.TranscriptEvent.Kind.keys())
    assert {"KIND_PARTIAL", "KIND_FINAL"} <= kinds
    assert {"KIND_SPEECH_START", "KIND_SPEECH_END"} <= set(speech_pb2.VadEvent.Kind.keys())
    speech = speech_pb2.TranscriptEvent().speech
    assert {f.name for f in speech.DESCRIPTOR.fields} == {"transcript", "confidence", "timing"}


def test_runtime_integration_action_request_has_idempotency_key() -> None:
    m = _method("IntegrationGateway", "Execute", integration_pb2)
    assert (m.client_streaming, m.server_streaming) == (False, False)
    fields = {f.name for f in integration_pb2.ActionRequest.DESCRIPTOR.fields}
    assert {"service", "method", "payload_json", "idempotency_key"} <= fields


def test_media_runtime_stream_carries_lifecycle_and_dtmf() -> None:
    m = _method("ConversationRuntime", "StreamCall", runtime_pb2)
    assert (m.client_streaming, m.server_streaming) == (True, True)
    assert {"started", "dtmf", "ended"} <= _oneof_fields(runtime_pb2.CallEvent, "event")
    assert _oneof_fields(runtime_pb2.CallCommand, "command") == {"transfer", "hangup"}
