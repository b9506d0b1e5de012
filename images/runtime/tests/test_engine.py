"""The dialog engine: every action, turn-taking, timers, determinism and resumption.

Each test drives the real engine with inputs at explicit virtual times (no
clock, no I/O) and checks the effects it returns and the state it leaves.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from voicetyped.session import (
    BackendResultEvent,
    CallerInfo,
    CallHook,
    CallSession,
    DTMFEvent,
    Hangup,
    PlayTTS,
    SipHeader,
    SpeechEvent,
    TimeoutEvent,
    Transfer,
)
from voicetyped_runtime import engine as e
from voicetyped_runtime.state import CallState, PendingRequest
from voicetyped_specs.dialog.compiled import (
    CompiledDialog,
    load_dialog,
    load_dialog_file,
    parse_yaml,
)
from voicetyped_specs.dialog.model import BargeIn

T0 = 1_700_000_000_000
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "dialogs"
ALLOW, DENY = BargeIn.ALLOW, BargeIn.DENY
E = TypeVar("E")


def compile_yaml(text: str) -> CompiledDialog:
    return load_dialog(parse_yaml(textwrap.dedent(text)))


def new_state(
    dialog: CompiledDialog,
    session_id: str = "call-1",
    caller_id: str = "+15550100",
    headers: dict[str, str] | None = None,
) -> CallState:
    return CallState(
        session=CallSession(
            session_id=session_id,
            caller=CallerInfo(
                caller_id=caller_id,
                sip_headers=[SipHeader(name=k, value=v) for k, v in (headers or {}).items()],
            ),
            state=dialog.initial,
        ),
        dialog=dialog.name,
        dialog_hash=dialog.content_hash,
        started_ms=T0,
        state_entered_ms=T0,
        vars=dict(dialog.spec.vars),
    )


@dataclass
class Call:
    """One call driven by hand: inputs at explicit times, every effect kept."""

    dialog: CompiledDialog
    state: CallState
    engine: e.Engine
    now: int = T0
    log: list[tuple[int, e.Effect]] = field(default_factory=list)
    first: list[e.Effect] = field(default_factory=list)  # the effects of entering the dialog
    utterances: int = 0

    @classmethod
    def start(cls, source: str | CompiledDialog, **kwargs: Any) -> Call:
        dialog = compile_yaml(source) if isinstance(source, str) else source
        call = cls(dialog, new_state(dialog, **kwargs), e.Engine(dialog))
        call.first = call._record(call.engine.start(call.state, call.now))
        return call

    # -- driving --

    def send(self, event: e.Input, after_ms: int = 0) -> list[e.Effect]:
        self.now += after_ms
        return self._record(self.engine.step(self.state, event, self.now))

    def advance(self, ms: int) -> list[e.Effect]:
        """Let time pass, ticking at every timer deadline on the way (as a live call does)."""
        target = self.now + ms
        effects: list[e.Effect] = []
        while (deadline := self.engine.next_deadline(self.state)) is not None:
            if deadline > target:
                break
            self.now = max(self.now, deadline)
            effects += self.send(e.Tick())
        self.now = target
        return effects

    def finish_prompts(self) -> list[e.Effect]:
        effects: list[e.Effect] = []
        for playing in list(self.state.playing):
            effects += self.send(e.PlaybackDone(playing.request_id))
        return effects

    def say(
        self,
        text: str,
        *,
        confidence: float = 0.9,
        intent: str = "",
        score: float = 0.0,
        speech_ms: int = 1_000,
    ) -> list[e.Effect]:
        """A whole caller utterance: speech start, end, final transcript."""
        self.utterances += 1
        uid = f"u{self.utterances}"
        start = self.now - T0
        effects = self.send(e.SpeechStarted(uid))
        self.now += speech_ms
        effects += self.send(e.SpeechEnded(uid))
        effects += self.send(
            e.Transcript(uid, text, True, confidence, start, self.now - T0, intent, score)
        )
        return effects

    def press(self, keys: str, gap_ms: int = 200) -> list[e.Effect]:
        effects: list[e.Effect] = []
        for key in keys:
            effects += self.send(e.Dtmf(key, 80))
            self.now += gap_ms
        return effects

    # -- looking --

    @property
    def at(self) -> str:
        return self.state.session.state

    def spoken(self) -> list[str]:
        return [x.text for _, x in self.log if isinstance(x, e.Speak)]

    def _record(self, effects: list[e.Effect]) -> list[e.Effect]:
        self.log.extend((self.now, x) for x in effects)
        return effects


def only(effects: list[e.Effect], kind: type[E]) -> list[E]:
    return [x for x in effects if isinstance(x, kind)]


def kinds(effects: list[e.Effect]) -> list[str]:
    return [type(x).__name__ for x in effects]


# ---- play_tts -------------------------------------------------------------------------


def test_play_tts_renders_text_with_voice_and_barge_in() -> None:
    call = Call.start(
        """
        name: t
        initial: hello
        settings: {voice: en_US-joe-medium}
        vars: {name: Ada}
        states:
          hello:
            on_enter:
              - play_tts: {text: "Hello {{ vars.name }}, calling from {{ caller.id }}."}
              - play_tts: {text: "Listen carefully.", voice: en_GB-alan, barge_in: deny}
            transitions:
              - {event: speech, target: bye}
          bye: {terminal: true}
        """
    )
    assert call.first == [
        e.Speak("call-1:p1", "Hello Ada, calling from +15550100.", "en_US-joe-medium", ALLOW),
        e.Speak("call-1:p2", "Listen carefully.", "en_GB-alan", DENY),
    ]
    assert call.state.session.actions == [
        PlayTTS(text="Hello Ada, calling from +15550100.", voice="en_US-joe-medium"),
        PlayTTS(text="Listen carefully.", voice="en_GB-alan"),
    ]
    assert [(p.request_id, p.barge_in) for p in call.state.playing] == [
        ("call-1:p1", ALLOW),
        ("call-1:p2", DENY),
    ]


def test_play_tts_without_any_voice_leaves_it_to_the_gateway() -> None:
    call = Call.start(
        """
        name: t
        initial: hello
        states:
          hello:
            on_enter:
              - play_tts: {text: "Hi {{ 1 + 1 }} {{ 2.0 }}"}
            terminal: true
        """
    )
    assert call.first == [e.Speak("call-1:p1", "Hi 2 2", "", ALLOW)]
    assert call.state.session.actions == [PlayTTS(text="Hi 2 2", voice=None)]


def test_play_tts_render_error_is_an_error_event() -> None:
    call = Call.start(
        """
        name: t
        initial: hello
        global_transitions:
          - {event: error, actions: [{set: {why: 'error.message'}}], target: sorry}
        vars: {why: ""}
        states:
          hello:
            on_enter:
              - play_tts: {text: "Your order ships {{ result.eta }}"}
            terminal: true
          sorry:
            on_enter:
              - play_tts: {text: "Sorry."}
            terminal: true
        """
    )
    assert kinds(call.first) == ["Warn", "Speak"]
    assert call.at == "sorry"
    assert isinstance(call.state.vars["why"], str)
    # result is null before any backend answer
    assert call.state.vars["why"] == "'result.eta': Applying SELECT to non-message type"


# ---- transfer -------------------------------------------------------------------------

TRANSFER = """
name: t
initial: ask
vars: {queue: sales, why: ""}
global_transitions:
  - event: error
    actions:
      - set: {why: 'error.kind + "/" + error.code + ": " + error.message'}
    target: sorry
states:
  ask:
    transitions:
      - {event: dtmf, condition: 'digit == "1"', target: agent}
      - {event: dtmf, condition: 'digit == "2"', target: quiet_agent}
  agent:
    on_enter:
      - play_tts: {text: "Connecting you.", barge_in: deny}
      - transfer: {target: "sip:{{ vars.queue }}@pbx.example.com"}
      - play_tts: {text: "never said"}
    terminal: true
  quiet_agent:
    on_enter:
      - transfer: {target: "tel:+15550199"}
    terminal: true
  sorry:
    on_enter:
      - play_tts: {text: "Sorry, {{ vars.why }}"}
    terminal: true
