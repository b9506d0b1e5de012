"""Benchmark: backchannels and noise must not barge in (issue 18).

The four services and the example backend run as real processes (``voicetyped_dev.stack``);
every call is real SIP/RTP (G.711) from a scripted phone (``voicetyped_dev.caller.phone``), one
at a time. The dialog's first prompt is long (~10 s); ~1.5-2.7 s into it the caller makes one
sound, then listens until the prompt should have ended. Two dialogs, the same prompt: one with
``barge_in: immediate`` (before: the first sound stops it) and one with ``barge_in: allow``
(after: only words stop it), reached by the called user part (the media gateway's
``dialog_routes``).

The labelled set:

- backchannels: "uh-huh", "mm-hmm", "okay", "yeah", "right", "I see" and two pairs ("uh-huh,
  okay", "mm-hmm, yeah"), spoken by Piper (the caller's default voice, ``Voices``) and two
  espeak-ng voices (US male, British female);
- noise: a cough (two shaped noise bursts with a buzz) and a door (a low thump with a click and
  a rattle, decaying), each at two levels, synthesized deterministically with numpy;
- true barge-ins: "wait, I want to talk to an agent", "no, stop", "agent please", by the same
  three voices.

Measured from the caller's side: the prompt counts as stopped when the bot's audio goes quiet
(longer than any pause inside the prompt, from a reference call with no sound) more than 0.5 s
before the prompt's end; the stop time is from the caller's first sound to the moment the bot's
voice should have gone on (the reference call's timeline) but did not: mid-word that is its
last loud frame, in a pause between words the pause's end (RTP both ways and the media
gateway's playout included). Reported per
mode: false barge-in rate (backchannels and noise that stopped the prompt), true barge-in rate,
stop time of the true barge-ins, and the speech gateway's barge-in counters.

    python bench/barge_in.py --out bench/results/barge_in.json [--quick]

Full: 37 sounds x 2 modes, one call at a time (~8 min on 2 cores); --quick: 8 sounds, Piper
only (~2 min).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import re
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from voicetyped_dev.caller.phone import Phone, PhoneCall
from voicetyped_dev.caller.run import Voices, trim
from voicetyped_dev.stack import Stack, StackConfig
from voicetyped_testkit.espeak import VOICES as ESPEAK_VOICES
from voicetyped_testkit.espeak import EspeakVoice, speak_16k
from voicetyped_testkit.speech import resample, to_pcm
from voicetyped_testkit.stats import pct

REPO = Path(__file__).resolve().parents[1]
PROMPT = (
    "Thanks for calling the city library. Our opening hours are Monday to Friday from eight in "
    "the morning until six in the evening, and on Saturday from nine until one."
)
MODES = ("immediate", "allow")
BACKCHANNELS = ("Uh-huh.", "Mm-hmm.", "Okay.", "Yeah.", "Right.", "I see.")
PAIRS = ("Uh-huh, okay.", "Mm-hmm, yeah.")
TRUE = ("Wait, I want to talk to an agent.", "No, stop.", "Agent please.")
QUICK_BACKCHANNELS = ("Uh-huh.", "Mm-hmm.", "Okay.", "I see.")
QUICK_TRUE = ("No, stop.", "Agent please.")
ESPEAK = tuple(v for v in ESPEAK_VOICES if v.name in ("en-us-male", "en-gb-female"))
EARLY_S = 0.5
"""A prompt that goes quiet this long before its end was stopped."""


@dataclass(frozen=True)
class Sound:
    kind: str  # backchannel | noise | true
    label: str
    voice: str
    pcm: bytes  # 8 kHz s16le, trimmed


# -- the labelled set ------------------------------------------------------------------------


def _band_noise(n: int, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / 16000)
    spectrum[(freqs < lo) | (freqs > hi)] = 0
    out = np.fft.irfft(spectrum, n)
    return np.asarray(out / np.abs(out).max())


def cough(level: float, seed: int) -> np.ndarray:
    """Two bursts of noise shaped like a cough (sharp onset, ~90 ms decay, a little buzz)."""
    rng = np.random.default_rng(seed)
    parts = []
    for duration in (0.32, 0.26):
        n = int(duration * 16000)
        t = np.arange(n) / 16000
        envelope = np.minimum(t / 0.008, 1) * np.exp(-t / 0.09)
        burst = _band_noise(n, 300, 3500, rng) * envelope
        burst += 0.3 * np.sin(2 * np.pi * 180 * t) * np.exp(-t / 0.05)
        parts += [burst * level, np.zeros(int(0.12 * 16000))]
    return np.concatenate(parts)


def door(level: float, seed: int) -> np.ndarray:
    """A door closing: a low thump (70/140 Hz) with a click and a rattle, decaying."""
    rng = np.random.default_rng(seed)
    n = int(0.7 * 16000)
    t = np.arange(n) / 16000
    thump = np.sin(2 * np.pi * 70 * t) * np.exp(-t / 0.12)
    thump += 0.5 * np.sin(2 * np.pi * 140 * t) * np.exp(-t / 0.08)
    click = _band_noise(n, 200, 4000, rng) * np.exp(-t / 0.015)
    rattle = _band_noise(n, 400, 2500, rng) * np.exp(-t / 0.12) * 0.25
    out = thump * 0.7 + click * 0.6 + rattle
    return np.asarray(out / np.abs(out).max() * level)


def to_8k(audio16k: np.ndarray) -> bytes:
    pcm = to_pcm(resample(audio16k.astype(np.float32), 16000, 8000))
    return bytes(trim(pcm).tobytes())


def espeak_speaker(voice: EspeakVoice) -> Callable[[str], Any]:
    return lambda text: speak_16k(text, voice)


def labelled_set(voices: Voices, quick: bool) -> list[Sound]:
    speakers: list[tuple[str, Voices]] = [("piper", voices)]
    if not quick:
        speakers += [(v.name, voices.speaking_as(espeak_speaker(v))) for v in ESPEAK]
    said = (QUICK_BACKCHANNELS, QUICK_TRUE) if quick else (BACKCHANNELS + PAIRS, TRUE)
    sounds = []
    for name, speaker in speakers:
        sounds += [Sound("backchannel", t, name, speaker.speak_8k(t)) for t in said[0]]
        sounds += [Sound("true", t, name, speaker.speak_8k(t)) for t in said[1]]
    noises = [("cough", cough(0.5, 1)), ("door", door(0.8, 2))]
    if not quick:
        noises += [("cough (soft)", cough(0.2, 3)), ("door (soft)", door(0.3, 4))]
    sounds += [Sound("noise", label, "numpy", to_8k(audio)) for label, audio in noises]
    return sounds


def dialog(mode: str) -> str:
    return f"""name: barge-{mode}
