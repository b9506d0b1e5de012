"""Benchmark: turn-taking that never cuts a caller off (issue 18).

The four services run as real processes (``voicetyped_dev.stack``) with one dialog per
endpointing configuration loaded side by side, each answering every caller turn with "Okay." (a
cached prompt) and listening on; the media gateway routes a call to a configuration by the
called user (``sip:tt-silence-300@…``, ``VOICETYPED_DIALOG_ROUTES``), so every configuration is
measured against the same processes. The scripted caller (``voicetyped_dev.caller``) places real
SIP/RTP calls (8 kHz u-law), one at a time, and says the project's pause set
(``voicetyped_testkit.pause_set``): call-style turns with one or two pauses where the caller has
not finished (200-1500 ms of silence between separately synthesized pieces, Piper's and
espeak-ng's voices), and the same words said without a pause. Calls go voice by voice, every
configuration in turn, so a drift in the machine's load spreads over all of them.

Per configuration:

- **false cutoffs** on the paused turns: the bot's voice reaching the caller from the start of a
  pause until the caller's last word (count, rate, per pause length and category); besides,
  the paused turns answered twice although the bot's voice came only after the caller's last
  word (a turn ended at a pause whose reply was late);
- **turn latency** (caller's last speech sample -> first loud frame of the reply) on complete
  turns: the no-pause turns, and the paused turns that were not cut off either way (p50, p95,
  n);
- **unanswered** turns (no reply within the listening time).

Baseline in the same run: silence mode at 300 ms (what the gateway did for every call before
endpointing was configurable); every configuration's figures are also given as ratios to it.

    python bench/turn_taking.py --out bench/results/turn_taking.json [--quick]
        [--configs silence:300,semantic:200:2000]   # MODE:MIN_MS[:MAX_MS]

Writes the JSON (with every turn's raw result) and a figure beside it (``--png``; default the
JSON's path with ``.png``): false-cutoff rate and latency against the silence budget (min_ms),
one series per mode.

Time on 2 cores: the full run (8 configurations x 45 turns) took 29 min (2026-12-04), bound by
the calls themselves: each configuration is ~130 s of caller audio plus a reply and its latency
per turn; ``--quick`` (4 configurations x 12 turns) about 4 min. Fewer ``--configs`` shorten it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from voicetyped_dev.caller.phone import Phone
from voicetyped_dev.caller.run import Voices, run_call
from voicetyped_dev.caller.script import CallLog, Listen, ListenStep, Say, Step, Turn
from voicetyped_dev.stack import Stack, StackConfig
from voicetyped_testkit import espeak, pause_set
from voicetyped_testkit.pause_set import PauseItem
from voicetyped_testkit.stats import pct

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = (
    "silence:200,silence:300,silence:500,silence:800,silence:1200,"
    "semantic:200:2000,semantic:300:2000"
)
QUICK_CONFIGS = "silence:200,silence:300,silence:800,semantic:200:2000"
GREETING = Listen(timeout_s=10.0, quiet_ms=300)
QUIET_MS = 350
"""The caller's next turn starts this long after the reply ends ("Okay." has no gap this long;
a second reply to one turn that comes later shows in the next turn's ``bot_starts_ms``)."""
ESPEAK_WPM = 175
"""espeak-ng's own default rate (the accuracy benchmark speaks at 160): a shorter full run."""


@dataclass(frozen=True)
class Config:
    mode: str
    min_ms: int
    max_ms: int

    @property
    def name(self) -> str:
        """The dialog's name and the called user that routes to it."""
        return f"tt-{self.mode}-{self.min_ms}" + (
            f"-{self.max_ms}" if self.mode == "semantic" else ""
        )

    @property
    def label(self) -> str:
        return f"{self.mode} {self.min_ms}" + (
            f"/{self.max_ms} ms" if self.mode == "semantic" else " ms"
        )

    def listen(self) -> Listen:
        """Long enough for the slowest end of turn the configuration allows, and a reply."""
        longest = self.max_ms if self.mode == "semantic" else self.min_ms
        return Listen(timeout_s=longest / 1000 + 3.0, quiet_ms=QUIET_MS)

    def dialog(self) -> str:
        return f"""\
apiVersion: voicetyped.io/v1alpha1
kind: Dialog
metadata:
  name: {self.name}
spec:
  description: Answers every caller turn with "Okay." and listens on ({self.label}).
  initial: listen
  settings:
    voice: en_US-joe-medium
    no_input_timeout_ms: 600000
    endpointing: {{mode: {self.mode}, min_ms: {self.min_ms}, max_ms: {self.max_ms}}}
  states:
    listen:
      on_enter:
        - play_tts: {{text: "Hello."}}
      transitions:
        - event: speech
          actions:
            - play_tts: {{text: "Okay."}}
        - event: timeout
          timer: no_input
          actions:
            - play_tts: {{text: "Sorry?"}}
        - event: hangup
          target: done
    done:
      terminal: true
"""


