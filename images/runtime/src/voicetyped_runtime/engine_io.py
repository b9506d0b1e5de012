"""What goes into the dialog engine and what comes out: the inputs (caller and system
events) and the effects (speak, cancel, call a backend, transfer, hang up...) that
``Engine.step`` trades. Plain frozen dataclasses; the I/O around the engine (``call.py``,
``links.py``, ``simulate.py``) translates them to and from the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue
from voicetyped_specs.dialog.model import BargeIn

# Q.850 causes
NORMAL_CLEARING = 16
TEMPORARY_FAILURE = 41


# ---- inputs -----------------------------------------------------------------


@dataclass(frozen=True)
class SpeechStarted:
    utterance_id: str


@dataclass(frozen=True)
class SpeechEnded:
    utterance_id: str


@dataclass(frozen=True)
class Transcript:
    utterance_id: str
    text: str
    final: bool
    confidence: float = 1.0
    start_ms: int = 0
    end_ms: int = 0
    intent: str = ""
    intent_score: float = 0.0


@dataclass(frozen=True)
class PlaybackDone:
    request_id: str
    cancelled: bool = False


@dataclass(frozen=True)
class Dtmf:
    digit: str
    duration_ms: int = 0


@dataclass(frozen=True)
class BackendAnswer:
    key: str
    ok: bool
    response: JsonValue = None
    error_code: str = ""
    error_message: str = ""


@dataclass(frozen=True)
class LlmAnswer:
    key: str
    ok: bool
    label: str = ""
    slots: dict[str, JsonValue] = field(default_factory=dict)
    error_code: str = ""
    error_message: str = ""


@dataclass(frozen=True)
class CommandFailed:
    """A transfer (or hangup) the media gateway could not carry out."""

    command_id: str
    detail: str = ""
    sip_status: int = 0
    """The final SIP status (the REFER's answer or its NOTIFY's sipfrag); 0: unknown."""


@dataclass(frozen=True)
class CallerHangup:
    reason: str = "caller hung up"


@dataclass(frozen=True)
class Tick:
    """Fire every timer due at ``now_ms``."""


Input = (
    SpeechStarted
    | SpeechEnded
    | Transcript
    | PlaybackDone
    | Dtmf
    | BackendAnswer
    | LlmAnswer
    | CommandFailed
    | CallerHangup
    | Tick
)

# ---- effects ----------------------------------------------------------------


@dataclass(frozen=True)
class Speak:
    request_id: str
    text: str
    voice: str
    barge_in: BargeIn


@dataclass(frozen=True)
class CancelSpeech:
    request_ids: tuple[str, ...]


@dataclass(frozen=True)
class TransferCall:
    command_id: str
    target: str


@dataclass(frozen=True)
class HangupCall:
    command_id: str
    reason_code: int


@dataclass(frozen=True)
class ExecuteHook:
    key: str
    action_id: str
    service: str
    method: str
    payload: dict[str, JsonValue]
    deadline_ms: int


@dataclass(frozen=True)
class AskLlm:
    key: str
    request: dict[str, JsonValue]
    deadline_ms: int


@dataclass(frozen=True)
class SessionEnded:
    reason: str


@dataclass(frozen=True)
class Warn:
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


Effect = (
    Speak | CancelSpeech | TransferCall | HangupCall | ExecuteHook | AskLlm | SessionEnded | Warn
)