description: A long prompt to talk over (bench/barge_in.py).
initial: prompt
settings: {{no_input_timeout_ms: 4000}}
states:
  prompt:
    on_enter:
      - play_tts: {{text: "{PROMPT}", barge_in: {mode}}}
    transitions:
      - event: speech
        target: heard
      - event: timeout
        timer: no_input
        target: done
  heard:
    transitions:
      - event: timeout
        timer: no_input
        target: done
  done: {{terminal: true}}
"""


# -- one call --------------------------------------------------------------------------------


@dataclass
class Reference:
    duration_s: float
    quiet_s: float
    """A quiet stretch this long means the bot stopped (longer than any pause in the prompt)."""
    loud: list[float]
    """When the prompt is loud: its loud frames' arrival, from its first one."""


async def first_loud(call: PhoneCall, after: float, timeout_s: float = 15) -> float:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline and not call.ended.is_set():
        for frame in call.heard:
            if frame.loud and frame.arrived > after:
                return frame.arrived
        await asyncio.sleep(0.02)
    raise RuntimeError("the bot did not speak")


def stopped_at(call: PhoneCall, since: float, quiet_s: float, now: float) -> float | None:
    """Arrival of the bot's last loud frame before its first quiet stretch of ``quiet_s`` after
    ``since`` (None: it kept talking)."""
    previous = since
    for frame in call.heard:
        if not frame.loud or frame.arrived <= since:
            continue
        if frame.arrived - previous >= quiet_s:
            return previous
        previous = frame.arrived
    return previous if now - previous >= quiet_s else None


async def dial(stack: Stack, route: str) -> tuple[Phone, PhoneCall, float]:
    phone = Phone(rtp_ports=(45000, 45098))
    await phone.start()
    dialled = time.perf_counter()
    call = await phone.dial(f"sip:{route}@127.0.0.1:{stack.sip_port}")
    return phone, call, await first_loud(call, dialled)


async def hang_up(phone: Phone, call: PhoneCall) -> None:
    if not call.ended.is_set():
        await call.hang_up()
    await phone.close()
    await asyncio.sleep(0.3)


async def reference(stack: Stack, route: str) -> Reference:
    """The prompt with nobody talking: how long it is and its longest pause."""
    phone, call, start = await dial(stack, route)
    try:
        await asyncio.sleep(14)
    finally:
        await hang_up(phone, call)
    loud = [f.arrived - start for f in call.heard if f.loud and f.arrived >= start]
    gaps = [b - a for a, b in itertools.pairwise(loud)]
    return Reference(loud[-1], max(0.6, max(gaps, default=0) + 0.25), loud)