"""


def test_transfer_waits_for_the_prompt_before_it() -> None:
    call = Call.start(TRANSFER)
    effects = call.press("1")
    assert effects == [e.Speak("call-1:p1", "Connecting you.", "", DENY)]
    assert call.state.deferred is not None
    assert call.state.session.actions[-1] == Transfer(target="sip:sales@pbx.example.com")
    # While leaving, the caller's input changes nothing.
    assert call.press("2") == []
    assert call.say("hello?") == []
    effects = call.send(e.PlaybackDone("call-1:p1"), after_ms=1_500)
    assert effects == [e.TransferCall("call-1:c2", "sip:sales@pbx.example.com")]
    assert call.state.transferring == "call-1:c2"
    assert call.state.deferred is None
    assert not call.state.ended  # the gateway reports the call leaving
    assert "never said" not in call.spoken()


def test_transfer_without_prompt_is_immediate() -> None:
    call = Call.start(TRANSFER)
    assert call.press("2") == [e.TransferCall("call-1:c1", "tel:+15550199")]
    assert call.state.transferring == "call-1:c1"
    assert not call.state.ended


def test_transfer_is_sent_after_the_drain_limit_when_a_prompt_never_ends() -> None:
    call = Call.start(TRANSFER)
    call.send(e.Dtmf("1"))
    assert call.advance(e.DRAIN_LIMIT_MS - 1) == []
    effects = call.advance(1)
    assert effects == [
        e.CancelSpeech(("call-1:p1",)),
        e.TransferCall("call-1:c2", "sip:sales@pbx.example.com"),
    ]


def test_named_timers_do_not_fire_while_leaving() -> None:
    call = Call.start(
        """
        name: t
        initial: ask
        global_transitions:
          - {event: timeout, timer: overall, target: late}
        states:
          ask:
            on_enter:
              - start_timer: {name: overall, ms: 5000}
            transitions:
              - {event: dtmf, target: agent}
          agent:
            on_enter:
              - play_tts: {text: "Connecting you.", barge_in: deny}
              - transfer: {target: "sip:agents@pbx.example.com"}
          late:
            on_enter:
              - play_tts: {text: "Sorry, out of time."}
            terminal: true
        """
    )
    call.send(e.Dtmf("1"), after_ms=4_000)
    assert call.advance(2_000) == []  # `overall` was due at 5 s: the call is leaving
    assert call.at == "agent"
    assert call.finish_prompts() == [e.TransferCall("call-1:c2", "sip:agents@pbx.example.com")]
    assert call.spoken() == ["Connecting you."]


def test_failed_transfer_is_an_error_event() -> None:
    call = Call.start(TRANSFER)
    call.press("2")
    effects = call.send(e.CommandFailed("call-1:c1", "486 Busy Here", 486), after_ms=300)
    assert effects == [
        e.Warn("transfer failed", {"sip_status": 486, "reason": "486 Busy Here"}),
        e.Speak("call-1:p2", "Sorry, transfer/failed: 486 Busy Here", "", ALLOW),
    ]
    assert call.at == "sorry"
    assert call.state.transferring == ""
    assert call.state.history[-1].event == "error"
    assert call.state.history[-1].transition == "global_transitions[0]"


def test_failed_transfer_without_error_handler_hangs_up_with_cause_41() -> None:
    call = Call.start(
        """
        name: t
        initial: agent
        states:
          agent:
            on_enter:
              - transfer: {target: "sip:agents@pbx.example.com"}
        """
    )
    assert call.first == [e.TransferCall("call-1:c1", "sip:agents@pbx.example.com")]
    effects = call.send(e.CommandFailed("call-1:c1", "503"))
    assert effects == [
        e.Warn("transfer failed", {"sip_status": 0, "reason": "503"}),
        e.HangupCall("call-1:c2", 41),
        e.SessionEnded("unhandled error"),
    ]
    assert call.state.ended
    assert call.state.session.actions[-1] == Hangup(reason_code=41)


TRANSFER_FAILED = """
name: t
initial: agent
vars: {tries: 0, why: ""}
global_transitions:
  - {event: error, target: sorry}
states:
  agent:
    on_enter:
      - set: {tries: 'vars.tries + 1'}
      - transfer: {target: "sip:pharmacist@pbx.example.com"}
    transitions:
      - event: transfer_failed
        condition: 'sip_status == 486 && vars.tries < 2'
        actions:
          - play_tts: {text: "The pharmacist is busy, trying again."}
        target: agent
      - event: transfer_failed
        condition: 'sip_status >= 500'
        actions:
          - set: {why: 'error.message'}
        target: voicemail
  voicemail:
    on_enter:
      - play_tts: {text: "Please leave a message ({{ vars.why }})."}
    terminal: true
  sorry:
    on_enter:
      - play_tts: {text: "Sorry."}
    terminal: true
"""


def test_a_refused_transfer_is_a_transfer_failed_event_with_its_sip_status() -> None:
    call = Call.start(TRANSFER_FAILED)
    assert call.first == [e.TransferCall("call-1:c1", "sip:pharmacist@pbx.example.com")]
    call.send(e.CommandFailed("call-1:c1", "REFER answered 486 Busy Here", 486))
    assert call.at == "agent" and call.state.vars["tries"] == 2  # re-entered: tried again
    assert call.state.history[-1].event == "transfer_failed"
    assert call.spoken() == ["The pharmacist is busy, trying again."]
    assert call.finish_prompts() == [e.TransferCall("call-1:c3", "sip:pharmacist@pbx.example.com")]
    call.send(e.CommandFailed("call-1:c3", "REFER answered 501 Not Implemented", 501))
    assert call.at == "voicemail"
    assert call.state.vars["why"] == "REFER answered 501 Not Implemented"


def test_a_transfer_failure_no_transition_takes_is_an_error_event() -> None:
    call = Call.start(TRANSFER_FAILED)
    call.send(e.CommandFailed("call-1:c1", "REFER answered 486 Busy Here", 486))
    call.finish_prompts()
    # The second refusal with 486: the retry's condition no longer holds, nor the 5xx one.
    effects = call.send(e.CommandFailed("call-1:c3", "REFER answered 486 Busy Here", 486))
    assert effects[0] == e.Warn(
        "transfer failed", {"sip_status": 486, "reason": "REFER answered 486 Busy Here"}
    )
    assert call.at == "sorry" and call.state.history[-1].event == "error"
    assert call.state.transferring == ""


def test_transfer_to_a_rendered_non_uri_fails_the_action() -> None:
    call = Call.start(
        """
        name: t
        initial: ask
        vars: {target: "agents", why: ""}
        global_transitions:
          - {event: error, actions: [{set: {why: 'error.message'}}], target: sorry}
        states:
          ask:
            transitions:
              - event: dtmf
                actions:
                  - transfer: {target: "{{ vars.target }}"}
          sorry:
            on_enter:
              - hangup: {}
        """
    )
    effects = call.press("1")
    assert only(effects, e.Warn) == [
        e.Warn("action failed", {"error": "transfer target 'agents' is not a SIP/tel URI"})
    ]
    assert only(effects, e.TransferCall) == []
    assert call.state.vars["why"] == "transfer target 'agents' is not a SIP/tel URI"
    assert effects[-2:] == [e.HangupCall("call-1:c1", 16), e.SessionEnded("dialog hung up")]


# ---- hangup -------------------------------------------------------------------------

HANGUP = """
name: t
initial: ask
states:
  ask:
    transitions:
      - {event: dtmf, condition: 'digit == "1"', target: bye}
      - {event: dtmf, condition: 'digit == "2"', target: abrupt}
      - {event: dtmf, condition: 'digit == "3"', target: done}
  bye:
    on_enter:
      - play_tts: {text: "Goodbye!", barge_in: deny}
      - hangup: {reason_code: 17}
      - play_tts: {text: "never said"}
  abrupt:
    on_enter:
      - hangup:
  done:
    on_enter:
      - play_tts: {text: "Done."}
    terminal: true
"""


def test_hangup_waits_for_the_goodbye_prompt() -> None:
    call = Call.start(HANGUP)
    effects = call.press("1")
    assert effects == [e.Speak("call-1:p1", "Goodbye!", "", DENY)]
    assert not call.state.ended
    assert call.state.deferred is not None
    assert call.state.deferred.kind == "hangup"
    assert call.press("3") == []
    effects = call.send(e.PlaybackDone("call-1:p1"), after_ms=900)
    assert effects == [e.HangupCall("call-1:c2", 17), e.SessionEnded("dialog hung up")]
    assert call.state.ended
    assert call.state.end_reason == "dialog hung up"
    assert call.state.session.actions == [PlayTTS(text="Goodbye!"), Hangup(reason_code=17)]
    assert call.state.timers == {}
    assert call.send(e.Tick(), after_ms=60_000) == []


def test_hangup_defaults_to_normal_clearing() -> None:
    call = Call.start(HANGUP)
    assert call.press("2") == [e.HangupCall("call-1:c1", 16), e.SessionEnded("dialog hung up")]


def test_terminal_state_hangs_up_after_its_prompts() -> None:
    call = Call.start(HANGUP)
    assert call.press("3") == [e.Speak("call-1:p1", "Done.", "", ALLOW)]
    assert not call.state.ended
    effects = call.send(e.PlaybackDone("call-1:p1"), after_ms=500)
    assert effects == [
        e.HangupCall("call-1:c2", 16),
        e.SessionEnded("dialog reached a terminal state"),
    ]


def test_hangup_after_a_cancelled_prompt_is_not_lost() -> None:
    call = Call.start(HANGUP)
    call.press("1")
    # The gateway reports the goodbye as cancelled (e.g. it was flushed): still hang up.
    effects = call.send(e.PlaybackDone("call-1:p1", cancelled=True))
    assert effects == [e.HangupCall("call-1:c2", 17), e.SessionEnded("dialog hung up")]


# ---- call_hook --------------------------------------------------------------------------

HOOK = """
name: t
initial: ask
settings: {backend_timeout_ms: 4000}
vars: {order_id: "", outcome: ""}
states:
  ask:
    on_enter:
      - play_tts: {text: "Order number?"}
      - collect_digits: {max_digits: 5, min_digits: 5}
    transitions:
      - event: digits
        actions:
          - set: {order_id: 'digits'}
        target: lookup
      - {event: timeout, target: ask}
    no_input_timeout_ms: 0
  lookup:
    on_enter:
      - play_tts: {text: "Looking up {{ vars.order_id }}."}
      - call_hook:
          service: shop
          method: get_order
          payload:
            order_id: "{{ vars.order_id }}"
            as_number: "{{ int(vars.order_id) }}"
            caller: {id: "{{ caller.id }}", tags: ["{{ state }}", "fixed"]}
            note: "order {{ vars.order_id }} from {{ caller.id }}"
      - call_hook: {service: crm, method: touch, payload: {}, timeout_ms: 700}
    transitions:
      - event: backend_result
        condition: 'has(result.status) && result.status == "shipped"'
        actions:
          - set: {outcome: '"shipped"'}
        target: shipped
      - event: backend_result
        condition: 'has(result.touched)'
      - event: backend_result
        outcome: error
        condition: 'error.code == "not_found"'
        actions:
          - set: {outcome: '"missing: " + error.message'}
        target: ask
      - event: backend_result
        outcome: any
        condition: '!ok && error.code == "timeout"'
        actions:
          - set: {outcome: '"timeout any"'}
        target: ask
  shipped:
    on_enter:
      - play_tts: {text: "Order {{ vars.order_id }} arrives in {{ result.eta_days }} days."}
    terminal: true
