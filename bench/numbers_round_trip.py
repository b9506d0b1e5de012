"""Benchmark: numbers through the voice and back (text -> Piper -> G.711 -> whisper.cpp -> values).

- **prompts**: each case of ``voicetyped_testkit.numbers.PROMPTS`` is spoken twice -- as the
  runtime sends it now (say_as hints and identifier defaults applied) and, the baseline from the
  same run, with the value as it rendered before say_as ("Order 48213") -- and counts as heard
  when the value comes back out of whisper.cpp's transcript through ``spokenDigits`` /
  ``spokenNumbers``.
- **callers**: ``CALLERS``, numbers read the ways callers read them, through the same path; heard
  when the dialog's normaliser gets the value. The baseline is the normaliser as it was before
  (figures and the ten digit words only).

Models: the bundled Piper voice (en_US-joe-medium) and Whisper tiny.en (whisper.cpp). Both are
deterministic here (Piper without noise, greedy decoding), so the counts do not vary run to run.

    python bench/numbers_round_trip.py --out bench/results/numbers_round_trip.json
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path
from typing import Any

from num2words import num2words
from voicetyped_speech.models.prepare import default_models_dir, locate_bundled, prepare_models
from voicetyped_speech.models.verify import load_voice, load_whisper_cpp
from voicetyped_testkit.numbers import CALLERS, PROMPTS, heard, transcribe_phone

_OLD_DIGIT_WORDS = {num2words(d): str(d) for d in range(10)}
_OLD_DIGIT_WORDS |= {"oh": "0", "o": "0"}


def old_spoken_digits(text: str) -> str:
    """The normaliser before this change (figures and digit words only), for the baseline."""
    out = []
    for raw in re.sub(r"[^a-z0-9']+", " ", text.lower()).split():
        if raw.isdigit():
            out.append(raw)
        elif raw in _OLD_DIGIT_WORDS:
            out.append(_OLD_DIGIT_WORDS[raw])
    return "".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/numbers_round_trip.json"))
    args = parser.parse_args()
    bundled = locate_bundled()
    prepared = prepare_models(default_models_dir())
    voice = load_voice(bundled.voice_model, bundled.voice_config)
    whisper = load_whisper_cpp(prepared.ggml_path)
    started = time.perf_counter()

    prompts: list[dict[str, Any]] = []
    for case in PROMPTS:
        spoken, unhinted = case.spoken(), case.unhinted()
        now = transcribe_phone(voice, whisper, spoken)
        before = transcribe_phone(voice, whisper, unhinted)
        prompts.append(
            {
                "template": case.template,
                "value": case.value,
                "spoken": spoken,
                "heard": now,
                "ok": heard(case.check, case.expected, now),
                "baseline_spoken": unhinted,
                "baseline_heard": before,
                "baseline_ok": heard(case.check, case.expected, before),
            }
        )
        print(json.dumps(prompts[-1]), flush=True)

    callers: list[dict[str, Any]] = []
    for caller in CALLERS:
        transcript = transcribe_phone(voice, whisper, caller.said)
        old_ok = caller.check == "digits" and old_spoken_digits(transcript) == caller.expected
        callers.append(
            {
                "said": caller.said,
                "heard": transcript,
                "expected": caller.expected,
                "ok": heard(caller.check, caller.expected, transcript),
                "baseline_ok": old_ok,
            }
        )
        print(json.dumps(callers[-1]), flush=True)

    def count(rows: list[dict[str, Any]], key: str) -> str:
        return f"{sum(r[key] for r in rows)}/{len(rows)}"

    result = {
        "conditions": {
            "voice": bundled.voice_name,
            "asr": f"whisper.cpp {bundled.whisper_name}",
            "path": "Piper 22.05 kHz -> 16 kHz -> 8 kHz G.711 mu-law -> 16 kHz",
            "machine": platform.machine(),
            "seconds": round(time.perf_counter() - started, 1),
        },
        "prompts_heard": count(prompts, "ok"),
        "prompts_heard_baseline": count(prompts, "baseline_ok"),
        "callers_understood": count(callers, "ok"),
        "callers_understood_baseline": count(callers, "baseline_ok"),
        "prompts": prompts,
        "callers": callers,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"prompts heard {result['prompts_heard']} (baseline {result['prompts_heard_baseline']}); "
        f"callers understood {result['callers_understood']} "
        f"(baseline {result['callers_understood_baseline']})"
    )


if __name__ == "__main__":
    main()