async def talk_over(
    stack: Stack, route: str, sound: Sound, offset_s: float, ref: Reference
) -> dict[str, Any]:
    phone, call, start = await dial(stack, route)
    prompt_end = start + ref.duration_s
    try:
        await asyncio.sleep(max(0.0, start + offset_s - time.perf_counter()))
        began = time.perf_counter()
        call.say(sound.pcm)
        decided = prompt_end - EARLY_S + ref.quiet_s + 0.1  # a stop before then is seen by then
        while time.perf_counter() < decided and not call.ended.is_set():
            now = time.perf_counter()
            stop = stopped_at(call, began, ref.quiet_s, now)
            if stop is not None and stop < prompt_end - EARLY_S and not call.saying():
                break  # stopped early and the caller has finished: nothing more to see
            await asyncio.sleep(0.05)
    finally:
        await hang_up(phone, call)
    stop = stopped_at(call, began, ref.quiet_s, time.perf_counter())
    stopped = stop is not None and stop < prompt_end - EARLY_S
    silent_from = None
    if stopped and stop is not None:  # the bot's next sound, had it gone on
        silent_from = next((start + t for t in ref.loud if start + t > stop + 0.01), stop)
    return {
        "kind": sound.kind,
        "label": sound.label,
        "voice": sound.voice,
        "sound_ms": round(len(sound.pcm) / 16),
        "offset_ms": round(offset_s * 1000),
        "stopped": stopped,
        "stop_ms": round((silent_from - began) * 1000) if silent_from is not None else None,
    }


# -- the run ---------------------------------------------------------------------------------


def speech_counters(stack: Stack) -> dict[str, float]:
    url = f"http://127.0.0.1:{stack.ports['speech'].http}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    out: dict[str, float] = {}
    pattern = r'^(voicetyped_speech_barge_in(?:s|_ignored)_total)\{reason="(\w+)"\} (\S+)$'
    for name, reason, value in re.findall(pattern, text, re.MULTILINE):
        key = f"{'stopped' if name.endswith('ins_total') else 'ignored'}:{reason}"
        out[key] = float(value)
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def rate(kinds: tuple[str, ...]) -> dict[str, Any]:
        mine = [r for r in rows if r["kind"] in kinds]
        stopped = sum(r["stopped"] for r in mine)
        return {"n": len(mine), "stopped": stopped, "rate": round(stopped / max(1, len(mine)), 3)}

    out = {
        "false_barge_in": rate(("backchannel", "noise")),
        "backchannel": rate(("backchannel",)),
        "noise": rate(("noise",)),
        "true_barge_in": rate(("true",)),
    }
    stops = [r["stop_ms"] for r in rows if r["kind"] == "true" and r["stop_ms"] is not None]
    if stops:
        out["true_stop_ms"] = {
            "p50": round(statistics.median(stops)),
            "p90": round(pct(stops, 0.9)),
            "max": max(stops),
        }
    return out


async def run(tmp: Path, quick: bool) -> dict[str, Any]:
    voices = await asyncio.to_thread(Voices)
    sounds = await asyncio.to_thread(labelled_set, voices, quick)
    dialogs = []
    for mode in MODES:
        path = tmp / f"barge-{mode}.yaml"
        path.write_text(dialog(mode), "utf-8")
        dialogs.append(path)
    routes = {mode: f"barge-{mode}" for mode in MODES}
    config = StackConfig.with_example_backend(
        REPO,
        tmp / "run",
        dialogs=dialogs,
        env={"media": {"VOICETYPED_DIALOG_ROUTES": json.dumps(routes)}},
    )
    result: dict[str, Any] = {
        "benchmark": "barge_in",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "quick": quick,
        "sounds": len(sounds),
        "prompt": PROMPT,
    }
    stack = Stack(config)
    await stack.start()
    try:
        for mode in MODES:
            ref = await reference(stack, mode)
            print(
                f"{mode}: prompt {ref.duration_s:.1f} s, stopped: quiet {ref.quiet_s:.2f} s",
                flush=True,
            )
            before = speech_counters(stack)
            rows = []
            for i, sound in enumerate(sounds):
                row = await talk_over(stack, mode, sound, 1.5 + 0.4 * (i % 4), ref)
                rows.append(row)
                stop = f"stopped after {row['stop_ms']} ms" if row["stopped"] else "played on"
                print(f"  {sound.kind:11} {sound.voice:12} {sound.label:36} {stop}", flush=True)
            after = speech_counters(stack)
            counters = {k: v - before.get(k, 0.0) for k, v in after.items()}
            result[mode] = {
                "prompt_s": round(ref.duration_s, 2),
                **summarize(rows),
                "speech_gateway": {k: int(v) for k, v in sorted(counters.items()) if v},
                "per_sound": rows,
            }
            print(" ", {k: v for k, v in result[mode].items() if k != "per_sound"}, flush=True)
    finally:
        await stack.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(Path(tmp), args.quick))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for mode in MODES:
        print(mode, json.dumps({k: v for k, v in result[mode].items() if k != "per_sound"}))


if __name__ == "__main__":
    main()
