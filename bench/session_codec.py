"""Benchmark: CallSession serialization, protobuf vs JSON (the baseline), same run.

The runtime persists a CallSession after every turn, so its codec is on the hot
path of each turn. Measures encode and decode of a realistic session (a
three-minute call: 40 events, 30 actions) both ways and writes JSON results
with the proto/JSON time ratios.

    python bench/session_codec.py --out bench/results/session_codec.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voicetyped.session import (
    BackendResultEvent,
    CallerInfo,
    CallHook,
    CallSession,
    DTMFEvent,
    PlayTTS,
    SipHeader,
    SpeechEvent,
    SpeechTiming,
    TimeoutEvent,
)
from voicetyped.session_proto import session_from_proto, session_to_proto
from voicetyped.v1 import session_pb2


def realistic_session() -> CallSession:
    events: list[Any] = []
    actions: list[Any] = []
    for turn in range(10):
        t = turn * 18_000
        events += [
            SpeechEvent(
                transcript=f"I'm calling about order number {48213 + turn}, it has not arrived",
                confidence=0.91,
                timing=SpeechTiming(start_ms=t, end_ms=t + 2_400),
            ),
            DTMFEvent(digit=str(turn % 10), duration_ms=120),
            TimeoutEvent(elapsed_ms=8_000),
            BackendResultEvent(
                response={
                    "order": 48213 + turn,
                    "status": "shipped",
                    "eta_days": 2,
                    "items": [1, 2],
                }
            ),
        ]
        actions += [
            PlayTTS(text="Thanks, let me look that up for you.", voice="en_US-joe-medium"),
            CallHook(service="orders", method="lookup", payload={"order_id": 48213 + turn}),
            PlayTTS(text="Your order has shipped and arrives in two days."),
        ]
    return CallSession(
        session_id="2f0c7d1e-4b5a-4f7e-9d3c-1a2b3c4d5e6f",
        caller=CallerInfo(
            caller_id="+15550100",
            sip_headers=[SipHeader(name="From", value="<sip:+15550100@carrier.example>;tag=1")],
        ),
        state="confirm",
        events=events,
        actions=actions,
    )


def timed(fn: Callable[[], object], seconds: float = 0.5, rounds: int = 5) -> float:
    """Median seconds per call over `rounds` rounds of ~`seconds` each."""
    n = 1
    while True:  # calibrate
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start > seconds / 5:
            break
        n *= 2
    per_call = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        per_call.append((time.perf_counter() - start) / n)
    return statistics.median(per_call)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    session = realistic_session()
    as_json = session.model_dump_json()
    as_proto = session_to_proto(session).SerializeToString()
    assert CallSession.model_validate_json(as_json) == session
    assert session_from_proto(session_pb2.CallSession.FromString(as_proto)) == session

    json_encode = timed(session.model_dump_json)
    json_decode = timed(lambda: CallSession.model_validate_json(as_json))
    proto_encode = timed(lambda: session_to_proto(session).SerializeToString())
    proto_decode = timed(lambda: session_from_proto(session_pb2.CallSession.FromString(as_proto)))

    result = {
        "benchmark": "session_codec",
        "python": platform.python_version(),
        "session": {"events": len(session.events), "actions": len(session.actions)},
        "bytes": {"json": len(as_json.encode()), "proto": len(as_proto)},
        "seconds_per_op": {
            "json_encode": json_encode,
            "json_decode": json_decode,
            "proto_encode": proto_encode,
            "proto_decode": proto_decode,
        },
        "ratio_vs_json_baseline": {
            "encode": proto_encode / json_encode,
            "decode": proto_decode / json_decode,
            "size": len(as_proto) / len(as_json.encode()),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