BASELINE = Config("silence", 300, 2000)


def parse_configs(text: str) -> list[Config]:
    """``silence:300,semantic:200:2000`` (max_ms defaults to 2000, and to min_ms if larger)."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        mode, _, rest = part.partition(":")
        low, _, high = rest.partition(":")
        if (
            mode not in ("silence", "semantic")
            or not low.isdigit()
            or (high and not high.isdigit())
        ):
            raise argparse.ArgumentTypeError(f"{part!r}: want MODE:MIN_MS[:MAX_MS]")
        min_ms = int(low)
        out.append(Config(mode, min_ms, int(high) if high else max(2000, min_ms)))
    if len({c.name for c in out}) != len(out):
        raise argparse.ArgumentTypeError("a configuration is given twice")
    return out


def espeak_speak(voice: espeak.EspeakVoice, text: str) -> NDArray[np.int16]:
    return espeak.speak_16k(text, voice)


def caller_voices(base: Voices, names: Sequence[str]) -> dict[str, Voices]:
    """One caller voice per name (each with its own phrase cache, kept for the whole run)."""
    speakers = {
        v.name: espeak.EspeakVoice(v.voice, speed=ESPEAK_WPM, label=v.label) for v in espeak.VOICES
    }
    return {
        name: base
        if name == "piper"
        else base.speaking_as(functools.partial(espeak_speak, speakers[name]))
        for name in names
    }


def stack_config(tmp: Path, configs: Sequence[Config]) -> StackConfig:
    dialogs = []
    for config in configs:
        path = tmp / f"{config.name}.yaml"
        path.write_text(config.dialog())
        dialogs.append(path)
    routes = json.dumps({c.name: c.name for c in configs})
    env = {"media": {"VOICETYPED_DIALOG_ROUTES": routes}}
    stack = StackConfig.with_example_backend(REPO, tmp / "run", dialogs, env=env)
    stack.dialog = BASELINE.name
    return stack


def item_result(item: PauseItem, turn: Turn | None) -> dict[str, Any]:
    """One turn's raw result (``turn`` None: the call ended before it)."""
    out: dict[str, Any] = {
        "id": item.id,
        "category": item.category,
        "voice": item.voice,
        "text": item.text,
        "pauses_ms": list(item.pauses_ms),
    }
    if turn is None:
        return out | {"ran": False}
    return out | {
        "ran": True,
        "cut_off": bool(turn.cutoffs),
        "cutoffs": [
            {"pause": c.pause, "pause_ms": c.pause_ms, "into_ms": c.into_ms} for c in turn.cutoffs
        ],
        "latency_ms": round(turn.latency_s * 1000) if turn.latency_s is not None else None,
        "replies": len(turn.bot_starts),
        # Times relative to the caller's end (negative: while the caller was still talking).
        "bot_starts_ms": [round((t - turn.stopped) * 1000) for t in turn.bot_starts],
        "pauses_at_ms": [round((p.start - turn.stopped) * 1000) for p in turn.pauses],
    }


async def one_call(
    stack: Stack, config: Config, voices: Voices, items: Sequence[PauseItem]
) -> tuple[list[dict[str, Any]], CallLog]:
    steps: list[Step] = [ListenStep(listen=GREETING)]
    steps += [Say(say=item.text, listen=config.listen()) for item in items]
    phone = Phone(rtp_ports=(45000, 45098))
    await phone.start()
    try:
        log = await run_call(
            f"sip:{config.name}@127.0.0.1:{stack.sip_port}",
            steps,
            voices,
            phone=phone,
            transcribe=False,  # the bot only ever says "Okay."
        )
    finally:
        await phone.close()
    turns = [t for t in log.turns if t.caller != "(listening)"]
    results = [
        item_result(item, turns[i] if i < len(turns) else None) for i, item in enumerate(items)
    ]
    return results, log


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def latency(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    ms = [r["latency_ms"] for r in results if r.get("latency_ms") is not None]
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 0.5)),
        "p95_ms": round(pct(ms, 0.95)),
        "max_ms": max(ms),
    }