"""


def hook_call() -> Call:
    call = Call.start(HOOK)
    call.send(e.PlaybackDone("call-1:p1"), after_ms=1_000)
    return call


def enter_lookup(call: Call) -> list[e.Effect]:
    return call.press("48213")


def test_call_hook_request_and_idempotency_key() -> None:
    call = hook_call()
    effects = enter_lookup(call)
    at = call.now - 200  # the fifth key press
    assert effects == [
        # An order number in a prompt is read digit by digit (say_as digits by default).
        e.Speak("call-1:p2", "Looking up four eight two one three.", "", ALLOW),
        e.ExecuteHook(
            key="call-1:2",
            action_id="2",
            service="shop",
            method="get_order",
            payload={
                "order_id": "48213",
                "as_number": 48213,
                "caller": {"id": "+15550100", "tags": ["lookup", "fixed"]},
                "note": "order 48213 from +15550100",
            },
            deadline_ms=at + 4000,
        ),
        e.ExecuteHook(
            key="call-1:3",
            action_id="3",
            service="crm",
            method="touch",
            payload={},
            deadline_ms=at + 700,
        ),
    ]
    session = call.state.session
    assert session.idempotency_key(2) == "call-1:2"
    assert session.actions[2] == CallHook(
        service="shop", method="get_order", payload=only(effects, e.ExecuteHook)[0].payload
    )
    assert call.state.pending["call-1:2"] == PendingRequest(
        kind="call_hook",
        key="call-1:2",
        action_index=2,
        service="shop",
        method="get_order",
        payload=only(effects, e.ExecuteHook)[0].payload,
        started_ms=at,
        deadline_ms=at + 4000,
    )
    assert sorted(call.state.pending) == ["call-1:2", "call-1:3"]


def test_backend_success_takes_the_success_transition_and_keeps_the_result() -> None:
    call = hook_call()
    enter_lookup(call)
    effects = call.send(
        e.BackendAnswer("call-1:2", True, {"status": "shipped", "eta_days": 2}), after_ms=300
    )
    spoken = "Order four eight two one three arrives in 2 days."
    assert effects == [e.Speak("call-1:p3", spoken, "", ALLOW)]
    assert call.at == "shipped"
    assert call.state.vars["outcome"] == "shipped"
    assert call.state.last.result == {"status": "shipped", "eta_days": 2}
    assert "call-1:2" not in call.state.pending
    assert call.state.session.events[-1] == BackendResultEvent(
        response={"status": "shipped", "eta_days": 2}
    )


def test_backend_answer_handled_by_a_stay_transition() -> None:
    call = hook_call()
    enter_lookup(call)
    assert call.send(e.BackendAnswer("call-1:3", True, {"touched": True})) == []
    assert call.at == "lookup"
    assert call.state.history[-1].transition == "states.lookup.transitions[1]"
    assert call.state.history[-1].to_state == "lookup"
    assert list(call.state.pending) == ["call-1:2"]


def test_backend_error_takes_the_error_outcome() -> None:
    call = hook_call()
    enter_lookup(call)
    effects = call.send(
        e.BackendAnswer("call-1:2", False, None, "not_found", "no such order"), after_ms=300
    )
    assert call.at == "ask"
    assert call.state.vars["outcome"] == "missing: no such order"
    assert effects == [e.Speak("call-1:p3", "Order number?", "", ALLOW)]
    assert call.state.session.events[-1] == BackendResultEvent(
        response={"error": {"kind": "backend", "code": "not_found", "message": "no such order"}}
    )
    assert call.state.last.ok is False


def test_outcome_any_sees_errors() -> None:
    call = hook_call()
    enter_lookup(call)
    call.send(e.BackendAnswer("call-1:2", False, None, "timeout", "deadline exceeded"))
    assert call.at == "ask"
    assert call.state.vars["outcome"] == "timeout any"


def test_success_transitions_do_not_see_errors_and_unhandled_error_hangs_up() -> None:
    call = hook_call()
    enter_lookup(call)
    call.finish_prompts()
    # No transition handles this error code: backend_result unhandled -> error event ->
    # no error transition -> hang up with cause 41 (temporary failure).
    effects = call.send(e.BackendAnswer("call-1:2", False, None, "unavailable", "503"))
    assert effects == [e.HangupCall("call-1:c3", 41), e.SessionEnded("unhandled error")]
    assert call.state.ended
    assert call.state.vars["outcome"] == ""


def test_unhandled_backend_error_reaches_the_error_transition() -> None:
    dialog = compile_yaml(
        HOOK
        + """
  sorry:
    on_enter:
      - play_tts: {text: "Sorry ({{ vars.outcome }})."}
    terminal: true
global_transitions:
  - event: error
    actions:
      - set: {outcome: 'error.kind + ":" + error.code'}
    target: sorry
"""
    )
    call = Call.start(dialog)
    call.send(e.PlaybackDone("call-1:p1"))
    enter_lookup(call)
    call.send(e.BackendAnswer("call-1:2", False, None, "unavailable", "503"))
    assert call.at == "sorry"
    assert call.state.vars["outcome"] == "backend:unavailable"
    assert call.spoken()[-1] == "Sorry (backend:unavailable)."


def test_backend_answer_for_no_pending_request_is_a_warning() -> None:
    call = hook_call()
    effects = call.send(e.BackendAnswer("call-1:99", True, {}))
    assert effects == [e.Warn("backend answer for no pending request", {"key": "call-1:99"})]
    assert call.at == "ask"


def test_call_hook_payload_render_error_is_an_error_event() -> None:
    call = Call.start(
        """
        name: t
        initial: ask
        states:
          ask:
            transitions:
              - event: dtmf
                actions:
                  - call_hook: {service: s, method: m, payload: {id: "{{ result.id }}"}}
              - {event: backend_result, target: done}
          done: {terminal: true}
        """
    )
    effects = call.press("1")
    assert kinds(effects) == ["Warn", "HangupCall", "SessionEnded"]
    assert only(effects, e.HangupCall)[0].reason_code == 41
    assert call.state.pending == {}


# ---- set ----------------------------------------------------------------------------


def test_set_assigns_in_order() -> None:
    call = Call.start(
        """
        name: t
        initial: ask
        vars: {a: 0, b: 0, c: 0, log: []}
        states:
          ask:
            transitions:
              - event: dtmf
                actions:
                  - set: {c: 'vars.b * 10', a: 'int(digit)', b: 'vars.a + 1'}
                  - set: {log: 'vars.log + [vars.a, vars.b, vars.c]'}
                  - play_tts: {text: "{{ vars.a }}/{{ vars.b }}/{{ vars.c }}"}
              - {event: speech, target: done}
          done: {terminal: true}
        """
    )
    effects = call.press("4")
    # c was computed first, from the old b.
    assert call.state.vars == {"a": 4, "b": 5, "c": 0, "log": [4, 5, 0]}
    assert only(effects, e.Speak)[0].text == "4/5/0"
    call.press("7")
    assert call.state.vars == {"a": 7, "b": 8, "c": 50, "log": [4, 5, 0, 7, 8, 50]}


def test_set_later_assignments_see_earlier_ones() -> None:
    call = Call.start(
        """
        name: t
        initial: ask
        vars: {n: 1, double: 0, history: []}
        states:
          ask:
            transitions:
              - event: dtmf
                actions:
                  - set:
                      n: 'vars.n + int(digit)'
                      double: 'vars.n * 2'
                      history: 'vars.history + [vars.n]'
                  - set: {n: 'vars.double + 1'}
              - {event: speech, target: done}
          done: {terminal: true}
        """
    )
    call.press("3")
    assert call.state.vars == {"n": 9, "double": 8, "history": [4]}
    call.press("1")
    assert call.state.vars == {"n": 21, "double": 20, "history": [4, 10]}


def test_set_evaluation_error_is_an_error_event() -> None:
    call = Call.start(
        """
        name: t
        initial: ask
        vars: {n: 0, why: ""}
        global_transitions:
          - {event: error, actions: [{set: {why: 'error.message'}}], target: sorry}
        states:
          ask:
            transitions:
              - event: dtmf
                actions:
                  - set: {n: 'vars.n + int(transcript)'}
                  - play_tts: {text: "not reached"}
          sorry:
            on_enter:
              - hangup: {}
        """
    )
    effects = call.press("1")
    assert kinds(effects) == ["Warn", "HangupCall", "SessionEnded"]
    why = call.state.vars["why"]
    assert isinstance(why, str)
    # type-correct (validation would refuse 'vars.n + transcript'), but "" is not a number
    assert why == "set n: 'vars.n + int(transcript)': cannot convert string to int"
    assert call.state.vars["n"] == 0


# ---- collect_digits --------------------------------------------------------------------

DIGITS = """
name: t
initial: ask
settings: {no_input_timeout_ms: 0}
vars: {got: "", partial: "", waited: -1}
states:
  ask:
    on_enter:
      - collect_digits:
          max_digits: 6
          min_digits: 3
          terminator: "#"
          inter_digit_timeout_ms: 2000
          timeout_ms: 5000
    transitions:
      - event: digits
        actions: [{set: {got: 'digits'}}]
        target: done
      - event: timeout
        timer: collect_digits
        actions: [{set: {partial: 'digits', waited: 'timer_elapsed_ms'}}]
        target: failed
      - event: dtmf
        target: wrong
  done:
    transitions:
      - {event: dtmf, target: wrong}
  failed:
    transitions:
      - {event: dtmf, target: wrong}
  wrong: {terminal: true}
