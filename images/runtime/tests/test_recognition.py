"""What each dialog state expects the caller to say (the recognition context), derived from the
compiled dialog: on the examples and on dialogs written apart from the derivation
(tests/dialogs), and sent by a call's actor on every state entry and after a resume."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import JsonValue
from voicetyped.recognition import (
    MAX_HOTWORDS,
    MAX_PHRASES,
    Expect,
    RecognitionContext,
    context_from_proto,
    context_to_proto,
)
from voicetyped.session import CallerInfo, CallSession
from voicetyped_runtime import engine as e
from voicetyped_runtime.call import CallActor, wall_ms
from voicetyped_runtime.dialogs import prepare
from voicetyped_runtime.recognition import expectations, recognition_context
from voicetyped_runtime.state import CallState
from voicetyped_runtime.store.sqlite import SqliteStore
from voicetyped_specs.dialog.compiled import CompiledDialog, load_dialog, load_dialog_file
from voicetyped_testkit.processes import eventually

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "dialogs"
OTHERS = Path(__file__).resolve().parent / "dialogs"


def _dialog(path: Path) -> CompiledDialog:
    return load_dialog_file(path)


def _kinds(dialog: CompiledDialog) -> dict[str, tuple[str, int, int]]:
    return {
        name: (x.expect.value, x.min_digits, x.max_digits)
        for name, x in expectations(dialog).items()
    }


def test_digit_states_expect_digits_with_their_length() -> None:
    order = _kinds(_dialog(EXAMPLES / "order-status.yaml"))
    assert order["ask_number"] == ("digits", 4, 10)  # collect_digits (spoken digits too)
    assert order["greet"] == ("digits", 4, 0)  # spokenDigits(transcript).size() >= 4
    assert _kinds(_dialog(EXAMPLES / "main-menu.yaml"))["patient_number"] == ("digits", 6, 6)
    assert _kinds(_dialog(OTHERS / "pizza-order.yaml"))["phone"] == ("digits", 10, 10)
    assert _kinds(_dialog(OTHERS / "bank-pin.yaml"))["pin"] == ("digits", 4, 4)
    # Another language: digits still, whatever the words.
    assert _kinds(_dialog(OTHERS / "survey.yaml"))["score"] == ("digits", 1, 0)


def test_yes_no_states_from_words_intents_and_questions() -> None:
    bank = expectations(_dialog(OTHERS / "bank-pin.yaml"))
    assert bank["holder"].expect == Expect.YES_NO  # transcript.contains("yes")
    assert bank["holder"].choices == ("speaking",)  # the other word it looks for
    pizza = expectations(_dialog(OTHERS / "pizza-order.yaml"))
    assert pizza["confirm"].expect == Expect.YES_NO  # intent == "confirm" / "deny"
    assert pizza["confirm"].phrases[:3] == ("yes please", "that's right", "correct")
    order = expectations(_dialog(EXAMPLES / "order-status.yaml"))
    assert order["shipped"].expect == Expect.YES_NO


def test_a_yes_no_question_but_a_wh_question_is_not() -> None:
    doc = {
        "name": "questions",
        "initial": "a",
        "states": {
            "a": {
                "on_enter": [{"play_tts": {"text": "Hello {{ vars.n }}. Shall I book it?"}}],
                "transitions": [{"event": "speech", "target": "b"}],
            },
            "b": {
                "on_enter": [{"play_tts": {"text": "Which day would suit you better?"}}],
                "transitions": [{"event": "speech", "target": "a"}],
            },
        },
        "vars": {"n": ""},
    }
    kinds = _kinds(load_dialog(doc))
    assert kinds["a"][0] == "yes_no"
    assert kinds["b"][0] == "free"
    doc["settings"] = {"language": "fr"}  # the question reading is English only
    assert _kinds(load_dialog(doc))["a"][0] == "free"


def test_menus_read_from_prompts_and_condition_words() -> None:
    menu = expectations(_dialog(EXAMPLES / "main-menu.yaml"))["menu"]
    assert menu.expect == Expect.CHOICE
    assert menu.choices == ("appointments", "prescriptions", "opening hours", "reception")
    pizza = expectations(_dialog(OTHERS / "pizza-order.yaml"))["choose"]
    assert pizza.choices == ("margherita", "pepperoni", "vegetarian", "hawaiian")
    assert pizza.phrases == ("can I talk to someone", "get me a person")  # a global intent
    block = expectations(_dialog(OTHERS / "bank-pin.yaml"))["block"]
    assert block.expect == Expect.CHOICE
    assert {"block", "new card"} <= set(block.choices)


def test_free_speech_gets_the_intents_phrases_state_first_then_global() -> None:
    order = _dialog(EXAMPLES / "order-status.yaml")
    greet = expectations(order)["greet"]
    assert greet.phrases[:4] == tuple(order.spec.intents["order_status"])
    assert greet.phrases[4:] == tuple(order.spec.intents["agent"])
    survey = expectations(_dialog(OTHERS / "survey.yaml"))["recommend"]
    assert survey.expect == Expect.FREE
    assert survey.phrases == ("ja", "ja gerne", "auf jeden Fall", "nein", "eher nicht")


def test_the_context_adds_names_from_variables_and_the_prompt_heard() -> None:
    bank = _dialog(OTHERS / "bank-pin.yaml")
    variables: dict[str, JsonValue] = {"holder": "Amelia Okafor", "attempts": 2, "note": "x" * 200}
    ctx = recognition_context(bank, "holder", variables, ["Am I speaking with Amelia Okafor?"])
    assert ctx.state == "holder"
    assert ctx.expect == Expect.YES_NO
    assert ctx.hotwords == ("Amelia Okafor",)  # numbers and long texts are no names
    assert ctx.prompt == "Am I speaking with Amelia Okafor?"
    # What the runtime derives crosses the contract's boundary as it is.
    assert context_from_proto(context_to_proto(ctx)) == ctx


def test_every_state_of_every_dialog_fits_the_contract() -> None:
    dialogs = [*EXAMPLES.glob("*.yaml"), *OTHERS.glob("*.yaml")]
    assert len(dialogs) >= 6
    for path in dialogs:
        dialog = _dialog(path)
        for state in dialog.states:
            ctx = recognition_context(dialog, state, dict(dialog.spec.vars), ["Hello?"])
            assert context_from_proto(context_to_proto(ctx)) == ctx, (path.name, state)


def test_a_dialog_offering_too_much_is_clipped_to_the_bounds() -> None:
    intents = {
        f"intent_{i}": [f"example {i} {j} " + "word " * 30 for j in range(5)] for i in range(20)
    }
    transitions = [
        {"event": "speech", "condition": f'intent == "intent_{i}"', "target": "b"}
        for i in range(20)
    ]
    doc = {
        "name": "big",
        "initial": "a",
        "intents": intents,
        "vars": {f"v{i}": f"Name {i}" for i in range(50)},
        "states": {"a": {"transitions": transitions}, "b": {"terminal": True}},
    }
    dialog = load_dialog(doc)
    ctx = recognition_context(dialog, "a", dict(dialog.spec.vars), ["Hi. " * 500])
    assert len(ctx.phrases) == MAX_PHRASES and len(ctx.hotwords) == MAX_HOTWORDS
    assert context_from_proto(context_to_proto(ctx)) == ctx


# ---- the actor sends it ----------------------------------------------------------------------


@dataclass
class _Ports:
    expected: list[RecognitionContext] = field(default_factory=list)
    spoken: list[e.Speak] = field(default_factory=list)
    actor: CallActor | None = None

    def speak(self, effect: e.Speak) -> None:
        self.spoken.append(effect)
        assert self.actor is not None
        asyncio.get_running_loop().call_later(
            0.01, self.actor.post, e.PlaybackDone(effect.request_id)
        )

    def cancel_speech(self, effect: e.CancelSpeech) -> None:
        pass

    def expect(self, context: RecognitionContext) -> None:
        self.expected.append(context)

    def command(self, effect: e.TransferCall | e.HangupCall) -> None:
        pass

    async def execute_hook(self, session_id: str, effect: e.ExecuteHook) -> e.BackendAnswer:
        return e.BackendAnswer(effect.key, True, {"status": "shipped", "eta_days": 2})

    async def ask_llm(self, effect: e.AskLlm) -> e.LlmAnswer:
        return e.LlmAnswer(effect.key, False)

    async def close(self) -> None:
        pass


async def test_the_actor_sends_a_context_on_each_state_entry_and_after_a_resume(
    tmp_path: Path,
) -> None:
    version = prepare(_dialog(EXAMPLES / "order-status.yaml"), "test")
    store = SqliteStore(tmp_path / "sessions.db")
    await store.open()
    now = wall_ms()
    state = CallState(
        session=CallSession(session_id="c1", caller=CallerInfo(caller_id="c1"), state="greet"),
        dialog=version.name,
        dialog_hash=version.content_hash,
        started_ms=now,
        state_entered_ms=now,
        vars=dict(version.compiled.spec.vars),
    )
    ports = _Ports()
    actor = CallActor(state, version, ports, store)
    ports.actor = actor
    task = actor.start(resume=False)
    try:
        await eventually(lambda: ports.expected, 20, "greet's context")
        greet = ports.expected[0]
        assert (greet.state, greet.expect) == ("greet", Expect.DIGITS)
        assert greet.prompt == ports.spoken[0].text  # the question the caller heard
        actor.post(e.SpeechStarted("u1"))
        actor.post(e.SpeechEnded("u1"))
        actor.post(e.Transcript("u1", "where is my order", True, 0.9, 0, 900))
        await eventually(
            lambda: [c.state for c in ports.expected] == ["greet", "ask_number"], 20, "ask_number"
        )
        ask = ports.expected[1]
        assert (ask.expect, ask.min_digits, ask.max_digits) == (Expect.DIGITS, 4, 10)
        assert ask.prompt.startswith("What is your order number?")
        # Staying in the state (a key that is not a transition's) sends nothing new.
        await asyncio.sleep(0.1)
        assert len(ports.expected) == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # Another actor resumes the stored call: it says what ask_number expects again.
    stored = await store.load("c1")
    assert stored is not None
    resumed_ports = _Ports()
    again = CallActor(CallState.model_validate_json(stored), version, resumed_ports, store)
    resumed_ports.actor = again
    task = again.start(resume=True)
    try:
        await eventually(lambda: resumed_ports.expected, 20, "the resumed context")
        assert resumed_ports.expected[0].state == "ask_number"
        assert resumed_ports.expected[0].expect == Expect.DIGITS
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.close()


def test_the_context_carries_the_states_endpointing() -> None:
    dialog = load_dialog(
        {
            "name": "ep",
            "settings": {"endpointing": {"mode": "silence", "min_ms": 400}},
            "initial": "a",
            "states": {
                "a": {"transitions": [{"event": "speech", "target": "b"}]},
                "b": {
                    "endpointing": {"mode": "semantic", "min_ms": 250, "max_ms": 1500},
                    "transitions": [{"event": "speech", "target": "a"}],
                },
            },
        }
    )
    a, b = (recognition_context(dialog, s, {}).endpointing for s in ("a", "b"))
    assert (a.mode.value, a.min_ms, a.max_ms) == ("silence", 400, 2000)
    assert (b.mode.value, b.min_ms, b.max_ms) == ("semantic", 250, 1500)
    back = context_from_proto(context_to_proto(recognition_context(dialog, "b", {})))
    assert back.endpointing == b
