"""A caller turn the recogniser makes nothing of is answered, not met with silence.

The whole pipeline as `make demo` runs it (the four services and the example backend as real
processes, a real SIP/RTP call), with the speech gateway's decodes all stopped at their
deadline (1 ms), so every final transcript is empty. The runtime takes the state's no-input
path at once (the order-status greeting's leads to "What is your order number?") instead of
after its 7 s timer, and both sides log why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from voicetyped_dev.caller.run import Voices, run_call
from voicetyped_dev.caller.script import CallLog, load_script
from voicetyped_dev.stack import Stack, StackConfig

REPO = Path(__file__).resolve().parents[1]
NO_INPUT_TIMEOUT_S = 7.0  # examples/dialogs/order-status.yaml settings.no_input_timeout_ms


def logged(stack: Stack, service: str, event: str | None) -> list[dict[str, Any]]:
    """The service's log records of ``event`` (None: all)."""
    lines = (stack.log_dir / f"{service}.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    return [r for r in records if event is None or r.get("event") == event]


def timeline(stack: Stack, log: CallLog) -> str:
    turns = [(t.caller, t.latency_s, t.bot.text if t.bot else None) for t in log.turns]
    events = [
        f"{r['timestamp'][11:23]} {service} {r['event']}"
        for service in ("media", "speech", "runtime")
        for r in logged(stack, service, None)
        if r.get("level") != "debug"
    ]
    return "\n".join([f"turns: {turns}", *sorted(events)])


async def test_an_unrecognised_turn_is_re_prompted_at_once(tmp_path: Path) -> None:
    voices = Voices()
    deadline_hit = {
        "VOICETYPED_ASR__DEADLINE_MS": "1",
        "VOICETYPED_ASR__DEADLINE_MS_PER_AUDIO_S": "0",
        "VOICETYPED_ASR__DEADLINE_FACTOR": "0",
    }
    stack = Stack(
        StackConfig.with_example_backend(REPO, tmp_path / "run", env={"speech": deadline_hit})
    )
    script = tmp_path / "unheard.yaml"
    # One breath, no comma: Piper pauses 390 ms after "Hello,", and a turn ended there (the
    # empty transcript gives the end-of-turn rules nothing to wait for) is re-prompted while the
    # caller is still speaking, so the caller talked over the re-prompt it was to hear.
    script.write_text(
        '- listen: {}\n- say: "Hello is anybody there?"\n- expect: "what is your order number"\n'
    )
    await stack.start()
    try:
        log = await run_call(f"sip:bot@127.0.0.1:{stack.sip_port}", load_script(script), voices)
    finally:
        codes = await stack.stop()
    assert all(code in (0, None) for code in codes.values()), codes
    # the caller heard the re-prompt (if not: what it heard when, and what the services did,
    # printed whole: pytest shortens a long assertion message)
    if log.failures:
        print(timeline(stack, log))
    assert not log.failures
    turn = log.turns[1]
    assert turn.latency_s is not None
    assert turn.latency_s < NO_INPUT_TIMEOUT_S / 2, f"re-prompted after {turn.latency_s:.1f} s"

    empty = logged(stack, "speech", "final transcript empty")
    # The VAD may cut the phrase in two: every utterance's final is empty, and says why.
    assert empty and {r["reason"] for r in empty} == {"deadline"}, empty
    unrecognised = logged(
        stack, "runtime", "caller turn not recognised (empty final transcript); re-prompting"
    )
    # The first in the greeting; a second half of the phrase the VAD cut off after the turn
    # was taken is a turn of its own (in the next state).
    assert unrecognised and unrecognised[0]["state"] == "greet", unrecognised
    assert {r["session_id"] for r in unrecognised} == {empty[0]["session_id"]}
    assert len(unrecognised) <= len(empty), "no turn is answered twice"