"""


def test_terminator_ends_collection_early() -> None:
    call = Call.start(DIGITS)
    assert call.state.collecting is not None
    call.press("1234#")
    assert (call.at, call.state.vars["got"]) == ("done", "1234")
    assert call.state.last.digits == "1234"
    assert call.state.turn == 1  # one digits turn, the key presses are not dtmf turns
    assert call.state.collecting is None
    assert "collect_digits" not in call.state.timers
    assert [x.digit for x in call.state.session.events if isinstance(x, DTMFEvent)] == list("1234#")


def test_max_digits_ends_collection_without_terminator() -> None:
    call = Call.start(DIGITS)
    call.press("123456")
    assert (call.at, call.state.vars["got"]) == ("done", "123456")
    # The next key is an ordinary dtmf event of the new state.
    call.press("7")
    assert call.at == "wrong"


def test_inter_digit_timeout_with_enough_digits_completes() -> None:
    call = Call.start(DIGITS)
    call.press("1234", gap_ms=0)
    assert call.advance(1_999) == []
    assert call.at == "ask"
    call.advance(1)
    assert (call.at, call.state.vars["got"]) == ("done", "1234")


def test_inter_digit_timeout_with_too_few_digits_is_a_timeout() -> None:
    call = Call.start(DIGITS)
    call.send(e.Dtmf("1"), after_ms=1_000)
    call.send(e.Dtmf("2"), after_ms=500)
    call.advance(2_000)
    assert call.at == "failed"
    assert call.state.vars == {"got": "", "partial": "12", "waited": 2_000}
    assert call.state.history[-1].event == "timeout"
    assert call.state.session.events[-1] == TimeoutEvent(elapsed_ms=2_000)


def test_terminator_before_min_digits_is_a_timeout() -> None:
    call = Call.start(DIGITS)
    call.send(e.Dtmf("1"), after_ms=1_000)
    call.send(e.Dtmf("2"), after_ms=400)
    call.send(e.Dtmf("#"), after_ms=300)
    assert call.at == "failed"
    assert call.state.vars == {"got": "", "partial": "12", "waited": 300}


def test_first_digit_timeout() -> None:
    call = Call.start(DIGITS)
    assert call.advance(4_999) == []
    assert call.at == "ask"
    call.advance(1)
    assert call.at == "failed"
    assert call.state.vars == {"got": "", "partial": "", "waited": 5_000}


def test_first_digit_timeout_counts_from_the_end_of_the_prompt() -> None:
    call = Call.start(
        DIGITS.replace(
            "    on_enter:\n      - collect_digits:",
            '    on_enter:\n      - play_tts: {text: "Enter your PIN"}\n      - collect_digits:',
        )
    )
    assert "collect_digits" not in call.state.timers
    call.advance(8_000)  # a long prompt: the caller cannot be timed out while it plays
    assert call.at == "ask"
    call.finish_prompts()
    assert call.advance(4_999) == []
    call.advance(1)
    assert call.at == "failed"
    assert call.state.vars["waited"] == 5_000


def test_digits_typed_ahead_during_the_prompt_are_kept() -> None:
    call = Call.start(
        DIGITS.replace(
            "    on_enter:\n      - collect_digits:",
            '    on_enter:\n      - play_tts: {text: "Enter your PIN"}\n      - collect_digits:',
        )
    )
    call.press("12")
    call.finish_prompts()
    call.press("3#")
    assert (call.at, call.state.vars["got"]) == ("done", "123")


def test_barge_in_over_the_prompt_starts_the_first_digit_wait() -> None:
    call = Call.start(
        DIGITS.replace(
            "    on_enter:\n      - collect_digits:",
            '    on_enter:\n      - play_tts: {text: "Enter your PIN"}\n      - collect_digits:',
        )
    )
    call.send(e.SpeechStarted("u1"), after_ms=1_000)
    assert call.state.timers["collect_digits"].deadline_ms == call.now + 5_000
    call.send(e.Transcript("u1", "uh what", True), after_ms=800)
    call.advance(4_200)
    assert call.at == "failed"


def test_dtmf_is_not_a_dtmf_event_while_collecting() -> None:
    call = Call.start(DIGITS)
    for key in "1*":
        assert call.send(e.Dtmf(key)) == []
        assert call.at == "ask"
    assert call.state.collecting is not None
    assert call.state.collecting.digits == "1*"
    assert call.state.turn == 0


def test_collect_digits_without_terminator_takes_hash_as_a_digit() -> None:
    call = Call.start(DIGITS.replace('terminator: "#"', "terminator: null"))
    call.press("12#")
    assert call.at == "ask"
    call.advance(2_000)
    assert (call.at, call.state.vars["got"]) == ("done", "12#")


SPOKEN_DIGITS = DIGITS.replace(
    "      - event: dtmf\n        target: wrong\n  done:",
    "      - event: dtmf\n        target: wrong\n"
    "      - event: speech\n        actions: [{set: {partial: 'transcript'}}]\n  done:",
)


def test_spoken_digits_complete_the_collection() -> None:
    call = Call.start(SPOKEN_DIGITS)
    call.say("It's forty-eight thousand, two hundred thirteen.")
    assert (call.at, call.state.vars["got"]) == ("done", "48213")
    assert call.state.last.digits == "48213"
    assert call.state.history[-1].event == "digits"
    assert call.state.turn == 1
    # The words stay on record as the caller's turn (the transcript, like any speech turn).
    speech = [x for x in call.state.session.events if isinstance(x, SpeechEvent)]
    assert [x.transcript for x in speech] == ["It's forty-eight thousand, two hundred thirteen."]
    assert call.state.last.transcript == speech[0].transcript


def test_spoken_digits_outside_the_bounds_are_an_ordinary_speech_turn() -> None:
    for said in ("four eight", "one two three four five six seven", "I don't have it"):
        call = Call.start(SPOKEN_DIGITS)
        call.say(said)
        assert (call.at, call.state.vars["partial"]) == ("ask", said)
        assert call.state.history[-1].event == "speech"
        assert call.state.collecting is not None


def test_spoken_digits_off() -> None:
    call = Call.start(
        SPOKEN_DIGITS.replace("timeout_ms: 5000", "timeout_ms: 5000\n          spoken: false")
    )
    call.say("four eight two one")
    assert (call.at, call.state.vars["partial"]) == ("ask", "four eight two one")


def test_spoken_digits_do_not_mix_with_keys_pressed() -> None:
    call = Call.start(SPOKEN_DIGITS)
    call.press("12")
    call.say("three four five")
    assert (call.at, call.state.vars["partial"]) == ("ask", "three four five")
    assert call.state.collecting is not None and call.state.collecting.digits == "12"


def test_spoken_digits_follow_the_dialog_language() -> None:
    call = Call.start(SPOKEN_DIGITS.replace("settings: {", "settings: {language: fr, "))
    call.say("quatre huit deux un")
    assert (call.at, call.state.vars["got"]) == ("done", "4821")


def test_the_first_digit_wait_holds_while_the_caller_speaks() -> None:
    call = Call.start(SPOKEN_DIGITS)
    call.advance(4_000)
    call.send(e.SpeechStarted("u1"))
    call.advance(3_000)  # the 5 s wait ran out mid-utterance: not a timeout yet
    assert call.at == "ask"
    call.send(e.SpeechEnded("u1"))
    call.send(e.Transcript("u1", "four eight two one", True), after_ms=300)
    assert (call.at, call.state.vars["got"]) == ("done", "4821")


def test_the_first_digit_wait_starts_again_after_a_turn_without_digits() -> None:
    call = Call.start(SPOKEN_DIGITS)
    call.advance(4_000)
    call.send(e.SpeechStarted("u1"))
    call.advance(3_000)
    call.send(e.Transcript("u1", "hang on", True))
    assert call.at == "ask"
    assert call.advance(4_999) == []
    call.advance(1)
    assert call.at == "failed"


# ---- timers ---------------------------------------------------------------------------

TIMERS = """
name: t
initial: wait
settings: {no_input_timeout_ms: 0}
vars: {fired: []}
states:
  wait:
    on_enter:
      - start_timer: {name: slow, ms: 3000}
      - start_timer: {name: fast, ms: 1000}
      - start_timer: {name: mid_b, ms: 2000}
      - start_timer: {name: mid_a, ms: 2000}
    transitions:
      - event: dtmf
        actions:
          - cancel_timer: {name: slow}
      - event: timeout
        timer: slow
        actions:
          - set: {fired: 'vars.fired + [[timer, timer_elapsed_ms, elapsed_ms]]'}
        target: done
      - event: timeout
        actions:
          - set: {fired: 'vars.fired + [[timer, timer_elapsed_ms, elapsed_ms]]'}
  done:
    transitions:
      - {event: timeout, target: wait}
