"""Benchmark: dialog engine transitions per CPU second, and CallState JSON cost per step.

The engine is a pure step function; a runtime replica runs many calls' steps on
one core, and saves each call's CallState as JSON after every step. This drives
many simulated calls through the example order-status and main-menu dialogs and
measures, with ``time.process_time`` (CPU time of this single-threaded process,
so "per core"):

* transitions taken (history steps other than the call's start) per CPU second,
  and inputs applied (``Engine.step`` calls, timer ticks included) per CPU second;
* the JSON encode (``model_dump_json``) and decode (``model_validate_json``) cost
  of the CallState after each of those steps, next to the step's own cost.

The inputs of each call are recorded once from the example scripts with the
simulator (intent matching included), then replayed straight into the engine,
so the timing holds the engine alone: no simulator bookkeeping, no intent model.

    python bench/runtime_engine.py --out bench/results/runtime_engine.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from voicetyped.session import CallerInfo, CallSession
from voicetyped_runtime import engine as e
from voicetyped_runtime.dialogs import prepare
from voicetyped_runtime.simulate import CALL_START_MS, ScriptStep, Simulator
from voicetyped_runtime.state import CallState
from voicetyped_specs.dialog.compiled import CompiledDialog, load_dialog_file

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "dialogs"
DIALOGS = ("order-status", "main-menu")


@dataclass(frozen=True)
class Trace:
    """One call's inputs at their times, and the state the simulator ended with."""

    script: str
    inputs: list[tuple[int, e.Input]]
    final_json: str


class RecordingSimulator(Simulator):
    """The simulator, keeping every input it gives the engine."""

    def __post_init__(self) -> None:
        self.inputs: list[tuple[int, e.Input]] = []
        super().__post_init__()

    def _apply(self, event: e.Input) -> None:
        self.inputs.append((self.now_ms, event))
        super()._apply(event)


def record(dialog: CompiledDialog, matcher: Any, script: Path) -> Trace:
    steps = [ScriptStep.model_validate(s) for s in yaml.safe_load(script.read_text("utf-8"))]
    sim = RecordingSimulator(dialog, matcher=matcher)
    sim.run(steps)
    return Trace(script.name, sim.inputs, sim.state.model_dump_json())


def new_state(dialog: CompiledDialog) -> CallState:
    # The same ids as the simulator's, so the recorded request ids and keys match.
    return CallState(
        session=CallSession(
            session_id="sim-1",
            caller=CallerInfo(caller_id="+15550100"),
            state=dialog.initial,
        ),
        dialog=dialog.name,
        dialog_hash=dialog.content_hash,
        started_ms=CALL_START_MS,
        state_entered_ms=CALL_START_MS,
        vars=dict(dialog.spec.vars),
    )


def replay(engine: e.Engine, trace: Trace) -> CallState:
    state = new_state(engine.dialog)
    engine.start(state, CALL_START_MS)
    for now, event in trace.inputs:
        engine.step(state, event, now)
    return state


def engine_round(engine: e.Engine, traces: list[Trace], calls: int) -> dict[str, float]:
    """Replay `calls` calls (cycling through the traces); CPU time of the engine only."""
    transitions = steps = 0
    cpu = 0.0
    for i in range(calls):
        trace = traces[i % len(traces)]
        state = new_state(engine.dialog)  # built outside the timed region
        start = time.process_time()
        engine.start(state, CALL_START_MS)
        for now, event in trace.inputs:
            engine.step(state, event, now)
        cpu += time.process_time() - start
        transitions += len(state.history) - 1
        steps += len(trace.inputs) + 1
    return {"cpu_s": cpu, "transitions": transitions, "steps": steps}


def snapshots(engine: e.Engine, traces: list[Trace]) -> list[str]:
    """The CallState JSON after every step of every trace (what a replica saves)."""
    out = []
    for trace in traces:
        state = new_state(engine.dialog)
        engine.start(state, CALL_START_MS)
        out.append(state.model_dump_json())
        for now, event in trace.inputs:
            engine.step(state, event, now)
            out.append(state.model_dump_json())
    return out


def json_round(documents: list[str], repeat: int) -> dict[str, float]:
    decode = encode = 0.0
    for _ in range(repeat):
        start = time.process_time()
        states = [CallState.model_validate_json(d) for d in documents]
        decode += time.process_time() - start
        start = time.process_time()
        for s in states:
            s.model_dump_json()
        encode += time.process_time() - start
    n = len(documents) * repeat
    return {"encode_s_per_step": encode / n, "decode_s_per_step": decode / n}


def bench_dialog(name: str, calls: int, rounds: int) -> dict[str, Any]:
    path = EXAMPLES / f"{name}.yaml"
    version = prepare(load_dialog_file(path), str(path))
    scripts = sorted((EXAMPLES / "scripts").glob(f"{name}.*.yaml"))
    traces = [record(version.compiled, version.matcher, s) for s in scripts]
    engine = e.Engine(version.compiled)
    for trace in traces:  # the replay is the simulated call, step for step
        assert replay(engine, trace).model_dump_json() == trace.final_json, trace.script

    engine_round(engine, traces, max(1, calls // 10))  # warm-up
    results = [engine_round(engine, traces, calls) for _ in range(rounds)]
    per_transition = [r["cpu_s"] / r["transitions"] for r in results]
    per_step = [r["cpu_s"] / r["steps"] for r in results]
    step_s = statistics.median(per_step)

    documents = snapshots(engine, traces)
    json_round(documents, 1)  # warm-up
    codec = [json_round(documents, max(1, 2000 // len(documents))) for _ in range(rounds)]
    encode_s = statistics.median(c["encode_s_per_step"] for c in codec)
    decode_s = statistics.median(c["decode_s_per_step"] for c in codec)
    sizes = [len(d.encode()) for d in documents]
    return {
        "scripts": [t.script for t in traces],
        "calls_per_round": calls,
        "rounds": rounds,
        "per_call": {
            "steps": results[0]["steps"] / calls,
            "transitions": results[0]["transitions"] / calls,
        },
        "transitions_per_cpu_second": 1 / statistics.median(per_transition),
        "steps_per_cpu_second": 1 / step_s,
        "cpu_us_per_transition": statistics.median(per_transition) * 1e6,
        "cpu_us_per_step": step_s * 1e6,
        "call_state_json": {
            "bytes_per_step_mean": statistics.mean(sizes),
            "bytes_max": max(sizes),
            "encode_us_per_step": encode_s * 1e6,
            "decode_us_per_step": decode_s * 1e6,
            "encode_vs_engine_step": encode_s / step_s,
            "decode_vs_engine_step": decode_s / step_s,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--calls", type=int, default=1000, help="calls per round and dialog")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    result = {
        "benchmark": "runtime_engine",
        "python": platform.python_version(),
        "clock": "time.process_time (CPU seconds of one single-threaded process = one core)",
        "dialogs": {name: bench_dialog(name, args.calls, args.rounds) for name in DIALOGS},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
