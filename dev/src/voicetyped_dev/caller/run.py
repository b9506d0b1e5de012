"""Run a scripted call against a gateway and report what happened, turn by turn.

Caller speech is synthesized with Piper (or taken from WAV files) and sent as 8 kHz u-law; the
pieces between a ``say`` step's pause markers are synthesized one by one (:mod:`.pauses`). The
bot's replies are recorded from RTP and transcribed locally with whisper.cpp (both from the
speech package, which a development install has). False cutoffs (the bot speaking while the
caller pauses mid-turn, :mod:`.cutoff`) are kept on the turn and are failures of the call.
"""

from __future__ import annotations

import asyncio
import copy
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from voicetyped_dev.caller.cutoff import find_cutoffs, starts, timeline
from voicetyped_dev.caller.heard import Heard
from voicetyped_dev.caller.match import says
from voicetyped_dev.caller.pauses import Said, Spoken, join, wav_pauses
from voicetyped_dev.caller.phone import Phone, PhoneCall
from voicetyped_dev.caller.script import (
    BotUtterance,
    CallLog,
    Expect,
    Hangup,
    Listen,
    ListenStep,
    Press,
    Say,
    Step,
    Turn,
    Wait,
    Wav,
    listen,
)

Event = Callable[[str, Any], None]


Speaker = Callable[[str], "np.ndarray[Any, np.dtype[np.int16]]"]
"""A caller voice: text -> 16 kHz int16 PCM (blocking; called in a worker thread)."""


class Voices:
    """Piper (or another ``speaker``) for the caller's words, whisper.cpp for the bot's
    (loaded once)."""

    def __init__(self) -> None:
        import threading

        from voicetyped_speech.asr.whispercpp import WhisperCppRecognizer
        from voicetyped_speech.models.prepare import (
            default_models_dir,
            locate_bundled,
            prepare_models,
        )
        from voicetyped_speech.models.verify import load_voice

        bundled = locate_bundled()
        prepared = prepare_models(default_models_dir())
        self._voice = load_voice(bundled.voice_model, bundled.voice_config)
        self._asr = WhisperCppRecognizer(prepared.ggml_path)
        self._speaker: Speaker = self._piper
        self._cache: dict[str, bytes] = {}
        # One whisper.cpp context and one Piper session: concurrent calls (to_thread) take
        # turns; whisper.cpp aborts the process when two threads decode on one context.
        self._lock = threading.Lock()

    def speaking_as(self, speaker: Speaker) -> Voices:
        """The same bot-side recogniser with another caller voice (its own phrase cache)."""
        other = copy.copy(self)
        other._speaker = speaker
        other._cache = {}
        return other

    def speak_8k(self, text: str) -> bytes:
        """``text`` as 8 kHz s16le, without the silence the voice puts around it."""
        cached = self._cache.get(text)  # the call reads its words here, on the event loop
        if cached is not None:
            return cached
        with self._lock:
            return self._speak_8k(text)

    def speak_16k(self, text: str) -> bytes:
        """``text`` as 16 kHz s16le without the silence around it (a browser's microphone,
        a WebRTC caller; blocking: Piper)."""
        with self._lock:
            return trim(self._speaker(text)).tobytes()

    def _piper(self, text: str) -> np.ndarray[Any, np.dtype[np.int16]]:
        from piper import SynthesisConfig
        from voicetyped_speech.models.verify import synthesize_16k
        from voicetyped_testkit.speech import to_pcm

        return to_pcm(synthesize_16k(self._voice, text, SynthesisConfig(noise_scale=0.4)))

    def _speak_8k(self, text: str) -> bytes:
        if text not in self._cache:
            from voicetyped_testkit.speech import resample, to_pcm

            audio = self._speaker(text).astype(np.float32) / 32768
            pcm = to_pcm(resample(audio, 16000, 8000))
            self._cache[text] = trim(pcm).tobytes()
        return self._cache[text]

    def transcribe(self, pcm16k: bytes) -> str:
        audio = np.frombuffer(pcm16k, dtype="<i2").astype(np.float32) / 32768
        padded = np.concatenate([audio, np.zeros(8000, dtype=np.float32)])
        with self._lock:
            return self._asr.transcribe(padded).text