"""


def test_timers_fire_in_deadline_order() -> None:
    call = Call.start(TIMERS)
    assert call.engine.next_deadline(call.state) == T0 + 1_000
    # One late tick fires everything due, earliest deadline first (then by name).
    call.send(e.Tick(), after_ms=5_000)
    assert call.state.vars["fired"] == [
        ["fast", 5_000, 5_000],
        ["mid_a", 5_000, 5_000],
        ["mid_b", 5_000, 5_000],
        ["slow", 5_000, 5_000],
    ]
    assert call.at == "done"
    assert call.state.timers == {"max_duration": call.state.timers["max_duration"]}


def test_timers_fire_at_their_deadlines() -> None:
    call = Call.start(TIMERS)
    call.advance(3_500)
    assert call.state.vars["fired"] == [
        ["fast", 1_000, 1_000],
        ["mid_a", 2_000, 2_000],
        ["mid_b", 2_000, 2_000],
        ["slow", 3_000, 3_000],
    ]
    assert [x.elapsed_ms for x in call.state.session.events if isinstance(x, TimeoutEvent)] == [
        1_000,
        2_000,
        2_000,
        3_000,
    ]


def test_cancel_timer() -> None:
    call = Call.start(TIMERS)
    call.send(e.Dtmf("5"), after_ms=1_500)
    assert "slow" not in call.state.timers
    call.advance(10_000)
    assert [x[0] for x in call.state.vars["fired"]] == ["fast", "mid_a", "mid_b"]  # type: ignore[index,union-attr]
    assert call.at == "wait"


def test_stay_transition_does_not_rerun_on_enter() -> None:
    call = Call.start(TIMERS)
    call.advance(1_000)
    assert call.state.history[-1].to_state == "wait"
    assert call.state.timers["slow"].deadline_ms == T0 + 3_000  # not restarted


# ---- no_input ---------------------------------------------------------------------------

NO_INPUT = """
name: t
initial: ask
settings: {no_input_timeout_ms: 3000}
vars: {heard: ""}
states:
  ask:
    on_enter:
      - play_tts: {text: "Say yes or no."}
    transitions:
      - event: speech
        condition: 'transcript == "yes"'
        target: agreed
      - event: dtmf
        condition: 'digit == "1"'
        target: agreed
      - event: timeout
        timer: no_input
        actions: [{set: {heard: '"silence after " + string(timer_elapsed_ms)'}}]
        target: nudge
  nudge:
    transitions:
      - {event: speech, target: agreed}
    no_input_timeout_ms: 0
  agreed: {terminal: true}
"""


def test_no_input_is_armed_only_after_the_prompts() -> None:
    call = Call.start(NO_INPUT)
    assert "no_input" not in call.state.timers
    call.advance(20_000)
    assert call.at == "ask"
    call.send(e.PlaybackDone("call-1:p1"))
    assert call.state.timers["no_input"].deadline_ms == call.now + 3_000
    assert call.advance(2_999) == []
    call.advance(1)
    assert call.at == "nudge"
    assert call.state.vars["heard"] == "silence after 3000"


def test_speech_start_cancels_no_input_and_an_unhandled_turn_rearms_it() -> None:
    call = Call.start(NO_INPUT)
    call.send(e.PlaybackDone("call-1:p1"))
    call.send(e.SpeechStarted("u1"), after_ms=2_000)
    assert "no_input" not in call.state.timers
    call.advance(5_000)  # a long utterance: no timeout while the caller talks
    assert call.at == "ask"
    call.send(e.SpeechEnded("u1"))
    call.send(e.Transcript("u1", "maybe", True))
    assert call.state.timers["no_input"].deadline_ms == call.now + 3_000
    call.advance(3_000)
    assert call.at == "nudge"


def test_dtmf_cancels_no_input_and_an_unhandled_key_rearms_it() -> None:
    call = Call.start(NO_INPUT)
    call.send(e.PlaybackDone("call-1:p1"))
    call.send(e.Dtmf("7"), after_ms=2_000)  # not handled by any transition
    assert call.at == "ask"
    assert call.state.timers["no_input"].deadline_ms == call.now + 3_000
    assert call.advance(2_999) == []
    call.advance(1)
    assert call.at == "nudge"


def test_handled_dtmf_leaves_the_state() -> None:
    call = Call.start(NO_INPUT)
    call.send(e.PlaybackDone("call-1:p1"))
    effects = call.send(e.Dtmf("1"), after_ms=1_000)
    assert call.at == "agreed"
    assert effects == [
        e.HangupCall("call-1:c2", 16),
        e.SessionEnded("dialog reached a terminal state"),
    ]


def test_an_unrecognised_turn_re_prompts_at_once() -> None:
    """The caller spoke, the recogniser made nothing of it (an empty final): the state's
    no_input timeout fires now, with a warning, instead of after 3 s of silence."""
    call = Call.start(NO_INPUT)
    call.send(e.PlaybackDone("call-1:p1"))
    effects = call.say("", speech_ms=800)
    assert call.at == "nudge", "the no_input transition was taken at once"
    assert call.state.vars["heard"] == "silence after 0"
    warnings = only(effects, e.Warn)
    assert [w.message for w in warnings] == [
        "caller turn not recognised (empty final transcript); re-prompting"
    ]
    assert warnings[0].detail == {"state": "ask"}
    assert call.state.turn == 0, "no speech turn was counted"


def test_an_unrecognised_turn_while_collecting_digits_is_the_collection_timeout() -> None:
    call = Call.start(DIGITS)
    call.press("12")
    call.say("")
    assert call.at == "failed", "the collect_digits timeout, at once"
    assert call.state.vars["partial"] == "12"


def test_an_unrecognised_turn_unhandled_rearms_no_input() -> None:
    call = Call.start(NO_INPUT.replace("timer: no_input", "timer: max_duration"))
    call.send(e.PlaybackDone("call-1:p1"))
    call.say("")
    assert call.at == "ask"
    assert call.state.timers["no_input"].deadline_ms == call.now + 3_000


def test_a_final_that_never_comes_is_given_up_and_the_caller_re_prompted() -> None:
    """Speech ended but no final arrived (a lost stream, a stuck recogniser): after
    FINAL_LIMIT_MS the turn is taken without it."""
    call = Call.start(NO_INPUT)
    call.send(e.PlaybackDone("call-1:p1"))
    call.send(e.SpeechStarted("u1"), after_ms=500)
    call.send(e.SpeechEnded("u1"), after_ms=900)
    assert call.state.timers[e.FINAL_TIMER].deadline_ms == call.now + e.FINAL_LIMIT_MS
    assert call.advance(e.FINAL_LIMIT_MS - 1) == []
    effects = call.advance(1)
    assert [w.message for w in only(effects, e.Warn)] == [
        "no final transcript after the end of speech; taking the turn without it",
        "caller turn not recognised (empty final transcript); re-prompting",
    ]
    assert only(effects, e.Warn)[0].detail == {"utterances": ["u1"], "waited_ms": 10_000}
    assert call.at == "nudge"
    # A final arriving after all changes nothing.
    assert call.send(e.Transcript("u1", "yes", True)) == []
    assert call.at == "nudge"


def test_the_final_wait_ends_with_the_last_awaited_final() -> None:
    call = Call.start(NO_INPUT)
    call.send(e.PlaybackDone("call-1:p1"))
    call.send(e.SpeechStarted("u1"))
    call.send(e.SpeechEnded("u1"), after_ms=600)
    call.send(e.SpeechStarted("u2"), after_ms=200)
    call.send(e.SpeechEnded("u2"), after_ms=600)
    call.send(e.Transcript("u1", "yes", True))
    assert e.FINAL_TIMER in call.state.timers, "u2's final is still awaited"
    assert call.at == "ask", "the turn is not taken before all its finals are in"
    call.send(e.Transcript("u2", "", True))  # a cough: nothing recognised
    assert call.at == "agreed"
    assert e.FINAL_TIMER not in call.state.timers


def test_zero_no_input_timeout_disables_it() -> None:
    call = Call.start(NO_INPUT)
    call.send(e.PlaybackDone("call-1:p1"))
    call.advance(3_000)
    assert call.at == "nudge"
    assert "no_input" not in call.state.timers
    call.advance(60_000)
    assert call.at == "nudge"


# ---- max_duration -------------------------------------------------------------------------


def test_max_duration_unhandled_hangs_up() -> None:
    call = Call.start(
        """
        name: t
        initial: ask
        settings: {max_call_duration_ms: 10000, no_input_timeout_ms: 0}
        states:
          ask:
            transitions:
              - {event: speech, target: done}
          done: {terminal: true}
        """
    )
    assert call.advance(9_999) == []
    assert call.advance(1) == [
        e.HangupCall("call-1:c1", 16),
        e.SessionEnded("maximum call duration reached"),
    ]


def test_max_duration_hangup_waits_for_the_prompt() -> None:
    call = Call.start(
        """
        name: t
        initial: ask
        settings: {max_call_duration_ms: 1000, no_input_timeout_ms: 0}
        states:
          ask:
            on_enter:
              - play_tts: {text: "A very long menu"}
            transitions:
              - {event: speech, target: done}
          done: {terminal: true}
        """
    )
    assert call.advance(1_000) == []
    assert call.state.deferred is not None
    assert call.send(e.PlaybackDone("call-1:p1")) == [
        e.HangupCall("call-1:c2", 16),
        e.SessionEnded("maximum call duration reached"),
    ]


def test_max_duration_can_be_handled() -> None:
    call = Call.start(
        """
        name: t
        initial: ask
        settings: {max_call_duration_ms: 5000, no_input_timeout_ms: 0}
        states:
          ask:
            transitions:
              - {event: speech, target: done}
              - {event: timeout, timer: max_duration, target: late}
          late:
            on_enter:
              - play_tts: {text: "We are out of time."}
            terminal: true
          done: {terminal: true}
        """
    )
    assert call.advance(5_000) == [e.Speak("call-1:p1", "We are out of time.", "", ALLOW)]
    assert call.at == "late"


# ---- llm -----------------------------------------------------------------------------

LLM = """
name: t
initial: ask
settings:
  llm: {base_url: "http://llm:8000/v1", model: m, timeout_ms: 2500}
