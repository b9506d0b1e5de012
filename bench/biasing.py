"""Benchmark: recognition biased by dialog state, against plain recognition, on voices the
project never tuned on.

Caller turns (``bench/biasing_cases.yaml``: a dialog, a state, what the caller says and the slot
the dialog wants) are spoken by espeak-ng voices (several accents, male and female, speed 160),
sent through the telephone path (16 kHz -> 8 kHz G.711 mu-law -> 16 kHz) and decoded by the
speech gateway's recogniser twice: with no context (today's behaviour) and with the context
the runtime derives for that state (``voicetyped_runtime.recognition``), passed through the
contract's boundary (``voicetyped.recognition``) as the gateway receives it.

Reported per voice, per slot kind and per backend, for the held-out cases (never used to choose
the prompt format) and the dev cases apart:

- **slot accuracy**: digits (the runtime's spoken-number normaliser on the transcript gives
  exactly the digits said), yes/no (the first yes or no word is the right one), choice (the
  option said is in the transcript, no other one is);
- **WER** over every case (free speech included: biasing must not hurt it);
- **prompt echoes**: non-speech clips (noise bursts, a breath, a click) decoded with each
  context: how often the biased decode wrote its prompt back, and how often an echo survived
  the guard (must be 0);
- mean decode time with and without biasing (noisy: the machine is shared).

    python bench/biasing.py --out bench/results/biasing.json [--backends whispercpp,faster-whisper]
        [--models tiny.en,base] [--voices en-us,en-gb] [--split heldout]

Each backend is built as the speech gateway builds it from its settings (``asr.backend``,
``asr.model_name``), with the model prepared as ``voicetyped models prepare`` prepares it.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from voicetyped.recognition import RecognitionContext, context_from_proto, context_to_proto
from voicetyped_runtime.recognition import recognition_context
from voicetyped_specs.dialog.compiled import CompiledDialog, PlayTts, load_dialog_file
from voicetyped_specs.dialog.spoken import spoken_digits
from voicetyped_speech.asr.base import DecodeOptions, Recognizer
from voicetyped_speech.asr.biasing import bias_for, echoed
from voicetyped_speech.asr.factory import recognizer_setup
from voicetyped_speech.config import AsrConfig
from voicetyped_speech.models.prepare import default_models_dir, prepare_models
from voicetyped_testkit.espeak import VOICES, EspeakVoice, speak_16k
from voicetyped_testkit.speech import telephone, to_pcm, word_errors

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "bench" / "biasing_cases.yaml"
TARGETS = {"slot_accuracy_biased_heldout": 0.95}
YES = frozenset({"yes", "yeah", "yep", "yup", "sure", "correct", "right", "speaking"})
NO = frozenset({"no", "nope", "nah", "not", "wrong", "isn't", "incorrect"})


@dataclass(frozen=True)
class Case:
    split: str
    dialog: str
    state: str
    kind: str
    said: str
    slot: str
    vars: dict[str, Any]


def espeak(text: str, voice: EspeakVoice) -> np.ndarray:
    """``text`` said by an espeak-ng voice, through the telephone path, as float32 16 kHz."""
    pad = np.zeros(4000, dtype=np.int16)  # 250 ms either side, as the VAD cuts an utterance
    phone = telephone(np.concatenate([pad, speak_16k(text, voice), pad]))
    return phone.astype(np.float32) / 32768


def non_speech() -> dict[str, np.ndarray]:
    """Clips with no words: what a VAD lets through now and then."""
    rng = np.random.default_rng(7)
    t = np.arange(16000) / 16000
    breath = rng.normal(0, 0.02, 12000) * np.hanning(12000)
    click = np.zeros(8000)
    click[4000:4040] = 0.6 * np.sign(rng.normal(size=40))
    clips = {
        "noise_1s": rng.normal(0, 0.03, 16000),
        "breath": np.concatenate([np.zeros(2000), breath, np.zeros(2000)]),
        "click": click,
        "hum": 0.05 * np.sin(2 * np.pi * 120 * t),
    }
    return {k: telephone(to_pcm(v)).astype(np.float32) / 32768 for k, v in clips.items()}


def heard(dialog: CompiledDialog, state: str, variables: dict[str, Any]) -> list[str]:
    """The state's prompts as the caller heard them (templates over the variables)."""
    out = []
    for action in dialog.states[state].on_enter:
        if isinstance(action, PlayTts):
            try:
                out.append(action.text.render_text({"vars": variables}))
            except Exception:  # a prompt that needs more than the variables: its literal text
                out.append(re.sub(r"\{\{.*?\}\}", "", action.text.source))
    return out


