"""200 concurrent simulated calls, each its own actor: no state leaks between calls, and
one call's failure ends only that call.

The calls run the real CallActor against a real SQLite session store; their
ports (where speech, media and backend effects go) are in-process and answer
the way the gateways would.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from num2words import num2words
from voicetyped.recognition import RecognitionContext
from voicetyped.session import CallerInfo, CallSession
from voicetyped_runtime import engine as e
from voicetyped_runtime.call import CallActor, wall_ms
from voicetyped_runtime.dialogs import DialogVersion, prepare
from voicetyped_runtime.state import CallState
from voicetyped_runtime.store.sqlite import SqliteStore
from voicetyped_specs.dialog.compiled import load_dialog_file

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "dialogs"
CALLS = 200


class BoomError(RuntimeError):
    pass


@dataclass
class Ports:
    """Where one call's effects go; playback 'finishes' shortly after it starts."""

    order: str
    poisoned: bool = False
    actor: CallActor | None = None
    spoken: list[str] = field(default_factory=list)
    commands: list[e.TransferCall | e.HangupCall] = field(default_factory=list)
    hooks: list[e.ExecuteHook] = field(default_factory=list)
    expected: list[RecognitionContext] = field(default_factory=list)

    def speak(self, effect: e.Speak) -> None:
        if self.poisoned and self.spoken:
            raise BoomError("speech link exploded")
        self.spoken.append(effect.text)
        assert self.actor is not None
        asyncio.get_running_loop().call_later(
            0.01, self.actor.post, e.PlaybackDone(effect.request_id)
        )

    def cancel_speech(self, effect: e.CancelSpeech) -> None:
        pass

    def expect(self, context: RecognitionContext) -> None:
        self.expected.append(context)

    def command(self, effect: e.TransferCall | e.HangupCall) -> None:
        self.commands.append(effect)

    async def execute_hook(self, session_id: str, effect: e.ExecuteHook) -> e.BackendAnswer:
        self.hooks.append(effect)
        await asyncio.sleep(0.02)
        eta = int(str(effect.payload["order_id"])[-1]) + 1
        return e.BackendAnswer(effect.key, True, {"status": "shipped", "eta_days": eta})

    async def ask_llm(self, effect: e.AskLlm) -> e.LlmAnswer:
        raise AssertionError("order-status uses no LLM")

    async def close(self) -> None:
        pass


def _state(version: DialogVersion, sid: str) -> CallState:
    now = wall_ms()
    return CallState(
        session=CallSession(
            session_id=sid, caller=CallerInfo(caller_id=sid), state=version.compiled.initial
        ),
        dialog=version.name,
        dialog_hash=version.content_hash,
        started_ms=now,
        state_entered_ms=now,
        vars=dict(version.compiled.spec.vars),
    )


async def _until(check: object, timeout_s: float = 90) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)  # 400 pollers: keep the loop free for the calls


async def _caller(actor: CallActor, ports: Ports) -> None:
    await _until(lambda: ports.spoken or actor.state.ended)
    if actor.state.ended:
        return
    await asyncio.sleep(0.05)  # the greeting plays
    uid = f"{actor.session_id}-u1"
    actor.post(e.SpeechStarted(uid))
    actor.post(e.SpeechEnded(uid))
    actor.post(e.Transcript(uid, f"my order number is {' '.join(ports.order)}", True, 0.9, 0, 1500))
    await _until(lambda: any("has shipped" in t for t in ports.spoken) or actor.state.ended)
    actor.post(e.CallerHangup())


async def test_200_concurrent_calls_are_isolated(tmp_path: Path) -> None:
    version = prepare(load_dialog_file(EXAMPLES / "order-status.yaml"), "test")
    store = SqliteStore(tmp_path / "sessions.db")
    await store.open()
    actors: list[tuple[CallActor, Ports]] = []
    for i in range(CALLS):
        ports = Ports(order=f"{70000 + i}", poisoned=i % 50 == 7)
        actor = CallActor(_state(version, f"call-{i:03d}"), version, ports, store)
        ports.actor = actor
        actors.append((actor, ports))
    tasks = [actor.start(resume=False) for actor, _ in actors]
    callers = [asyncio.create_task(_caller(actor, ports)) for actor, ports in actors]
    await asyncio.wait_for(asyncio.gather(*tasks, *callers), 120)

    poisoned = [(a, p) for a, p in actors if p.poisoned]
    healthy = [(a, p) for a, p in actors if not p.poisoned]
    assert len(poisoned) == 4
    for actor, ports in poisoned:
        assert actor.state.ended
        assert actor.state.end_reason == "runtime error"
        assert [c.reason_code for c in ports.commands if isinstance(c, e.HangupCall)] == [
            e.TEMPORARY_FAILURE
        ]
    for actor, ports in healthy:
        order = ports.order
        eta = int(order[-1]) + 1
        assert actor.state.vars["order_id"] == order, actor.session_id
        assert [h.payload for h in ports.hooks] == [{"order_id": order}]
        assert ports.hooks[0].key == f"{actor.session_id}:2"
        said = " ".join(num2words(int(d)) for d in order)  # the prompt reads it digit by digit
        assert (
            f"Good news: order {said} has shipped and should arrive in {eta} days." in ports.spoken
        )
        assert all(said in t for t in ports.spoken if "order seven" in t), (
            "another call's data leaked in"
        )
        assert actor.state.ended
        assert actor.state.session.state == "shipped"
    # Ended calls leave nothing behind: their transcripts are gone with them.
    assert await store.list_live() == []
    await store.close()