vars: {day: "", why: ""}
states:
  ask:
    transitions:
      - event: speech
        actions:
          - llm:
              mode: classify
              prompt: "Caller {{ caller.id }} was asked about {{ state }}. Classify."
              labels: [confirm, cancel]
        target: classify
      - event: dtmf
        actions:
          - llm:
              mode: extract
              prompt: "Extract the day."
              input: "key {{ digit }}"
              slots: {day: "weekday"}
              timeout_ms: 900
        target: extract
  classify:
    transitions:
      - {event: llm_result, condition: 'label == "confirm"', target: confirmed}
      - {event: llm_result, target: ask}
      - event: error
        actions: [{set: {why: 'error.kind + "/" + error.code'}}]
        target: ask
  extract:
    transitions:
      - event: llm_result
        condition: 'has(slots.day)'
        actions: [{set: {day: 'slots.day'}}]
        target: confirmed
  confirmed: {terminal: true}
"""


def test_llm_classify_request() -> None:
    call = Call.start(LLM)
    effects = call.say("yes that works")
    assert effects == [
        e.AskLlm(
            key="call-1:llm1",
            request={
                "mode": "classify",
                "prompt": "Caller +15550100 was asked about ask. Classify.",
                "input": "yes that works",
                "labels": ["confirm", "cancel"],
                "slots": {},
            },
            deadline_ms=call.now + 2_500,
        )
    ]
    assert call.at == "classify"
    pending = call.state.pending["call-1:llm1"]
    assert (pending.kind, pending.llm, pending.deadline_ms) == (
        "llm",
        effects[0].request,  # type: ignore[union-attr]
        call.now + 2_500,
    )


def test_llm_result_takes_the_llm_result_transition() -> None:
    call = Call.start(LLM)
    call.say("yes that works")
    effects = call.send(e.LlmAnswer("call-1:llm1", True, "confirm"), after_ms=800)
    assert call.at == "confirmed"
    assert effects == [
        e.HangupCall("call-1:c2", 16),
        e.SessionEnded("dialog reached a terminal state"),
    ]
    assert call.state.pending == {}


def test_llm_extract_slots() -> None:
    call = Call.start(LLM)
    effects = call.press("5")
    assert only(effects, e.AskLlm)[0].request["input"] == "key 5"
    assert only(effects, e.AskLlm)[0].deadline_ms == call.now - 200 + 900
    call.send(e.LlmAnswer("call-1:llm1", True, slots={"day": "Friday"}))
    assert (call.at, call.state.vars["day"]) == ("confirmed", "Friday")


def test_llm_failure_is_an_error_event() -> None:
    call = Call.start(LLM)
    call.say("hmm")
    call.send(e.LlmAnswer("call-1:llm1", False, error_code="timeout", error_message="slow"))
    assert call.at == "ask"
    assert call.state.vars["why"] == "llm/timeout"
    assert call.state.history[-1].event == "error"


def test_llm_answer_for_no_pending_request_is_a_warning() -> None:
    call = Call.start(LLM)
    assert call.send(e.LlmAnswer("call-1:llm9", True, "confirm")) == [
        e.Warn("LLM answer for no pending request", {"key": "call-1:llm9"})
    ]


# ---- barge-in ----------------------------------------------------------------------------

BARGE = """
name: t
initial: menu
settings: {no_input_timeout_ms: 5000}
vars: {barged: 0}
states:
  menu:
    on_enter:
      - play_tts: {text: "Say sales or support.", barge_in: "{mode}"}
    transitions:
      - event: barge_in
        actions: [{set: {barged: 'vars.barged + 1'}}]
      - event: speech
        condition: 'transcript == "sales"'
        target: sales
      - event: speech
        target: other
  sales: {terminal: true}
  other: {terminal: true}
"""


def test_barge_in_allowed_stops_the_prompt_and_takes_the_turn() -> None:
    call = Call.start(BARGE.replace("{mode}", "allow"))
    effects = call.send(e.SpeechStarted("u1"), after_ms=700)
    assert effects == [e.CancelSpeech(("call-1:p1",))]
    assert call.state.vars["barged"] == 1
    assert call.state.playing == []
    assert call.state.history[-1].event == "barge_in"
    # The cancelled prompt's late PlaybackDone changes nothing.
    assert call.send(e.PlaybackDone("call-1:p1", cancelled=True), after_ms=50) == []
    assert "no_input" not in call.state.timers  # the caller is still talking
    call.send(e.SpeechEnded("u1"), after_ms=600)
    effects = call.send(e.Transcript("u1", "sales", True, 0.8, 700, 1_300))
    assert call.at == "sales"
    assert call.state.last.transcript == "sales"
    assert call.state.session.events[-1] == SpeechEvent.model_validate(
        {"transcript": "sales", "confidence": 0.8, "timing": {"start_ms": 700, "end_ms": 1_300}}
    )
    assert effects == [
        e.HangupCall("call-1:c2", 16),
        e.SessionEnded("dialog reached a terminal state"),
    ]


def test_barge_in_denied_ignores_the_whole_utterance() -> None:
    call = Call.start(BARGE.replace("{mode}", "deny"))
    assert call.send(e.SpeechStarted("u1"), after_ms=700) == []
    assert call.send(e.Transcript("u1", "sal", False)) == []
    assert call.send(e.SpeechEnded("u1"), after_ms=600) == []
    assert call.send(e.Transcript("u1", "sales", True)) == []
    assert call.at == "menu"
    assert call.state.vars["barged"] == 0
    assert call.state.turn == 0
    assert call.state.turn_in_progress is None
    assert call.state.ignored_utterances == []
    assert not [x for x in call.state.session.events if isinstance(x, SpeechEvent)]
    # After the prompt the caller is heard again.
    call.send(e.PlaybackDone("call-1:p1"), after_ms=500)
    call.say("support")
    assert call.at == "other"


def test_denied_utterance_that_outlives_the_prompt_is_still_ignored() -> None:
    call = Call.start(BARGE.replace("{mode}", "deny"))
    call.send(e.SpeechStarted("u1"), after_ms=700)
    call.send(e.PlaybackDone("call-1:p1"), after_ms=300)
    call.send(e.SpeechEnded("u1"), after_ms=300)
    assert call.send(e.Transcript("u1", "sales", True)) == []
    assert call.at == "menu"


# ---- endpointing -------------------------------------------------------------------------

ENDPOINT = """
name: t
initial: ask
settings:
  no_input_timeout_ms: 4000
  endpointing: {min_words: 2}
