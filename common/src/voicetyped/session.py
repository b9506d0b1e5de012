"""The CallSession model: the durable record of one call.

Shape (fixed by the product): SessionID, CallerInfo (SIP headers, caller id),
State, Events[] and Actions[]. Events and actions are tagged unions with a
``type`` discriminator so the JSON form is self-describing:

    {"session_id": "...", "caller": {...}, "state": "greet",
     "events": [{"type": "dtmf", "digit": "1", "duration_ms": 120}],
     "actions": [{"type": "play_tts", "text": "Hi", "voice": null}]}

Both lists are append-only; an action's index in ``actions`` is its id and the
integration gateway's idempotency key is ``f"{session_id}:{index}"``
(:func:`CallSession.idempotency_key`). ``voicetyped.session_proto`` converts to
and from ``voicetyped.v1.CallSession`` losslessly.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1

Uint32 = Annotated[int, Field(ge=0, le=UINT32_MAX)]
Uint64 = Annotated[int, Field(ge=0, le=UINT64_MAX)]
NonEmptyStr = Annotated[str, Field(min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SipHeader(_Model):
    """One SIP header as received; names may repeat, order is kept."""

    name: NonEmptyStr
    value: str


class CallerInfo(_Model):
    """Who is calling."""

    caller_id: str = Field(description="The calling party (E.164 number or SIP URI user part).")
    sip_headers: list[SipHeader] = Field(default_factory=list)


class SpeechTiming(_Model):
    """Where an utterance lies in call time (milliseconds from the start of the call's audio)."""

    start_ms: Uint64
    end_ms: Uint64

    @model_validator(mode="after")
    def _ordered(self) -> SpeechTiming:
        if self.end_ms < self.start_ms:
            raise ValueError(f"end_ms ({self.end_ms}) is before start_ms ({self.start_ms})")
        return self


class SpeechEvent(_Model):
    """A final transcript of one caller utterance."""

    type: Literal["speech"] = "speech"
    transcript: str
    confidence: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    timing: SpeechTiming


class DTMFEvent(_Model):
    """A DTMF key press."""

    type: Literal["dtmf"] = "dtmf"
    digit: str = Field(pattern=r"^[0-9*#A-D]$")
    duration_ms: Uint32 = 0


class TimeoutEvent(_Model):
    """A dialog timer fired."""

    type: Literal["timeout"] = "timeout"
    elapsed_ms: Uint64


class BackendResultEvent(_Model):
    """The integration gateway's answer to a CallHook (any JSON value)."""

    type: Literal["backend_result"] = "backend_result"
    response: JsonValue


Event = Annotated[
    SpeechEvent | DTMFEvent | TimeoutEvent | BackendResultEvent, Field(discriminator="type")
]


class PlayTTS(_Model):
    """Speak text to the caller; ``voice`` None means the speech gateway's default voice."""

    type: Literal["play_tts"] = "play_tts"
    text: str
    voice: str | None = None


class Transfer(_Model):
    """Blind-transfer the call to a SIP (or tel) URI."""

    type: Literal["transfer"] = "transfer"
    target: str = Field(pattern=r"^(sips?|tel):\S+$", description="sip:, sips: or tel: URI")


class Hangup(_Model):
    """End the call with an ITU-T Q.850 cause (16 = normal call clearing)."""

    type: Literal["hangup"] = "hangup"
    reason_code: int = Field(default=16, ge=1, le=127)


class CallHook(_Model):
    """Call ``method`` of the integration ``service`` with a JSON object payload."""

    type: Literal["call_hook"] = "call_hook"
    service: NonEmptyStr
    method: NonEmptyStr
    payload: dict[str, JsonValue] = Field(default_factory=dict)


Action = Annotated[PlayTTS | Transfer | Hangup | CallHook, Field(discriminator="type")]


class CallSession(_Model):
    """The state of one call: who, where in the dialog, what happened, what was done."""

    session_id: NonEmptyStr
    caller: CallerInfo
    state: str
    events: list[Event] = Field(default_factory=list)
    actions: list[Action] = Field(default_factory=list)

    def idempotency_key(self, action_index: int) -> str:
        """The key under which the integration gateway deduplicates action ``action_index``."""
        if not 0 <= action_index < len(self.actions):
            raise IndexError(f"session {self.session_id} has no action {action_index}")
        return f"{self.session_id}:{action_index}"
