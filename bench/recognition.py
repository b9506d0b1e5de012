"""Benchmark: recognition accuracy over the telephone path, per caller voice and per backend.

The four services run as real processes (``voicetyped_dev.stack``) with a dialog that answers
every caller utterance with "Okay." and keeps its finished sessions (``persist_transcripts``),
so the runtime's final transcript of each turn can be read back from the session store after
the call. The scripted caller (``voicetyped_dev.caller``) places real SIP/RTP G.711 mu-law calls
and says the HELD_OUT phrases (``voicetyped_testkit.phrases``: nothing is tuned on them), one
call per voice: six espeak-ng voices (US, British, Scottish and Caribbean English, male and
female, 160 words per minute) and the project's Piper voice. For each backend (whisper.cpp and
faster-whisper, each with tiny.en and with Whisper base; the gateway's settings otherwise) it
reports WER per voice, pooled over the espeak voices, and the turn latency (caller's last sample
-> first loud RTP frame of the reply) p50/p95 alongside. About 15 minutes per backend on an
idle machine (252 turns).

Targets (issue 17): WER <= 15 % on espeak voices, <= 2 % on Piper, turn p50 <= 450 ms.

    python bench/recognition.py --out bench/results/recognition.json [--quick]
        [--backends whispercpp,faster-whisper-base] [--voices en-us-male,piper]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from voicetyped_dev.caller.phone import Phone
from voicetyped_dev.caller.run import Voices, run_call
from voicetyped_dev.caller.script import CallLog, Listen, ListenStep, Say, Step
from voicetyped_dev.stack import Stack, StackConfig
from voicetyped_testkit import espeak
from voicetyped_testkit.phrases import HELD_OUT
from voicetyped_testkit.speech import Score
from voicetyped_testkit.stats import pct

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"espeak_wer": 0.15, "piper_wer": 0.02, "turn_p50_ms": 450.0}
BACKENDS: dict[str, dict[str, str]] = {
    "whispercpp": {"VOICETYPED_ASR__BACKEND": "whispercpp"},
    "faster-whisper": {"VOICETYPED_ASR__BACKEND": "faster-whisper"},
    "whispercpp-base": {
        "VOICETYPED_ASR__BACKEND": "whispercpp",
        "VOICETYPED_ASR__MODEL_NAME": "base",
    },
    "faster-whisper-base": {
        "VOICETYPED_ASR__BACKEND": "faster-whisper",
        "VOICETYPED_ASR__MODEL_NAME": "base",
    },
}
"""The speech gateway's settings per measured backend (tiny.en unless named; gateway defaults
otherwise)."""
DIALOG = """\
apiVersion: voicetyped.io/v1alpha1
kind: Dialog
metadata:
  name: recognition-bench
spec:
  description: Answers every caller utterance; keeps the finished session to read back.
  initial: listen
  settings:
    voice: en_US-joe-medium
    no_input_timeout_ms: 0
    persist_transcripts: true
    transcript_retention_s: 3600
  states:
    listen:
      on_enter:
        - play_tts: {text: "Hello."}
      transitions:
        - event: speech
          actions:
            - play_tts: {text: "Okay."}
        - event: hangup
          target: done
    done:
      terminal: true
"""
LISTEN = Listen(timeout_s=10.0, quiet_ms=400)
LAST = Listen(timeout_s=30.0, quiet_ms=400)
"""After the last phrase: the call must not end before its final is in (a slow decode)."""
MATCH_S = 1.5
"""A final belongs to the caller turn whose end is nearest its end of speech, within this."""


def archived_sessions(db: Path) -> dict[str, dict[str, Any]]:
    """The finished sessions the runtime kept (``persist_transcripts``), by id (the archive
    also holds the dialog versions live calls started with)."""
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, document FROM archive").fetchall()
    docs = {str(i): json.loads(doc) for i, doc in rows}
    return {i: doc for i, doc in docs.items() if isinstance(doc, dict) and "session" in doc}


async def new_session(db: Path, seen: set[str], timeout_s: float = 10.0) -> dict[str, Any]:
    """The one session archived since ``seen`` (the runtime archives it as the call ends)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        fresh = {k: v for k, v in archived_sessions(db).items() if k not in seen}
        if len(fresh) == 1:
            ((key, doc),) = fresh.items()
            seen.add(key)
            return doc
        if len(fresh) > 1:
            raise RuntimeError(f"expected one new session, found {sorted(fresh)}")
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError("the call's session was not archived")
        await asyncio.sleep(0.2)


def finals(session: dict[str, Any]) -> list[tuple[float, str]]:
    """(end of speech in call seconds, transcript) of every speech event of the call."""
    events = session["session"]["events"]
    return [
        (e["timing"]["end_ms"] / 1000, e["transcript"]) for e in events if e.get("type") == "speech"
    ]


def assign(log: CallLog, heard: list[tuple[float, str]]) -> tuple[list[str], int]:
    """What the runtime heard for each caller turn (texts of one turn joined), and how many
    finals matched no turn. Turn ends are taken relative to the answer (the greeting turn's
    start), as the call's speech timings are."""
    answered = log.turns[0].stopped
    ends = [t.stopped - answered for t in log.turns[1:]]
    texts: list[list[str]] = [[] for _ in ends]
    stray = 0
    for end_s, text in heard:
        nearest = min(range(len(ends)), key=lambda i: abs(ends[i] - end_s), default=None)
        if nearest is None or abs(ends[nearest] - end_s) > MATCH_S:
            stray += 1
            continue
        texts[nearest].append(text)
    return [" ".join(t) for t in texts], stray