vars: {said: ""}
states:
  ask:
    transitions:
      - event: speech
        actions: [{set: {said: 'transcript'}}]
        target: number
  number:
    endpointing: {silence_ms: 800}
    transitions:
      - event: speech
        actions: [{set: {said: 'transcript'}}]
        target: done
  done: {terminal: true}
"""


def test_min_words_drops_short_utterances() -> None:
    call = Call.start(ENDPOINT)
    assert call.say("yes") == []
    assert call.at == "ask"
    assert call.state.turn == 0
    assert call.state.timers["no_input"].deadline_ms == call.now + 4_000
    call.say("yes please")
    assert (call.at, call.state.vars["said"], call.state.turn) == ("number", "yes please", 1)


def test_silence_window_merges_finals_into_one_turn() -> None:
    call = Call.start(ENDPOINT)
    call.say("my number")
    assert call.at == "number"
    call.say("four eight", speech_ms=900)
    assert call.at == "number"  # waiting: the caller may go on
    assert call.advance(500) == []
    call.say("two one", speech_ms=700)  # resumes within the window: same turn
    assert call.at == "number"
    assert call.advance(799) == []
    call.advance(1)
    assert (call.at, call.state.vars["said"], call.state.turn) == ("done", "four eight two one", 2)
    speech = [x for x in call.state.session.events if isinstance(x, SpeechEvent)]
    assert len(speech) == 2
    assert speech[1].transcript == "four eight two one"


def test_silence_window_commits_when_speech_does_not_resume() -> None:
    call = Call.start(ENDPOINT)
    call.say("my number")
    call.say("four eight")
    assert call.advance(799) == []
    call.advance(1)
    assert (call.at, call.state.vars["said"]) == ("done", "four eight")


def test_partial_transcripts_are_events_when_enabled() -> None:
    call = Call.start(
        """
        name: t
        initial: ask
        settings: {partials: true}
        states:
          ask:
            transitions:
              - {event: partial, condition: 'transcript.contains("agent")', target: agent}
          agent:
            on_enter:
              - transfer: {target: "sip:agent@pbx.example.com"}
        """
    )
    call.send(e.SpeechStarted("u1"))
    assert call.send(e.Transcript("u1", "I want", False)) == []
    effects = call.send(e.Transcript("u1", "I want an agent", False))
    assert effects == [e.TransferCall("call-1:c1", "sip:agent@pbx.example.com")]


# ---- caller hangup ---------------------------------------------------------------------------

HANGUP_HOOK = """
name: t
initial: ask
vars: {n: 0}
states:
  ask:
    on_enter:
      - play_tts: {text: "Hello"}
    transitions:
      - event: hangup
        actions:
          - set: {n: 'vars.n + 1'}
          - play_tts: {text: "never said"}
          - call_hook:
              service: crm
              method: abandoned
              payload: {state: "{{ state }}", n: "{{ vars.n }}"}
          - hangup: {}
        target: after
      - {event: speech, target: after}
  after:
    on_enter:
      - play_tts: {text: "never entered"}
    terminal: true