def summarize(config: Config, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    ran = [r for r in results if r["ran"]]
    paused = [r for r in ran if r["pauses_ms"]]
    complete = [r for r in ran if not r["pauses_ms"]]
    cut = [r for r in paused if r["cut_off"]]
    per_length: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for r in paused:
        hit = {c["pause"] for c in r["cutoffs"]}
        for i, ms in enumerate(r["pauses_ms"]):
            per_length[ms][0] += 1
            per_length[ms][1] += i in hit
    per_category: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in paused:
        per_category[r["category"]][0] += 1
        per_category[r["category"]][1] += r["cut_off"]
    # Cut off although the bot's voice came only after the caller's last word: answered twice.
    # (A latency a little under min_ms is no sign of it: the recogniser's VAD may count a voice's
    # faint last ~100 ms as silence that the caller's "last speech sample" still includes.)
    late = [r for r in paused if not r["cut_off"] and r["replies"] > 1]
    uncut = [r for r in paused if not r["cut_off"] and r not in late]
    return {
        "mode": config.mode,
        "min_ms": config.min_ms,
        "max_ms": config.max_ms,
        "dialog": config.name,
        "turns_not_run": len(results) - len(ran),
        "false_cutoffs": {
            "paused_turns": len(paused),
            "cut_off": len(cut),
            "rate": _rate(len(cut), len(paused)),
            "per_pause_ms": {
                str(ms): {"pauses": n, "cut_off": k, "rate": _rate(k, n)}
                for ms, (n, k) in sorted(per_length.items())
            },
            "per_category": {
                c: {"turns": n, "cut_off": k, "rate": _rate(k, n)}
                for c, (n, k) in sorted(per_category.items())
            },
            "cut_off_reply_after_the_end": len(late),
            "rate_with_replies_after_the_end": _rate(len(cut) + len(late), len(paused)),
        },
        "latency": {
            "complete_turns": latency(complete),
            "paused_not_cut_off": latency(uncut),
            "both": latency([*complete, *uncut]),
        },
        "unanswered": {
            "complete_turns": sum(r["latency_ms"] is None for r in complete),
            "paused_turns": sum(r["latency_ms"] is None for r in paused),
        },
        "complete_turns_answered_twice": sum(r["replies"] > 1 for r in complete),
        # The bot speaking while a caller without a pause was still talking (a natural gap
        # between words taken for the end, or a late reply to the turn before).
        "complete_turns_spoken_into": sum(any(t < 0 for t in r["bot_starts_ms"]) for r in complete),
    }


def ratios(mine: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    lat, base_lat = mine["latency"]["complete_turns"], base["latency"]["complete_turns"]
    return {
        "false_cutoff_rate": ratio(mine["false_cutoffs"]["rate"], base["false_cutoffs"]["rate"]),
        "complete_p50": ratio(lat.get("p50_ms"), base_lat.get("p50_ms")),
        "complete_p95": ratio(lat.get("p95_ms"), base_lat.get("p95_ms")),
    }


def plot(configs: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cuts, lat) = plt.subplots(2, 1, sharex=True, figsize=(7, 7))
    for mode, colour in (("silence", "tab:blue"), ("semantic", "tab:orange")):
        mine = sorted((c for c in configs if c["mode"] == mode), key=lambda c: c["min_ms"])
        if not mine:
            continue
        x = [c["min_ms"] for c in mine]
        rate = [
            100 * c["false_cutoffs"]["rate"] if c["false_cutoffs"]["rate"] is not None else np.nan
            for c in mine
        ]
        cuts.plot(x, rate, "o-", color=colour, label=mode)
        for key, style in (("p50_ms", "o-"), ("p95_ms", "s--")):
            ms = [c["latency"]["complete_turns"].get(key, np.nan) for c in mine]
            lat.plot(x, ms, style, color=colour, label=f"{mode} {key[:3]}")
    base = [c for c in configs if c["dialog"] == BASELINE.name]
    if base:
        b = base[0]
        if b["false_cutoffs"]["rate"] is not None:
            cuts.plot(
                [b["min_ms"]], [100 * b["false_cutoffs"]["rate"]], "k*", ms=12, label="baseline"
            )
    cuts.set_ylabel("false cutoffs (% of paused turns)")
    cuts.set_ylim(0, 105)
    cuts.legend()
    cuts.grid(alpha=0.3)
    lat.set_ylabel("turn latency, complete turns (ms)")
    lat.set_xlabel("silence budget min_ms (semantic: pause before the turn model asks)")
    lat.set_ylim(0, lat.get_ylim()[1] * 1.1)
    lat.legend(fontsize="small")
    lat.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def run(tmp: Path, configs: list[Config], quick: bool) -> dict[str, Any]:
    started = time.monotonic()
    items = pause_set.items(quick)
    groups: dict[str, list[PauseItem]] = defaultdict(list)
    for item in items:
        groups[item.voice].append(item)
    base = await asyncio.to_thread(Voices)
    voices = caller_voices(base, list(groups))
    results: dict[str, list[dict[str, Any]]] = {c.name: [] for c in configs}
    problems: list[str] = []
    stack = Stack(stack_config(tmp, configs))
    await stack.start()
    try:
        for voice, said in groups.items():
            for config in configs:
                began = time.monotonic()
                mine, log = await one_call(stack, config, voices[voice], said)
                results[config.name] += mine
                cut = sum(r.get("cut_off", False) for r in mine)
                ms = [r["latency_ms"] for r in mine if r.get("latency_ms") is not None]
                print(
                    f"{config.label:>22} {voice:>20}: {len(said)} turns, {cut} cut off, "
                    f"latency {ms} ms ({time.monotonic() - began:.0f} s)",
                    flush=True,
                )
                problems += [
                    f"{config.name} {voice}: {f}"
                    for f in log.failures
                    if not f.startswith("false cutoff")
                ]
    finally:
        await stack.stop()
    summaries = [summarize(c, results[c.name]) for c in configs]
    base_summary = next(s for s in summaries if s["dialog"] == BASELINE.name)
    for s in summaries:
        s["vs_baseline"] = ratios(s, base_summary)
    return {
        "benchmark": "turn_taking",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "quick": quick,
        "set": {
            "paused_turns": sum(i.paused for i in items),
            "complete_turns": sum(not i.paused for i in items),
            "voices": list(groups),
            "pause_lengths_ms": list(pause_set.PAUSE_LENGTHS_MS),
        },
        "baseline": BASELINE.name,
        "configs": summaries,
        "call_problems": problems,
        "turns": {c.name: results[c.name] for c in configs},
        "elapsed_s": round(time.monotonic() - started),
    }


def brief(summary: dict[str, Any]) -> str:
    fc, lat = summary["false_cutoffs"], summary["latency"]
    rate = f"{100 * fc['rate']:.0f}%" if fc["rate"] is not None else "-"
    c, u = lat["complete_turns"], lat["paused_not_cut_off"]
    return (
        f"false cutoffs {fc['cut_off']}/{fc['paused_turns']} ({rate}; "
        f"+{fc['cut_off_reply_after_the_end']} answered twice after the end), "
        f"complete p50/p95 {c.get('p50_ms')}/{c.get('p95_ms')} ms (n {c['n']}), "
        f"paused uncut p50/p95 {u.get('p50_ms')}/{u.get('p95_ms')} ms (n {u['n']}), "
        f"unanswered {summary['unanswered']['complete_turns']} complete + "
        f"{summary['unanswered']['paused_turns']} paused"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--png", type=Path, help="the figure (default: --out with .png)")
    parser.add_argument("--quick", action="store_true", help="12 turns, 4 configurations")
    parser.add_argument(
        "--configs",
        type=parse_configs,
        help=f"MODE:MIN_MS[:MAX_MS],… (default {DEFAULT_CONFIGS}; --quick: {QUICK_CONFIGS}); "
        f"the baseline {BASELINE.mode}:{BASELINE.min_ms} is always run",
    )
    args = parser.parse_args()
    configs: list[Config] = args.configs or parse_configs(
        QUICK_CONFIGS if args.quick else DEFAULT_CONFIGS
    )
    if BASELINE.name not in {c.name for c in configs}:
        configs.insert(0, BASELINE)
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(Path(tmp), configs, args.quick))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    png = args.png or args.out.with_suffix(".png")
    n = result["set"]
    title = (
        f"turn-taking: {n['paused_turns']} paused + {n['complete_turns']} complete turns "
        f"per configuration{' (quick)' if args.quick else ''}"
    )
    plot(result["configs"], png, title)
    for s in result["configs"]:
        print(f"{s['dialog']:>22}: {brief(s)}; vs baseline {s['vs_baseline']}")
    for problem in result["call_problems"]:
        print("call problem:", problem)
    print(f"{result['elapsed_s']} s; wrote {args.out} and {png}")


if __name__ == "__main__":
    main()
