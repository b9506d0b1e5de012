"""The durable state of one call as the runtime keeps it.

:class:`CallState` wraps the product's :class:`~voicetyped.session.CallSession`
(id, caller, FSM state, events, actions) with what the engine needs to resume
exactly where it was after a restart: dialog variables, timers as absolute
deadlines, the digit collector, pending backend/LLM requests with their
idempotency keys, prompts still playing, and the turn in progress. It is saved
as JSON after every step.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from voicetyped.session import CallSession
from voicetyped_specs.dialog.model import BargeIn, CollectDigitsSpec


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timer(_State):
    name: str
    started_ms: int = Field(description="Wall-clock epoch ms when armed.")
    deadline_ms: int = Field(description="Wall-clock epoch ms when it fires (absolute).")


class DigitCollection(_State):
    spec: CollectDigitsSpec
    digits: str = ""


class PendingRequest(_State):
    """A backend call or LLM request sent and not yet answered (resumed after restart)."""

    kind: Literal["call_hook", "llm"]
    key: str = Field(description="Idempotency key, stable across retries and restarts.")
    action_index: int | None = Field(None, description="Index in session.actions (call_hook).")
    service: str = ""
    method: str = ""
    payload: dict[str, JsonValue] = Field(default_factory=dict)
    llm: dict[str, JsonValue] = Field(default_factory=dict, description="Rendered llm request.")
    started_ms: int
    deadline_ms: int


class Playback(_State):
    request_id: str
    barge_in: BargeIn


class PendingTurn(_State):
    """The caller's utterance being assembled (finals may arrive in pieces)."""

    texts: list[str] = Field(default_factory=list)
    confidence: float = 1.0
    start_ms: int = 0
    end_ms: int = 0
    intent: str = ""
    intent_score: float = 0.0
    speaking: bool = False
    awaiting: list[str] = Field(
        default_factory=list, description="Utterances that ended and have no final yet."
    )


class Last(_State):
    """The latest values of event data, visible to later conditions and templates."""

    transcript: str = ""
    confidence: float = 0.0
    intent: str = ""
    intent_score: float = 0.0
    digits: str = ""
    ok: bool = True
    result: JsonValue = None


class Deferred(_State):
    """A hangup or transfer waiting for the prompts before it to finish playing."""

    kind: Literal["hangup", "transfer"]
    reason_code: int = 16
    target: str = ""
    reason: str = ""


class Step(_State):
    """One handled event, for the admin API and the simulator."""

    at_ms: int
    event: str
    from_state: str
    to_state: str
    transition: str = Field("", description="Path of the transition taken; empty if none.")


class CallState(_State):
    session: CallSession
    dialog: str
    dialog_hash: str
    called_uri: str = ""
    speech_endpoint: str = ""
    started_ms: int
    state_entered_ms: int
    vars: dict[str, JsonValue] = Field(default_factory=dict)
    turn: int = 0
    seq: int = Field(0, description="Counter for request and command ids.")
    timers: dict[str, Timer] = Field(default_factory=dict)
    collecting: DigitCollection | None = None
    pending: dict[str, PendingRequest] = Field(default_factory=dict)
    playing: list[Playback] = Field(default_factory=list)
    ignored_utterances: list[str] = Field(default_factory=list)
    turn_in_progress: PendingTurn | None = None
    last: Last = Field(default_factory=Last)
    history: list[Step] = Field(default_factory=list)
    deferred: Deferred | None = None
    transferring: str = Field("", description="Command id of a transfer in progress.")
    ended: bool = False
    end_reason: str = ""
    updated_ms: int = 0

    @property
    def session_id(self) -> str:
        return self.session.session_id

    @property
    def fsm_state(self) -> str:
        return self.session.state

    def next_id(self, prefix: str) -> str:
        self.seq += 1
        return f"{self.session.session_id}:{prefix}{self.seq}"