"""


def test_caller_hangup_runs_call_hook_and_ends_the_session() -> None:
    call = Call.start(HANGUP_HOOK)
    effects = call.send(e.CallerHangup(), after_ms=1_200)
    assert effects == [
        e.ExecuteHook(
            key="call-1:1",
            action_id="1",
            service="crm",
            method="abandoned",
            payload={"state": "ask", "n": 1},
            deadline_ms=call.now + 5_000,
        ),
        e.SessionEnded("caller hung up"),
    ]
    assert call.state.ended
    assert call.state.end_reason == "caller hung up"
    assert call.at == "ask"
    assert call.state.playing == []
    assert call.state.vars["n"] == 1
    assert call.send(e.BackendAnswer("call-1:1", True, {})) == []
    assert call.say("hello?") == []


def test_caller_hangup_without_transition_just_ends() -> None:
    call = Call.start(HANGUP)
    assert call.send(e.CallerHangup("network lost")) == [e.SessionEnded("network lost")]


def test_caller_hangup_during_a_deferred_hangup() -> None:
    call = Call.start(HANGUP)
    call.press("1")
    assert call.send(e.CallerHangup()) == [e.SessionEnded("caller hung up")]
    assert not only([x for _, x in call.log], e.HangupCall)


def test_failing_action_after_caller_hangup_does_not_revive_the_call() -> None:
    call = Call.start(
        """
        name: t
        initial: ask
        global_transitions:
          - {event: error, target: sorry}
        states:
          ask:
            transitions:
              - event: hangup
                actions:
                  - call_hook: {service: crm, method: m, payload: {id: "{{ result.id }}"}}
              - {event: speech, target: sorry}
          sorry:
            on_enter:
              - play_tts: {text: "Sorry"}
              - transfer: {target: "sip:agent@pbx.example.com"}
            terminal: true
        """
    )
    effects = call.send(e.CallerHangup())
    assert kinds(effects) == ["Warn", "SessionEnded"]
    assert effects[-1] == e.SessionEnded("caller hung up")
    assert call.at == "ask"


# ---- misc dispatch -------------------------------------------------------------------------


def test_on_enter_failure_in_an_error_handler_hangs_up() -> None:
    call = Call.start(
        """
        name: t
        initial: ask
        vars: {x: null}
        global_transitions:
          - {event: error, target: sorry}
        states:
          ask:
            transitions:
              - event: dtmf
                actions: [{set: {x: 'result.nope'}}]
              - {event: speech, target: sorry}
          sorry:
            on_enter:
              - play_tts: {text: "Sorry about {{ result.what }}"}
            terminal: true
        """
    )
    effects = call.press("1")
    # dtmf action fails -> error -> sorry, whose on_enter fails too: no second round.
    assert kinds(effects) == ["Warn", "Warn", "HangupCall", "SessionEnded"]
    assert only(effects, e.HangupCall)[0].reason_code == 41
    assert call.at == "sorry"


def test_on_enter_failure_after_a_backend_result_reaches_the_error_handler() -> None:
    # order-status reads result.eta_days when the order has shipped; a backend answer
    # without it must lead to the dialog's apology, not a bare hangup.
    call = Call.start(load_dialog_file(EXAMPLES / "order-status.yaml"))
    call.finish_prompts()
    call.say("it is four eight two one three")
    call.finish_prompts()
    effects = call.send(e.BackendAnswer("call-1:2", True, {"status": "shipped"}))
    assert call.at == "apology"
    assert only(effects, e.Warn)[0].detail["error"].startswith("'result.eta_days': no such key")
    assert call.spoken()[-1] == "Sorry, something went wrong on our side. Please call again later."
    assert call.finish_prompts() == [
        e.HangupCall("call-1:c4", 16),
        e.SessionEnded("dialog hung up"),
    ]


def test_failing_condition_is_skipped_with_a_warning() -> None:
    call = Call.start(
        """
        name: t
        initial: ask
        states:
          ask:
            transitions:
              - {event: dtmf, condition: 'result.missing == 1', target: a}
              - {event: dtmf, condition: 'result', target: a}
              - {event: dtmf, target: b}
          a: {terminal: true}
          b: {terminal: true}
        """
    )
    effects = call.press("1")
    warnings = only(effects, e.Warn)
    assert [(w.message, w.detail["path"]) for w in warnings] == [
        ("condition failed; transition skipped", "states.ask.transitions[0]"),
        ("condition failed; transition skipped", "states.ask.transitions[1]"),
    ]
    # result is dyn, so validation lets it be a condition; null is not a bool
    assert warnings[1].detail["error"] == "condition produced NoneType None, not a bool"
    assert call.at == "b"


def test_state_transitions_come_before_globals() -> None:
    dialog = load_dialog_file(EXAMPLES / "order-status.yaml")
    call = Call.start(dialog)
    call.finish_prompts()
    call.say("let me talk to a person", intent="agent", score=0.9)
    assert call.at == "agent"
    assert call.state.history[-1].transition == "global_transitions[1]"


def test_error_while_handling_an_error_hangs_up() -> None:
    call = Call.start(
        """
        name: t
        initial: ask
        vars: {x: null}
        global_transitions:
          - event: error
            actions: [{set: {x: 'result.nope'}}]
            target: ask
        states:
          ask:
            transitions:
              - event: dtmf
                actions: [{set: {x: 'result.nope'}}]
              - {event: speech, target: done}
          done: {terminal: true}
        """
    )
    effects = call.press("1")
    assert kinds(effects) == ["Warn", "Warn", "HangupCall", "SessionEnded"]
    assert only(effects, e.HangupCall)[0].reason_code == 41


def test_history_records_each_transition() -> None:
    call = Call.start(HANGUP)
    call.press("3")
    assert [(h.event, h.from_state, h.to_state, h.transition) for h in call.state.history] == [
        ("start", "", "ask", ""),
        ("dtmf", "ask", "done", "states.ask.transitions[2]"),
    ]
    assert call.state.history[1].at_ms == T0


# ---- determinism and resumption -----------------------------------------------------------


def order_status_inputs() -> list[tuple[int, e.Input]]:
    """A full order-status call as (ms after start, input), ticks included."""
    return [
        (3_000, e.PlaybackDone("call-1:p1")),
        (4_000, e.SpeechStarted("u1")),
        (5_500, e.Transcript("u1", "it's about my", False)),
        (6_000, e.SpeechEnded("u1")),
        (
            6_100,
            e.Transcript(
                "u1", "it's about my order", True, 0.82, 4_000, 6_000, "order_status", 0.77
            ),
        ),
        (7_000, e.Dtmf("4")),
        (7_300, e.Dtmf("8")),
        (9_000, e.PlaybackDone("call-1:p2")),
        (9_500, e.Dtmf("2")),
        (9_800, e.Dtmf("1")),
        (10_100, e.Dtmf("3")),
        (10_400, e.Dtmf("#")),
        (11_000, e.PlaybackDone("call-1:p3")),
        (11_500, e.BackendAnswer("call-1:3", True, {"status": "shipped", "eta_days": 2})),
        (14_000, e.PlaybackDone("call-1:p4")),
        (15_000, e.SpeechStarted("u2")),
        (16_000, e.SpeechEnded("u2")),
        (16_050, e.Transcript("u2", "yes another one please", True, 0.9, 15_000, 16_000)),
        (17_000, e.SpeechStarted("u3")),  # barge-in over the number prompt
        (18_000, e.SpeechEnded("u3")),
        (18_100, e.Transcript("u3", "five five five five", True, 0.7, 17_000, 18_000)),
        (18_500, e.PlaybackDone("call-1:p6")),
        (20_000, e.BackendAnswer("call-1:7", False, None, "unavailable", "503")),
        (21_000, e.SpeechStarted("u4")),  # the apology does not allow barge-in
        (22_000, e.Transcript("u4", "hello?", True)),
        (23_000, e.PlaybackDone("call-1:p7")),
        (90_000, e.Tick()),
    ]


def run(
    engine: e.Engine, state: CallState, inputs: list[tuple[int, e.Input]]
) -> list[tuple[int, e.Effect]]:
    out: list[tuple[int, e.Effect]] = []
    for at, event in inputs:
        now = T0 + at
        out += [(now, x) for x in engine.step(state, event, now)]
        out += [(now, x) for x in engine.step(state, e.Tick(), now)]
    return out


def test_order_status_inputs_walk_the_whole_dialog() -> None:
    dialog = load_dialog_file(EXAMPLES / "order-status.yaml")
    engine = e.Engine(dialog)
    state = new_state(dialog)
    engine.start(state, T0)
    effects = run(engine, state, order_status_inputs())
    assert [h.to_state for h in state.history] == [
        "greet",
        "ask_number",
        "lookup",
        "shipped",
        "ask_number",
        "lookup",
        "apology",
    ]
    assert state.ended
    assert state.vars == {"order_id": "5555", "attempts": 0}
    assert [x for _, x in effects if isinstance(x, e.HangupCall)] == [e.HangupCall("call-1:c8", 16)]


def test_same_inputs_at_same_times_give_identical_state_and_effects() -> None:
    dialog = load_dialog_file(EXAMPLES / "order-status.yaml")
    runs = []
    for _ in range(2):
        engine = e.Engine(load_dialog_file(EXAMPLES / "order-status.yaml"))
        state = new_state(dialog)
        first = engine.start(state, T0)
        effects = run(engine, state, order_status_inputs())
        runs.append((first, effects, state.model_dump_json()))
    assert runs[0] == runs[1]
    assert len(runs[0][1]) > 10


def test_call_state_survives_a_json_round_trip_and_resumes_identically() -> None:
    dialog = load_dialog_file(EXAMPLES / "order-status.yaml")
    inputs = order_status_inputs()
    for cut in range(len(inputs) + 1):
        engine = e.Engine(dialog)
        state = new_state(dialog)
        engine.start(state, T0)
        run(engine, state, inputs[:cut])
        saved = state.model_dump_json()
        restored = CallState.model_validate_json(saved)
        assert restored == state, cut
        assert restored.model_dump_json() == saved
        # A restarted process: a freshly loaded dialog and engine continue the call.
        engine2 = e.Engine(load_dialog_file(EXAMPLES / "order-status.yaml"))
        assert engine2.dialog.content_hash == restored.dialog_hash
        rest_a = run(engine, state, inputs[cut:])
        rest_b = run(engine2, restored, inputs[cut:])
        assert rest_a == rest_b, cut
        assert state.model_dump_json() == restored.model_dump_json(), cut


def test_round_trip_mid_collection_mid_turn_and_while_leaving() -> None:
    dialog = compile_yaml(
        """
        name: t
        initial: ask
        settings: {voice: v1}
        vars: {pin: "", said: ""}
        states:
          ask:
            endpointing: {silence_ms: 600}
            on_enter:
              - play_tts: {text: "PIN?"}
              - collect_digits: {max_digits: 4, min_digits: 4}
              - start_timer: {name: nag, ms: 9000}
            transitions:
              - event: digits
                actions:
                  - set: {pin: 'digits'}
                  - call_hook: {service: bank, method: check, payload: {pin: "{{ vars.pin }}"}}
              - event: backend_result
                target: bye
              - event: speech
                actions: [{set: {said: 'transcript'}}]
              - {event: timeout, timer: nag, target: bye}
          bye:
            on_enter:
              - play_tts: {text: "Bye {{ result.name }}", barge_in: deny}
              - hangup: {reason_code: 31}
        """
    )
    inputs: list[tuple[int, e.Input]] = [
        (500, e.Dtmf("1")),
        (900, e.Dtmf("2")),
        (1_000, e.SpeechStarted("u1")),
        (1_800, e.Transcript("u1", "one two", True)),
        (2_000, e.PlaybackDone("call-1:p1")),
        (2_100, e.Dtmf("3")),
        (2_300, e.SpeechStarted("u2")),
        (2_700, e.Transcript("u2", "three four", True)),
        (2_800, e.Dtmf("4")),
        (3_500, e.Tick()),
        (4_000, e.BackendAnswer("call-1:1", True, {"name": "Ada"})),
        (4_500, e.SpeechStarted("u3")),
        (5_000, e.Transcript("u3", "thanks", True)),
        (6_000, e.PlaybackDone("call-1:p2")),
    ]
    reference = new_state(dialog)
    engine = e.Engine(dialog)
    engine.start(reference, T0)
    expected = run(engine, reference, inputs)
    assert reference.vars == {"pin": "1234", "said": "one two three four"}
    assert expected[-2:] == [
        (T0 + 6_000, e.HangupCall("call-1:c3", 31)),
        (T0 + 6_000, e.SessionEnded("dialog hung up")),
    ]
    for cut in range(len(inputs) + 1):
        state = new_state(dialog)
        engine.start(state, T0)
        before = run(engine, state, inputs[:cut])
        restored = CallState.model_validate_json(state.model_dump_json())
        after = run(e.Engine(dialog), restored, inputs[cut:])
        assert before + after == expected, cut
        assert restored.model_dump_json() == reference.model_dump_json(), cut


def test_key_press_interrupts_an_interruptible_prompt_only() -> None:
    call = Call.start(
        """
        name: type-ahead
        initial: menu
        states:
          menu:
            on_enter: [{play_tts: {text: "For sales press 1. For support press 2."}}]
            transitions:
              - {event: dtmf, condition: 'digit == "1"', target: sales}
          sales:
            on_enter: [{play_tts: {text: "Sales. Please hold.", barge_in: deny}}]
            transitions:
              - {event: dtmf, target: menu}
        """
    )
    menu_prompt = call.state.playing[0].request_id
    effects = call.send(e.Dtmf("1"))
    assert effects[0] == e.CancelSpeech((menu_prompt,))
    assert call.state.session.state == "sales"
    effects = call.send(e.Dtmf("9"))
    assert not any(isinstance(x, e.CancelSpeech) for x in effects), "deny prompts keep playing"


def test_a_timeout_transition_without_timer_does_not_catch_max_duration() -> None:
    call = Call.start(
        """
        name: limits
        initial: wait
        settings: {max_call_duration_ms: 5000, no_input_timeout_ms: 2000}
        states:
          wait:
            transitions:
              - {event: timeout, target: again}
          again:
            transitions:
              - {event: timeout, target: wait}
        """
    )
    call.advance(4_999)
    assert not call.state.ended
    effects = call.advance(1)
    assert call.state.ended
    assert [x.reason_code for x in effects if isinstance(x, e.HangupCall)] == [e.NORMAL_CLEARING]