def context_for(dialog: CompiledDialog, case: Case) -> RecognitionContext:
    variables = {**dialog.spec.vars, **case.vars}
    ctx = recognition_context(dialog, case.state, variables, heard(dialog, case.state, variables))
    return context_from_proto(context_to_proto(ctx))  # as the gateway receives it


def _words(text: str) -> list[str]:
    """Lower-case words, a plural's "s" dropped ("appointment" is the option "appointments")."""
    return [
        w[:-1] if len(w) > 3 and w.endswith("s") else w
        for w in re.findall(r"[a-z0-9']+", text.lower())
    ]


def slot_ok(case: Case, text: str, others: set[str]) -> bool:
    if case.kind == "digits":
        return spoken_digits(text) == case.slot
    words = _words(text)
    if case.kind == "yes_no":
        answer = next((w for w in words if w in YES or w in NO), None)
        return answer is not None and (answer in YES) == (case.slot == "yes")
    joined = " " + " ".join(words) + " "

    def said(option: str) -> bool:
        return f" {' '.join(_words(option))} " in joined

    return said(case.slot) and not any(said(o) for o in others)


def load_cases(split: str) -> tuple[dict[str, CompiledDialog], list[Case]]:
    data = yaml.safe_load(CASES.read_text())
    dialogs = {name: load_dialog_file(ROOT / path) for name, path in data["dialogs"].items()}
    cases = [
        Case(
            c["split"],
            c["dialog"],
            c["state"],
            c["kind"],
            c["said"],
            str(c.get("slot", "")),
            c.get("vars", {}),
        )
        for c in data["cases"]
        if split in ("all", c["split"])
    ]
    return dialogs, cases


def recognizer(backend: str, model: str, threads: int) -> Recognizer:
    """The recogniser the gateway would build with these settings (its model as prepared)."""
    cfg = AsrConfig.model_validate({"backend": backend, "model_name": model, "threads": threads})
    prepare_models(default_models_dir(), names=[cfg.model_name])
    return recognizer_setup(cfg).factory()


def run(
    backends: list[str], models: list[str], voices: list[EspeakVoice], split: str, threads: int
) -> dict[str, Any]:
    dialogs, cases = load_cases(split)
    slots_by_state: dict[tuple[str, str], set[str]] = defaultdict(set)
    for c in cases:
        if c.kind == "choice":
            slots_by_state[(c.dialog, c.state)].add(c.slot)
    audio = {(v.name, c.said): espeak(c.said, v) for v in voices for c in cases}
    contexts = {
        (c.dialog, c.state, json.dumps(c.vars)): context_for(dialogs[c.dialog], c) for c in cases
    }
    results: dict[str, Any] = {}
    for backend, model in ((b, m) for m in models for b in backends):
        rec = recognizer(backend, model, threads)
        rows = []
        for voice in (v.name for v in voices):
            for case in cases:
                ctx = contexts[(case.dialog, case.state, json.dumps(case.vars))]
                row: dict[str, Any] = {"voice": voice, **case.__dict__}
                for mode, context in (("plain", None), ("biased", ctx)):
                    started = time.perf_counter()
                    result = rec.transcribe(
                        audio[(voice, case.said)], options=DecodeOptions(context=context)
                    )
                    others = slots_by_state[(case.dialog, case.state)] - {case.slot}
                    errors, words = word_errors(case.said, result.text)
                    row[mode] = {
                        "text": result.text,
                        "slot_ok": slot_ok(case, result.text, others)
                        if case.kind != "free"
                        else None,
                        "word_errors": errors,
                        "words": words,
                        "echo_caught": result.echoed,
                        "seconds": round(time.perf_counter() - started, 3),
                    }
                rows.append(row)
                print(
                    f"{backend}/{model} {voice:18s} {case.kind:6s} {case.said!r:45s} "
                    f"plain={row['plain']['text']!r} biased={row['biased']['text']!r}",
                    file=sys.stderr,
                    flush=True,
                )
        echoes = echo_check(rec, list(contexts.values()))
        key = backend if model == "tiny.en" else f"{backend}/{model}"
        results[key] = {"summary": summarise(rows), "echo": echoes, "cases": rows}
    return results


