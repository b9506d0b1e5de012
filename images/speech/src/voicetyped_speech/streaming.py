"""Streaming recognition of one call: VAD segmentation, partial transcripts, a fast final.

Audio (16 kHz PCM chunks with call times) goes through the :class:`~.vad.Segmenter`; its
utterances become events for the runtime:

    UtteranceStarted -> TranscriptUpdate(final=False)* -> UtteranceEnded -> TranscriptUpdate(final)

Why the final is fast: the segmenter only declares the end of an utterance ``hangover_ms``
(300 ms) after the caller stopped, to be sure it was not a pause. A decode of a short utterance
takes 0.2-0.3 s on 2 cores, so doing it only then would add all of it to every turn. Instead a
**speculative final** is decoded as soon as the caller pauses (the first frame webrtcvad calls
non-speech, ~100 ms after the speech): if the pause becomes the end, its result is the final
(the audio after the pause is silence, which Whisper pads with anyway), ready at about the
moment the end is declared; if the caller goes on, it is cancelled. It is used only when the
end of speech the segmenter finally estimates lies inside the speculated audio, so it never
misses words.

Partials (only when the runtime asked for them) re-decode the growing utterance at most every
``partial_interval_ms`` of audio, one at a time per call, only while the caller speaks, and as
the pool's lowest-priority work; a late partial is dropped, never sent after its final.

Every utterance gets a final, also when recognition fails: a decode past its deadline
(:mod:`~.asr.pool`) gives way to the utterance's newest partial if there was one, else the
final is empty, as it is when the pool was overloaded or Whisper heard no speech. The
:class:`FinalTiming` of each final says why it is empty (the call logs it; the runtime
re-prompts the caller).

End of turn (:class:`TurnEndSettings`, set per dialog state by the runtime's recognition
context): in ``silence`` mode an utterance ends after ``min_ms`` of silence. In ``semantic``
mode the segmenter keeps the utterance open through pauses up to ``max_ms``; at each pause of
``min_ms`` (:class:`~.vad.PauseDetected`) Smart Turn runs on the turn's audio (its own thread,
:mod:`.turn.runner`) while the speculative final decodes, and :func:`.turn.decision.decide`
weighs the two against what the state expects. If the turn is over the utterance is closed
there (its final is the speculation, already decoded); if not, speech continues the same
utterance (one decode of the whole turn, not of its pieces) and ``max_ms`` of silence ends it.

All methods run on the event loop; decoding happens in the :class:`~.asr.pool.RecognitionPool`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from voicetyped_speech.asr.base import DecodeOptions
from voicetyped_speech.asr.pool import Job, Overloaded, RecognitionPool
from voicetyped_speech.turn import hints
from voicetyped_speech.turn.decision import Decision, decide
from voicetyped_speech.turn.runner import TurnModelRunner
from voicetyped_speech.vad import PauseDetected, Segmenter, SpeechEnded, SpeechStarted, VadSettings


@dataclass(frozen=True)
class StreamingSettings:
    partial_interval_ms: int = 700
    """Audio between two partial decodes of one utterance (the partial rate bound)."""
    partial_min_ms: int = 400
    """Utterance audio needed before its first partial."""
    speculate: bool = True
    """Decode a speculative final at each pause (see the module doc)."""
    speculate_after_ms: int = 20
    """Pause (beyond webrtcvad's own ~100 ms hangover) before speculating."""

    def __post_init__(self) -> None:
        if self.partial_interval_ms < 100 or self.partial_min_ms < 0:
            raise ValueError("partial_interval_ms must be >= 100 and partial_min_ms >= 0")
        if self.speculate_after_ms < 0:
            raise ValueError("speculate_after_ms must not be negative")


@dataclass(frozen=True)
class TurnEndSettings:
    """When a pause ends the caller's turn (a dialog state's endpointing, resolved)."""

    mode: Literal["semantic", "silence"] = "silence"
    min_ms: int = 300
    max_ms: int = 2000
    threshold: float = 0.5
    """semantic: the turn model's probability at or above which a pause ends the turn."""
    sentence_threshold: float = 0.05
    """semantic: the same when Whisper punctuated the words as a finished sentence."""

    @classmethod
    def resolve(
        cls,
        hangover_ms: int,
        mode: Literal["semantic", "silence"] = "silence",
        min_ms: int | None = None,
        max_ms: int = 2000,
        threshold: float = 0.5,
        sentence_threshold: float = 0.05,
    ) -> TurnEndSettings:
        """The settings with ``min_ms`` unset taken as the VAD's ``hangover_ms`` (the silence
        that ends an utterance) and ``max_ms`` raised to at least ``min_ms``: the gateway's
        default for streams whose recognition context does not say."""
        min_ms = min_ms or hangover_ms
        return cls(mode, min_ms, max(max_ms, min_ms), threshold, sentence_threshold)

    def __post_init__(self) -> None:
        if self.min_ms < 20 or self.max_ms < self.min_ms:
            raise ValueError("min_ms must be at least 20 and max_ms at least min_ms")
        if not (0 <= self.threshold <= 1 and 0 <= self.sentence_threshold <= 1):
            raise ValueError("threshold and sentence_threshold must be within 0..1")


@dataclass(frozen=True)
class TurnDecision:
    """A semantic end-of-turn decision at a pause, for metrics and logs."""

    utterance_id: str
    decision: Decision
    pause_ms: int
    """Silence at the moment of the decision (the pause it was taken for)."""
    text: str | None
    """The speculative transcript it read (None: none was ready)."""


@dataclass(frozen=True)
class UtteranceStarted:
    utterance_id: str
    at_ms: int


@dataclass(frozen=True)
class UtteranceEnded:
    utterance_id: str
    at_ms: int
    started_at_ms: int


@dataclass(frozen=True)
class TranscriptUpdate:
    utterance_id: str
    text: str
    confidence: float
    start_ms: int
    end_ms: int
    final: bool


@dataclass(frozen=True)
class RecognitionOverloaded:
    utterance_id: str
    message: str


RecognitionEvent = UtteranceStarted | UtteranceEnded | TranscriptUpdate | RecognitionOverloaded


@dataclass(frozen=True)
class FinalTiming:
    """How one final came about, for metrics and benchmarks."""

    utterance_id: str
    audio_s: float
    seconds_after_end: float
    """From the moment the end of the utterance was declared to the final being emitted."""
    speculative: bool
    """True when the speculative decode became the final."""
    empty: str = ""
    """Why the final is empty: "" (it is not), "no_speech" (the decode heard nothing),
    "deadline" (the decode ran out of time and there was no partial), "overloaded"."""
    cut: str = ""
    """What bounded the final's text (:attr:`~.asr.base.Transcription.cut`); "deadline" with a
    text: the newest partial stands in for it."""


@dataclass
class _Speculation:
    job: Job
    last_voiced_ms: int
    audio_end_ms: int


_VAD_HANGOVER_MS = 100
"""How long webrtcvad keeps reporting speech after it ended (modes 2-3; see :mod:`.vad`)."""


class StreamingRecognizer:
    def __init__(
        self,
        session_id: str,
        pool: RecognitionPool,
        emit: Callable[[RecognitionEvent], None],
        vad: VadSettings | None = None,
        settings: StreamingSettings | None = None,
        on_final: Callable[[FinalTiming], None] | None = None,
        turn_model: TurnModelRunner | None = None,
        turn_end: TurnEndSettings | None = None,
        on_turn: Callable[[TurnDecision], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self.partials = False
        """Whether partial transcripts are wanted (the runtime's ConverseStart says)."""
        self.options = DecodeOptions()
        """How this call's audio is decoded (its language: the runtime's ConverseStart or the
        media gateway's AudioStreamStart says; default: the recogniser's)."""
        self.settings = settings or StreamingSettings()
        self._pool = pool
        self._emit = emit
        self._on_final = on_final
        self._segmenter = Segmenter(vad)
        self._utterance: str | None = None
        self._started_ms = 0
        self._spec: _Speculation | None = None
        self._partial: asyncio.Task[None] | None = None
        self._partial_job: tuple[Job, int] | None = None  # the partial decoding, its audio end
        self._last_partial_ms = 0
        self._last_partial_text = ""
        self._last_partial_confidence = 0.0
        self._finals: list[asyncio.Task[None]] = []
        self._closed = False
        self._turn_model = turn_model
        self._on_turn = on_turn
        self._turn_check: asyncio.Task[None] | None = None
        self.turn_end = turn_end or TurnEndSettings.resolve(self._segmenter.settings.hangover_ms)
        self.set_turn_end(self.turn_end)

    @property
    def semantic(self) -> bool:
        """Whether pauses are judged by the turn model (semantic mode and a model loaded)."""
        t = self.turn_end
        return t.mode == "semantic" and self._turn_model is not None and t.min_ms < t.max_ms

    def set_turn_end(self, turn_end: TurnEndSettings) -> None:
        """Apply ``turn_end`` from the next audio on. Semantic mode without a turn model (the
        gateway runs without one) ends turns after ``min_ms`` of silence."""
        self.turn_end = turn_end
        if self.semantic:
            self._segmenter.configure(turn_end.max_ms, pause_ms=turn_end.min_ms)
        else:
            self._segmenter.configure(turn_end.min_ms)

    @property
    def in_utterance(self) -> bool:
        return self._utterance is not None

    def push(self, pcm: bytes, start_ms: int) -> None:
        """Feed caller audio (16 kHz mono s16le) that starts at call time ``start_ms``."""
        if self._closed:
            return
        for event in self._segmenter.push(pcm, start_ms):
            self._on_segment(event)
        if self._utterance is not None:
            self._maybe_speculate()
            self._maybe_partial()

    async def finish(self, now_ms: int) -> None:
        """The audio stream ended at ``now_ms``: close an open utterance and wait for its final
        (and every final still being decoded)."""
        if not self._closed:
            for event in self._segmenter.flush(now_ms):
                self._on_segment(event)
        while self._finals:
            await asyncio.gather(*self._finals, return_exceptions=True)
            self._finals = [t for t in self._finals if not t.done()]

    async def aclose(self) -> None:
        """Stop at once: drop pending work, emit nothing more."""
        self._closed = True
        self._stop_turn_check()
        self._drop_speculation()
        self._stop_partial()
        tasks = list(self._finals)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._finals.clear()

    # -- internals ---------------------------------------------------------------------------

    def _on_segment(self, event: SpeechStarted | SpeechEnded | PauseDetected) -> None:
        if isinstance(event, PauseDetected):
            if self.semantic:
                self._stop_turn_check()
                self._turn_check = asyncio.get_running_loop().create_task(
                    self._check_turn(event), name=f"turn-check-{self.session_id}"
                )
            return
        self._stop_turn_check()
        if isinstance(event, SpeechStarted):
            self._utterance = event.utterance_id
            self._started_ms = event.at_ms
            self._last_partial_ms = event.at_ms
            self._last_partial_text = ""
            self._last_partial_confidence = 0.0
            self._emit(UtteranceStarted(event.utterance_id, event.at_ms))
            return
        spec, self._spec = self._spec, None
        if spec is not None and event.at_ms > spec.audio_end_ms:
            spec.job.cancel()  # the caller spoke after the pause it was taken at
            spec = None
        self._utterance = None
        self._stop_partial(keep=spec.job if spec is not None else None)
        self._emit(UtteranceEnded(event.utterance_id, event.at_ms, event.started_at_ms))
        previous = self._finals[-1] if self._finals else None
        best = (self._last_partial_text, self._last_partial_confidence)
        task = asyncio.get_running_loop().create_task(
            self._finalize(event, spec, previous, time.perf_counter(), best),
            name=f"asr-final-{self.session_id}-{event.utterance_id}",
        )
        self._finals.append(task)
        task.add_done_callback(self._final_done)

    def _final_done(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._finals.remove(task)

    async def _finalize(
        self,
        ended: SpeechEnded,
        spec: _Speculation | None,
        previous: asyncio.Task[None] | None,
        ended_at: float,
        best_partial: tuple[str, float],
    ) -> None:
        result = await spec.job.result() if spec is not None else None
        speculative = result is not None
        overloaded: str | None = None
        if result is None:
            try:
                result = await self._pool.final(self.session_id, ended.audio, self.options)
            except Overloaded as exc:
                overloaded = str(exc)
        if previous is not None:  # finals go out in utterance order
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(previous)
        if self._closed:
            return
        if overloaded is not None:
            self._emit(RecognitionOverloaded(ended.utterance_id, overloaded))
        text, confidence = (result.text, result.confidence) if result is not None else ("", 0.0)
        cut = result.cut if result is not None else ""
        if cut == "deadline":
            text, confidence = best_partial
        empty = ""
        if not text:
            empty = (
                "overloaded" if result is None else "deadline" if cut == "deadline" else "no_speech"
            )
        self._emit(
            TranscriptUpdate(
                ended.utterance_id, text, confidence, ended.started_at_ms, ended.at_ms, final=True
            )
        )
        if self._on_final is not None:
            self._on_final(
                FinalTiming(
                    ended.utterance_id,
                    len(ended.audio) / 16000,
                    time.perf_counter() - ended_at,
                    speculative,
                    empty,
                    cut,
                )
            )

    def _stop_turn_check(self) -> None:
        task, self._turn_check = self._turn_check, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _check_turn(self, pause: PauseDetected) -> None:
        """At a pause of ``min_ms``: end the turn now, or leave it to ``max_ms``."""
        seg = self._segmenter
        voiced = seg.last_voiced_ms
        current = seg.current()
        if current is None or current[0] != pause.utterance_id:
            return
        assert self._turn_model is not None
        self._maybe_speculate()  # normally running already (it starts ~100 ms into a pause)
        spec = self._spec
        probability = await self._turn_model.probability(current[1])
        text: str | None = None
        if spec is not None and spec.last_voiced_ms == voiced:
            result = await asyncio.shield(spec.job.result())
            text = result.text if result is not None else None
        if self._closed or seg.last_voiced_ms != voiced or not seg.in_utterance:
            return  # the caller spoke again (or the utterance closed) meanwhile
        context = self.options.context
        english = (self.options.language or "en").startswith("en")
        t = self.turn_end
        hint = hints.read(text or "", context, english)
        decision = decide(probability, hint, t.threshold, t.sentence_threshold)
        position = seg.position_ms or pause.at_ms
        if self._on_turn is not None:
            self._on_turn(
                TurnDecision(pause.utterance_id, decision, position - pause.speech_end_ms, text)
            )
        if decision.end:
            ended = seg.end_turn()
            if ended is not None:
                self._turn_check = None  # done: _on_segment must not cancel this task
                self._on_segment(ended)

    def _stop_partial(self, keep: Job | None = None) -> None:
        if self._partial is not None:
            self._partial.cancel()
            self._partial = None
        if self._partial_job is not None:
            if self._partial_job[0] is not keep:  # unless it became the speculation
                self._partial_job[0].cancel()
            self._partial_job = None

    def _drop_speculation(self) -> None:
        if self._spec is not None:
            self._spec.job.cancel()
            self._spec = None

    def _maybe_speculate(self) -> None:
        if not self.settings.speculate:
            return
        seg = self._segmenter
        voiced, position = seg.last_voiced_ms, seg.position_ms
        if voiced is None or position is None or position <= voiced:
            self._drop_speculation()  # speaking
            return
        if self._spec is not None:
            if self._spec.last_voiced_ms == voiced:
                return  # already decoding this pause
            self._drop_speculation()  # an older pause: the caller spoke since
        if position - voiced < self.settings.speculate_after_ms:
            return
        if self._partial_job is not None:
            # A partial taken at most webrtcvad's hangover before the pause already holds all
            # of the speech: let it finish as the speculation instead of aborting it.
            job, audio_end = self._partial_job
            if audio_end >= voiced - _VAD_HANGOVER_MS and self._pool.promote(job):
                self._spec = _Speculation(job, voiced, audio_end)
                return
        current = seg.current()
        if current is None or not self._pool.can_accept_final():
            return
        try:
            job = self._pool.submit(self.session_id, current[1], "final", self.options)
        except Overloaded:
            return
        self._spec = _Speculation(job, voiced, position)

    def _maybe_partial(self) -> None:
        if not self.partials or self._partial is not None or self._spec is not None:
            return
        position = self._segmenter.position_ms
        if position is None:
            return
        s = self.settings
        if position - self._started_ms < s.partial_min_ms:
            return
        if position - self._last_partial_ms < s.partial_interval_ms:
            return
        current = self._segmenter.current()
        if current is None:
            return
        self._last_partial_ms = position
        uid, audio = current
        job = self._pool.submit(self.session_id, audio, "partial", self.options)
        self._partial_job = (job, position)
        self._partial = asyncio.get_running_loop().create_task(
            self._run_partial(uid, job, position), name=f"asr-partial-{self.session_id}-{uid}"
        )

    async def _run_partial(self, uid: str, job: Job, position: int) -> None:
        try:
            # Shielded: stopping this task must not cancel a job promoted to the final.
            result = await asyncio.shield(job.result())
        finally:
            if self._partial is asyncio.current_task():
                self._partial = None
                self._partial_job = None
        if result is None or self._closed or self._utterance != uid:
            return
        text = result.text.strip()
        if not text or text == self._last_partial_text:
            return
        self._last_partial_text = text
        self._last_partial_confidence = result.confidence
        self._emit(
            TranscriptUpdate(uid, text, result.confidence, self._started_ms, position, final=False)
        )