async def one_voice(
    stack: Stack, voices: Voices, phrases: tuple[str, ...], seen: set[str]
) -> dict[str, Any]:
    steps: list[Step] = [ListenStep(listen=LISTEN)]
    steps += [Say(say=p, listen=LISTEN if p != phrases[-1] else LAST) for p in phrases]
    phone = Phone()
    await phone.start()
    try:
        log = await run_call(
            f"sip:bot@127.0.0.1:{stack.sip_port}", steps, voices, phone=phone, transcribe=False
        )
    finally:
        await phone.close()
    session = await new_session(stack.run_dir / "runtime.db", seen)
    got = finals(session)
    heard, stray = assign(log, got)
    score = Score()
    wrong = []
    for phrase, text in zip(phrases, heard, strict=True):
        if score.add(phrase, text):
            wrong.append({"said": phrase, "heard": text})
    latencies = [t.latency_s * 1000 for t in log.turns[1:] if t.latency_s is not None]
    return {
        **score.summary(),
        "stray_finals": stray,
        "unanswered_turns": len(log.turns) - 1 - len(latencies),
        "turn_ms": latencies,
        "call_failures": log.failures,
        "wrong": wrong,
        "finals": [{"end_s": round(t, 2), "text": x} for t, x in got],
        "turn_ends_s": [round(t.stopped - log.turns[0].stopped, 2) for t in log.turns[1:]],
    }


def espeak_speak(voice: espeak.EspeakVoice, text: str) -> NDArray[np.int16]:
    return espeak.speak_16k(text, voice)


def stack_config(tmp: Path, backend: str) -> StackConfig:
    dialog = tmp / "recognition-bench.yaml"
    dialog.write_text(DIALOG)
    return StackConfig.with_example_backend(
        REPO, tmp / backend, [dialog], env={"speech": BACKENDS[backend]}
    )


def latency(ms: list[float]) -> dict[str, Any]:
    if not ms:
        return {"turns": 0}
    return {"turns": len(ms), "p50_ms": round(pct(ms, 0.5)), "p95_ms": round(pct(ms, 0.95))}


async def run(
    tmp: Path, backends: list[str], voice_names: list[str], quick: bool
) -> dict[str, Any]:
    phrases = HELD_OUT[:12] if quick else HELD_OUT
    base = await asyncio.to_thread(Voices)
    speakers = {v.name: v for v in espeak.VOICES}
    result: dict[str, Any] = {
        "benchmark": "recognition",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "loadavg_start": os.getloadavg(),
        "phrases": len(phrases),
        "targets": TARGETS,
        "backends": {},
    }
    for backend in backends:
        stack = Stack(stack_config(tmp, backend))
        await stack.start()
        seen: set[str] = set()
        per_voice: dict[str, Any] = {}
        try:
            for name in voice_names:
                voices = base
                if name != "piper":
                    voices = base.speaking_as(functools.partial(espeak_speak, speakers[name]))
                print(f"{backend}: {name}", flush=True)
                per_voice[name] = await one_voice(stack, voices, phrases, seen)
                r = per_voice[name]
                print(
                    f"  WER {r['wer']:.3f} ({r['errors']} errors / {r['words']} words, "
                    f"{r['wrong_utterances']} of {r['utterances']} utterances wrong), "
                    f"turn p50 {latency(r['turn_ms']).get('p50_ms')} ms",
                    flush=True,
                )
        finally:
            await stack.stop()
        espeak_scores = [v for n, v in per_voice.items() if n != "piper"]
        words = sum(v["words"] for v in espeak_scores)
        all_ms = [ms for v in per_voice.values() for ms in v["turn_ms"]]
        summary: dict[str, Any] = {
            "espeak_wer": round(sum(v["errors"] for v in espeak_scores) / words, 4)
            if words
            else None,
            "piper_wer": per_voice["piper"]["wer"] if "piper" in per_voice else None,
            "turn_latency": latency(all_ms),
        }
        for v in per_voice.values():
            v["turn_latency"] = latency(v.pop("turn_ms"))
        summary["meets_targets"] = {
            "espeak_wer": summary["espeak_wer"] is not None
            and summary["espeak_wer"] <= TARGETS["espeak_wer"],
            "piper_wer": summary["piper_wer"] is not None
            and summary["piper_wer"] <= TARGETS["piper_wer"],
            "turn_p50": summary["turn_latency"].get("p50_ms", 1e9) <= TARGETS["turn_p50_ms"],
        }
        result["backends"][backend] = {**summary, "per_voice": per_voice}
    result["loadavg_end"] = os.getloadavg()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="12 phrases instead of 36")
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"of {list(BACKENDS)}")
    parser.add_argument("--voices", default="", help="default: every espeak voice and piper")
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    if unknown := set(backends) - set(BACKENDS):
        parser.error(f"unknown backends {sorted(unknown)}")
    names = [v for v in args.voices.split(",") if v] or [v.name for v in espeak.VOICES] + ["piper"]
    if unknown := set(names) - {v.name for v in espeak.VOICES} - {"piper"}:
        parser.error(f"unknown voices {sorted(unknown)}")
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(Path(tmp), backends, names, args.quick))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for backend, r in result["backends"].items():
        table = {n: (v["wer"], v["turn_latency"].get("p50_ms")) for n, v in r["per_voice"].items()}
        print(backend, {k: v for k, v in r.items() if k != "per_voice"})
        print("  per voice (WER, turn p50 ms):", table)


if __name__ == "__main__":
    main()