def echo_check(rec: Recognizer, contexts: list[RecognitionContext]) -> dict[str, Any]:
    """Non-speech clips decoded with every context: echoes before and after the guard."""
    clips = non_speech()
    raw = survived = total = 0
    examples: list[dict[str, str]] = []
    for ctx in {c.model_dump_json(): c for c in contexts}.values():
        bias = bias_for(ctx)
        if bias is None:
            continue
        for name, clip in clips.items():
            total += 1
            result = rec.transcribe(clip, options=DecodeOptions(context=ctx))
            raw += result.echoed
            if echoed(bias, result.text):
                survived += 1
            if result.echoed and len(examples) < 10:
                examples.append({"state": ctx.state, "clip": name, "then": result.text})
    return {"decodes": total, "echoes_caught": raw, "echoes_left": survived, "examples": examples}


def _rate(rows: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    slotted = [r for r in rows if r["kind"] != "free"]
    ok = sum(bool(r[mode]["slot_ok"]) for r in slotted)
    errors = sum(r[mode]["word_errors"] for r in rows)
    words = sum(r[mode]["words"] for r in rows)
    return {
        "slot_accuracy": round(ok / len(slotted), 4) if slotted else None,
        "slots": len(slotted),
        "wer": round(errors / words, 4) if words else None,
        "mean_decode_s": round(statistics.fmean(r[mode]["seconds"] for r in rows), 3),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split in sorted({r["split"] for r in rows}):
        part = [r for r in rows if r["split"] == split]
        groups: dict[str, Any] = {"all": {m: _rate(part, m) for m in ("plain", "biased")}}
        for key in ("voice", "kind"):
            for value in sorted({r[key] for r in part}):
                sub = [r for r in part if r[key] == value]
                groups[f"{key}={value}"] = {m: _rate(sub, m) for m in ("plain", "biased")}
        out[split] = groups
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backends", default="whispercpp,faster-whisper")
    parser.add_argument("--models", default="tiny.en", help="tiny.en, base (comma-separated)")
    parser.add_argument("--voices", default=",".join(v.name for v in VOICES))
    parser.add_argument("--split", default="all", choices=["all", "dev", "heldout"])
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="decoder threads; 1 on a machine busy with other work (ggml's threads spin at "
        "barriers and crawl when the cores are oversubscribed)",
    )
    args = parser.parse_args()
    started = time.time()
    voices = [v for v in VOICES if v.name in args.voices.split(",")]
    models = args.models.split(",")
    results = run(args.backends.split(","), models, voices, args.split, args.threads)
    report = {
        "benchmark": "biasing",
        "conditions": {
            "machine": f"{platform.machine()}, shared with other work (timings are noisy)",
            "voices": {v.name: f"{v.voice} at {v.speed} wpm" for v in voices},
            "path": "espeak-ng -> 16 kHz -> 8 kHz G.711 mu-law -> 16 kHz",
            "models": models,
            "threads": args.threads,
        },
        "targets": TARGETS,
        "results": results,
        "took_s": round(time.time() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for backend, res in results.items():
        for split, groups in res["summary"].items():
            for group, modes in groups.items():
                p, b = modes["plain"], modes["biased"]
                print(
                    f"{backend:15s} {split:8s} {group:26s} slots {p['slot_accuracy']} -> "
                    f"{b['slot_accuracy']}  WER {p['wer']} -> {b['wer']}"
                )
        print(backend, "echo", {k: v for k, v in res["echo"].items() if k != "examples"})


if __name__ == "__main__":
    main()