def speech_bounds(pcm: np.ndarray) -> tuple[int, int]:
    """``[first, last + 1)`` of the loud samples (the whole of it when none is loud)."""
    level = np.abs(pcm.astype(np.int32))
    loud = np.flatnonzero(level > max(200, level.max(initial=0) // 50))
    return (int(loud[0]), int(loud[-1]) + 1) if len(loud) else (0, len(pcm))


def trim(pcm: np.ndarray) -> np.ndarray:
    start, end = speech_bounds(pcm)
    return pcm[start:end]


def read_wav_8k(path: Path) -> tuple[bytes, int]:
    """The file as 8 kHz s16le without its leading and trailing silence, and how many (8 kHz)
    samples of leading silence were cut."""
    with wave.open(str(path), "rb") as w:
        rate, data = w.getframerate(), w.readframes(w.getnframes())
        channels = w.getnchannels()
    pcm = np.frombuffer(data, dtype="<i2")
    if channels > 1:
        pcm = pcm.reshape(-1, channels)[:, 0]
    if rate != 8000:
        from voicetyped_testkit.speech import resample, to_pcm

        pcm = to_pcm(resample(pcm.astype(np.float32) / 32768, rate, 8000))
    start, end = speech_bounds(pcm)
    return pcm[start:end].tobytes(), start


def speak_said(voices: Voices, said: Said) -> Spoken:
    """A ``say`` step's audio: each piece between its pause markers spoken (same voice) and
    trimmed, joined with the pauses' silence."""
    return join(said, [voices.speak_8k(piece) for piece in said.pieces])


def wav_spoken(step: Wav) -> Spoken:
    pcm, lead = read_wav_8k(step.wav)
    pauses = wav_pauses(step.pauses_ms, lead, len(pcm) // 2, step.wav.name)
    return Spoken(pcm, pauses)


async def run_call(
    target: str,
    steps: list[Step],
    voices: Voices,
    on_event: Event | None = None,
    phone: Phone | None = None,
    transcribe: bool = True,
    heard: Heard | None = None,
) -> CallLog:
    """Place the call and run ``steps``. ``transcribe=False`` leaves the bot's words
    untranscribed during the call (:func:`transcribe_turns` does it afterwards), so a load test
    does not spend the machine's CPU on its own measuring; ``expect`` steps then fail.
    ``heard`` asks the runtime what it heard of each caller turn (``Turn.heard``)."""

    def event(kind: str, data: Any) -> None:
        if on_event is not None:
            on_event(kind, data)

    asr = voices if transcribe else None
    # A person knows what to say before the bot has finished: synthesizing it on the spot
    # made the caller so slow on a loaded machine that the dialog's no-input timer said goodbye.
    # Recordings too, so that a pause outside a file's speech is an error before the call.
    recorded: dict[int, Spoken] = {}
    for step in steps:
        if isinstance(step, Say):
            await asyncio.to_thread(speak_said, voices, step.said)
        elif isinstance(step, Wav):
            recorded[id(step)] = await asyncio.to_thread(wav_spoken, step)
    own_phone = phone is None
    phone = phone or Phone()
    if own_phone:
        await phone.start()
    log = CallLog()
    try:
        call = await phone.dial(target)
    except (RuntimeError, TimeoutError) as exc:  # rejected (4xx-6xx) or never answered
        log.failures.append(f"the call to {target} was not answered: {exc}")
        if own_phone:
            await phone.close()
        event("ended", log)
        return log
    log.call_id = phone.call.call_id
    if heard is not None:
        heard.start(phone.session_id)
    event("answered", target)
    since = time.perf_counter()
    try:
        talks_over_greeting = (
            bool(steps) and isinstance(steps[0], Say) and steps[0].barge_in_after_ms is not None
        )
        if not steps or not (isinstance(steps[0], ListenStep) or talks_over_greeting):
            steps = [ListenStep(listen=Listen()), *steps]  # the greeting
        for step in steps:
            if call.ended.is_set() and not isinstance(step, Expect | Hangup):
                log.failures.append(f"the call ended before {step!r}")
                break
            if isinstance(step, ListenStep):
                utterance = await listen(call, since, step.listen)
                turn = Turn("(listening)", since, _latency(utterance, since), utterance)
                await _finish_turn(turn, asr, log, event, heard)
                since = time.perf_counter()
            elif isinstance(step, Say | Wav):
                if isinstance(step, Say):  # synthesized before dialling: from the cache
                    spoken = speak_said(voices, step.said)
                    words = step.say
                else:
                    spoken = recorded[id(step)]
                    words = step.wav.name
                turn = await _speak(call, step, spoken, words)
                log.failures += [c.describe() for c in turn.cutoffs]
                await _finish_turn(turn, asr, log, event, heard)
                since = time.perf_counter()
            elif isinstance(step, Press):
                pressed = time.perf_counter()
                for n, key in enumerate(step.press):
                    pressed = time.perf_counter()
                    call.press(key)
                    await asyncio.sleep(
                        0.2 + step.gap_ms / 1000 if n < len(step.press) - 1 else 0.2
                    )
                # From the last key going down: the gateway may act on a key before its end
                # packets have gone out, and a reply that began then is still the reply.
                utterance = await listen(call, pressed, step.listen)
                keys = f"[keys {step.press}]"
                turn = Turn(keys, pressed, _latency(utterance, pressed), utterance)
                await _finish_turn(turn, asr, log, event, heard)
                since = time.perf_counter()
            elif isinstance(step, Wait):
                await asyncio.sleep(step.wait)
            elif isinstance(step, Expect):
                said = [t.bot.text for t in log.turns if t.bot is not None]
                match = says(said[-1], step.expect) if said else None
                if match is None or not match.matched:
                    last = said[-1] if said else "(nothing)"
                    closest = f" ({match.describe()})" if match and match.describe() else ""
                    log.failures.append(
                        f"expected the bot to say {step.expect!r}; it said {last!r}{closest}"
                    )
            elif isinstance(step, Hangup):
                break
        await asyncio.sleep(0.3)
        log.ended_by_bot = call.remote_hangup
        if call.remote_hangup and not any(t.bot is not None for t in log.turns):
            why = f" ({call.hangup_reason})" if call.hangup_reason else ""
            log.failures.insert(0, f"the gateway hung up before the bot said anything{why}")
    finally:
        if not call.ended.is_set():
            await call.hang_up()
        else:
            await call.close()
        if own_phone:
            await phone.close()
        if heard is not None:
            await heard.stop()
            callers = [t for t in log.turns if t.caller != "(listening)"]
            late = heard.claim()  # heard after the last turn was printed
            if late and callers:
                callers[-1].heard = [*(callers[-1].heard or []), *late]
    event("ended", log)
    return log


def _quiet_after(call: PhoneCall, began: float, hold_s: float = 0.3) -> float | None:
    """Seconds from ``began`` to the start of the first stretch of ``hold_s`` without the bot's
    voice (pauses between words are shorter)."""
    run_start: float | None = None
    for frame in call.heard:
        if frame.arrived <= began:
            continue
        if frame.loud:
            run_start = None
        elif run_start is None:
            run_start = frame.arrived
        elif frame.arrived - run_start >= hold_s:
            return run_start - began
    return None


def _latency(utterance: BotUtterance | None, since: float) -> float | None:
    return utterance.started - since if utterance is not None else None


async def _speak(call: PhoneCall, step: Say | Wav, spoken: Spoken, words: str) -> Turn:
    barge_in = step.barge_in_after_ms if isinstance(step, Say) else None
    if barge_in is not None:
        # Talk over the bot: wait for its voice, then start after the given delay.
        waited = time.perf_counter()
        while not any(f.loud and f.arrived > waited - 5 for f in call.heard[-10:]):
            if time.perf_counter() - waited > 10 or call.ended.is_set():
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(barge_in / 1000)
    began = time.perf_counter()
    call.say(spoken.pcm)
    stopped = await call.until_said()
    stop_s = None
    if barge_in is not None:
        stop_s = _quiet_after(call, began)
    utterance = await listen(call, stopped, step.listen)
    pauses, last_speech = timeline(spoken.pauses, len(spoken.pcm) // 2, stopped)
    turn = Turn(words, stopped, _latency(utterance, stopped), utterance, stop_s, pauses=pauses)
    turn.cutoffs = find_cutoffs(call.heard, pauses, last_speech)
    turn.bot_starts = starts(call.heard, began, time.perf_counter())
    return turn


async def transcribe_turns(log: CallLog, voices: Voices) -> None:
    """Transcribe the bot's words of a call run with ``transcribe=False``."""
    for turn in log.turns:
        if turn.bot is not None and not turn.bot.text:
            turn.bot.text = await asyncio.to_thread(voices.transcribe, turn.bot.pcm)


async def _finish_turn(
    turn: Turn, voices: Voices | None, log: CallLog, event: Event, heard: Heard | None = None
) -> None:
    # Transcribed before the caller answers, while the bot waits for it: the caller's Whisper
    # running beside the gateway's (two whisper.cpp thread pools on 2 cores) once made one of
    # the gateway's finals take 11 s.
    if turn.bot is not None and voices is not None:
        turn.bot.text = await asyncio.to_thread(voices.transcribe, turn.bot.pcm)
    if heard is not None and turn.caller != "(listening)":
        # The bot has answered and gone quiet: the final that caused it was seen long ago.
        turn.heard = heard.claim()
    log.turns.append(turn)
    event("turn", turn)
