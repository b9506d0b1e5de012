"""Barge-in over the bot's prompts: which of the caller's sounds stop it.

A prompt says how it may be interrupted (``SpeakRequest.barge_in``, the dialog's ``play_tts``
``barge_in``):

- ``immediate``: the first sound stops it: the VAD's start of an utterance (backchannels such as
  "uh-huh" and noise such as a cough or a door included).
- ``deny``: it always plays to the end (the runtime ignores what the caller says over it).
- ``allow`` (the default): only the caller's *words* stop it. An utterance that starts while
  such a prompt plays is **held** here: its events (start, partial, end, final) are not passed
  on and the prompt keeps playing until the utterance is

  - **confirmed** as a barge-in, by a transcript that has a word which is not a backchannel,
    filler or noise tag (a *probe*: a decode of the held audio so far, every
    ``probe_every_ms`` of speech, one at a time, never sent on; a partial the runtime asked
    for; the final), or by the caller having spoken (``confirm_voiced_ms``) longer than
    backchannels last. Then the held events go on in order with their original times and the
    prompt stops: the runtime sees an ordinary utterance that started over its prompt, before
    the prompt's cancellation, so it fires the dialog's ``barge_in`` event.
  - **dropped**, when its final transcript is empty, noise tags only, or backchannels and
    fillers only: the runtime never hears of it.
  - **released** as an ordinary turn when the prompt ends (finished or cancelled) while the
    caller is still speaking: it is no longer over a prompt. An utterance that had already
    ended over the prompt is still judged by its final.

What counts as a word (:func:`read_transcript`): Whisper writes noise as tags, ``(coughing)``,
``[door slams]``, ``*cough*``, ``[BLANK_AUDIO]``, and hallucinates "you" or "Thanks for
watching!" on noise; tags are removed and those phrases count as noise. The rest is split into
words; backchannels ("uh-huh", "mm-hmm", "okay", "yeah", "right", "I see", "got it", "thank
you", ...), hesitations and hums ("um", "mm", "hmm", "ha ha"), lone function words ("and",
"so", "then", "I") and stray single letters do not count. "No" always counts: a caller who says
"no" over a prompt objects to something. In a state that expects yes or no (the recognition
context's ``expect``), the affirmative words the runtime reads as yes ("yes", "yeah", "yep",
"okay", "sure", "right", "correct", ...) are answers and count too; "uh-huh" and "mm-hmm"
remain backchannels (the runtime does not read them as yes). The lists are English: for another
recognition language every word counts and only noise (tags, empty) is dropped.

``confirm_voiced_ms``: measured on Piper and espeak-ng voices through a G.711 leg (webrtcvad
mode 3, 20 ms frames, its hangover included), single backchannels have 300-720 ms of voiced
frames and pairs ("uh-huh, okay", "mm-hmm, yeah", "okay, okay", "oh, I see") 700-1200 ms; the
default 1500 ms keeps those pairs below it. Real interruptions are usually confirmed sooner by
their words: the first probe is decoded at 300 ms of speech (~280 ms after the caller starts)
and answers 0.4-0.7 s later on 2 cores (a decode of Whisper tiny.en takes ~0.3 s whatever the
length), so a true barge-in stops the prompt 0.7-1 s after the caller starts instead of the
~0.2 s of ``immediate``. Why probes and not the recogniser's partials: those come
``partial_interval_ms`` (700) apart, and none runs while a speculative final is decoded at a
pause ("No, | stop"), whose text is not sent until the utterance ends.

:class:`BargeInGate` is the pure part: fed recognition events (with the prompt's mode at each
start), per-frame voice decisions and the prompt's end, it returns :class:`Action` values for
the call to carry out, in order (:class:`Probe` asks for a decode whose text comes back through
:meth:`BargeInGate.on_probe`). Bounded: an utterance holds at most four events (its start, its
newest partial, its end, its final), at most ``max_held`` utterances are tracked (more, and the
oldest undecided one is let through), one probe runs at a time. :class:`VoiceMeter` gives the
per-frame voice decisions (its own webrtcvad, ~2.5 us per 20 ms frame), :class:`AudioTail` the
audio a probe decodes (the last 6 s); the call feeds both only while an ``allow`` prompt plays
or an utterance is held.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import numpy as np
import webrtcvad
from numpy.typing import NDArray
from voicetyped.recognition import YES_WORDS

from voicetyped_speech.streaming import (
    RecognitionEvent,
    RecognitionOverloaded,
    TranscriptUpdate,
    UtteranceEnded,
    UtteranceStarted,
)
from voicetyped_speech.vad import pcm16_to_float32


class BargeInMode(StrEnum):
    ALLOW = "allow"
    """The caller's words stop the prompt; backchannels and noise do not."""
    DENY = "deny"
    """The prompt always plays to the end."""
    IMMEDIATE = "immediate"
    """The first sound from the caller stops the prompt."""


@dataclass(frozen=True)
class BargeInSettings:
    confirm_voiced_ms: int = 1500
    """Voiced audio (webrtcvad frames) after which a held utterance is a barge-in whatever its
    transcript says (see the module doc for the measurement behind the default)."""
    probe_every_ms: int = 300
    """A held utterance is decoded (a *probe*, for its words) each time it has this much more
    voiced audio than at its last probe, one probe at a time; 0: never (partials the runtime
    asked for and the final still count)."""
    max_held: int = 8
    """Utterances tracked at once (held, or waiting behind a held one)."""

    def __post_init__(self) -> None:
        if self.confirm_voiced_ms < 100:
            raise ValueError("confirm_voiced_ms must be at least 100")
        if self.probe_every_ms < 0:
            raise ValueError("probe_every_ms must not be negative")
        if self.max_held < 1:
            raise ValueError("max_held must be at least 1")


# -- what a transcript says ------------------------------------------------------------------

TranscriptKind = Literal["words", "backchannel", "noise"]

_TAGS = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|<[^>]*>|[♪♫]+")
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_HALLUCINATIONS = frozenset(
    {
        "you",
        "thanks for watching",
        "thank you for watching",
        "thanks for watching bye",
        "please subscribe",
        "subscribe",
    }
)
"""Whole transcripts Whisper writes on noise or silence (its training subtitles)."""


def _words(*lines: str) -> frozenset[str]:
    return frozenset(word for line in lines for word in line.split())


_AFFIRMATIVES = YES_WORDS | _words("yea ya yah alright absolutely")
"""Answers in a state that expects yes or no (the runtime's yes words, other spellings),
backchannels elsewhere."""
_BACKCHANNEL_WORDS = _AFFIRMATIVES | _words(
    "k kay mkay cool great fine good perfect gotcha thanks thank cheers wow really true exactly",
    "indeed totally definitely certainly nice lovely brilliant understood",
)
_BACKCHANNEL_PHRASES: tuple[tuple[str, ...], ...] = tuple(
    tuple(p.split())
    for p in (
        "that makes sense",
        "i get it",
        "i see",
        "got it",
        "all right",
        "thank you",
        "that's right",
        "that's true",
        "that's fine",
        "makes sense",
        "fair enough",
        "sounds good",
        "of course",
        "i know",
        "i understand",
        "go on",
        "you know",
        "i mean",
    )
)
_FILLERS = _words(
    "uh um uhm er erm ah oh ooh eh huh ha haha hah heh hehe aha hm hmm mm mhm ow whoa",
    "and so well then but or i the a",
)
"""Hesitations, laughter and function words that carry nothing on their own."""
_HUM = re.compile(r"^(?:[mnh]+|u+[hm]+|a+h+|o+h+|e+[hr]+m*|(?:ha)+h?|(?:he)+h?|a+ha+)$")


def read_transcript(text: str, *, english: bool = True, yes_no: bool = False) -> TranscriptKind:
    """``words`` if ``text`` has a word that makes it an interruption, else ``noise`` (nothing
    but noise tags, known noise hallucinations, or empty) or ``backchannel``; see the module
    doc. ``yes_no``: the state expects a yes/no answer."""
    tokens = _TOKEN.findall(_TAGS.sub(" ", text).replace("\u2019", "'").lower())
    if not tokens or " ".join(tokens) in _HALLUCINATIONS:
        return "noise"
    if not english:
        return "words"
    answers = _AFFIRMATIVES if yes_no else frozenset()
    rest: list[str] = []
    i = 0
    while i < len(tokens):
        for phrase in _BACKCHANNEL_PHRASES:
            n = len(phrase)
            if tuple(tokens[i : i + n]) == phrase and not answers.intersection(phrase):
                i += n
                break
        else:
            rest.append(tokens[i])
            i += 1
    for token in rest:
        if token in answers:
            return "words"
        if token in _BACKCHANNEL_WORDS or token in _FILLERS or _HUM.match(token):
            continue
        if len(token) == 1 and token.isalpha():
            continue  # a stray letter ("Oh... I... d...")
        return "words"
    return "backchannel"


# -- the gate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forward:
    """Pass ``event`` on to the runtime."""

    event: RecognitionEvent


@dataclass(frozen=True)
class StopPrompt:
    """Stop the prompts (the caller barged in)."""

    utterance_id: str
    reason: Literal["immediate", "words", "voiced"]
    voiced_ms: int


@dataclass(frozen=True)
class Ignore:
    """A held utterance was a backchannel or noise: it was dropped (nothing was forwarded)."""

    utterance_id: str
    reason: Literal["backchannel", "noise", "unrecognised"]
    """``unrecognised``: its final is empty because recognition was overloaded."""
    voiced_ms: int
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class Probe:
    """Decode the held utterance's audio from ``from_ms`` (its start; add the pre-roll) to
    ``to_ms`` and give the text to :meth:`BargeInGate.on_probe`. Its text is never forwarded."""

    utterance_id: str
    from_ms: int
    to_ms: int


Action = Forward | StopPrompt | Ignore | Probe

Frame = tuple[int, bool]
"""One VAD frame: its call time (start, ms) and whether it was voiced."""


@dataclass(eq=False)
class _Tracked:
    uid: str
    started_ms: int
    held: list[RecognitionEvent] = field(default_factory=list)
    voiced_ms: int = 0
    verdict: Literal["speech"] | Ignore | None = None
    ended: bool = False
    finished: bool = False
    overloaded: bool = False
    probing: bool = False
    probed_voiced_ms: int = 0


class BargeInGate:
    """Holds, releases and drops the utterances that start over ``allow`` prompts; see the
    module doc. Pure: it keeps no clock and calls nothing; every method returns what to do."""

    def __init__(self, settings: BargeInSettings | None = None, frame_ms: int = 20) -> None:
        self.settings = settings or BargeInSettings()
        self._frame_ms = frame_ms
        self._tracked: deque[_Tracked] = deque()
        self._recent: deque[int] = deque(maxlen=max(1, 1000 // frame_ms))
        """Start times of the voiced frames of the last second (an utterance's start is
        declared after its first frames)."""

    @property
    def holding(self) -> bool:
        """Whether an utterance is held undecided (a partial transcript would help)."""
        return any(t.verdict is None for t in self._tracked)

    @property
    def tracking(self) -> bool:
        """Whether an utterance is held or waits behind one."""
        return bool(self._tracked)

    def held_events(self) -> int:
        return sum(len(t.held) for t in self._tracked)

    def undecided(self, utterance_id: str) -> bool:
        """Whether ``utterance_id`` is held with no verdict yet (a probe of it still helps)."""
        t = self._find(utterance_id)
        return t is not None and t.verdict is None

    # -- inputs ------------------------------------------------------------------------------

    def on_event(
        self,
        event: RecognitionEvent,
        mode: BargeInMode | None,
        *,
        english: bool = True,
        yes_no: bool = False,
    ) -> list[Action]:
        """A recognition event; ``mode``: how the prompts playing now may be interrupted (None:
        none plays), read at an utterance's start."""
        if isinstance(event, UtteranceStarted):
            return self._started(event, mode)
        if isinstance(event, RecognitionOverloaded):
            t = self._find(event.utterance_id)
            if t is not None:
                t.overloaded = True
            return [Forward(event)]  # an error report, not part of the turn
        t = self._find(event.utterance_id)
        if t is None:
            return [Forward(event)]
        out: list[Action] = []
        if self._tracked[0] is t and t.verdict == "speech":
            out.append(Forward(event))
        elif isinstance(event, TranscriptUpdate) and not event.final:
            t.held = [e for e in t.held if not _is_partial(e)]  # the newest partial is enough
            t.held.append(event)
        else:
            t.held.append(event)
        stop: list[Action] = []
        if isinstance(event, UtteranceEnded):
            t.ended = True
        elif isinstance(event, TranscriptUpdate):
            t.finished = event.final
            if t.verdict is None:
                kind = read_transcript(event.text, english=english, yes_no=yes_no)
                if kind == "words":
                    t.verdict = "speech"
                    stop.append(StopPrompt(t.uid, "words", t.voiced_ms))
                elif event.final:
                    reason: Literal["backchannel", "noise", "unrecognised"] = (
                        "unrecognised" if t.overloaded and not event.text.strip() else kind
                    )
                    t.verdict = Ignore(t.uid, reason, t.voiced_ms, event.start_ms, event.end_ms)
        return out + self._flush() + stop

    def on_audio(self, frames: Iterable[Frame]) -> list[Action]:
        """VAD decisions of the caller's audio, in order."""
        current = self._tracked[-1] if self._tracked else None
        counting = current is not None and current.verdict is None and not current.ended
        position: int | None = None
        for start_ms, voiced in frames:
            position = start_ms + self._frame_ms
            if not voiced:
                continue
            self._recent.append(start_ms)
            if counting and current is not None and start_ms >= current.started_ms:
                current.voiced_ms += self._frame_ms
        if not counting or current is None or position is None:
            return []
        s = self.settings
        if current.voiced_ms >= s.confirm_voiced_ms:
            current.verdict = "speech"
            return [*self._flush(), StopPrompt(current.uid, "voiced", current.voiced_ms)]
        if (
            s.probe_every_ms
            and not current.probing
            and current.voiced_ms - current.probed_voiced_ms >= s.probe_every_ms
        ):
            current.probing = True
            current.probed_voiced_ms = current.voiced_ms
            return [Probe(current.uid, current.started_ms, position)]
        return []

    def on_probe(
        self, utterance_id: str, text: str | None, *, english: bool = True, yes_no: bool = False
    ) -> list[Action]:
        """A probe's transcript (None: it was cancelled or failed)."""
        t = self._find(utterance_id)
        if t is None:
            return []
        t.probing = False
        if t.verdict is not None or not text:
            return []
        if read_transcript(text, english=english, yes_no=yes_no) != "words":
            return []
        t.verdict = "speech"
        return [*self._flush(), StopPrompt(t.uid, "words", t.voiced_ms)]

    def on_prompt_ended(self) -> list[Action]:
        """No ``allow`` prompt plays any more: utterances still going on are ordinary turns."""
        for t in self._tracked:
            if t.verdict is None and not t.ended:
                t.verdict = "speech"
        return self._flush()

    def clear(self) -> None:
        self._tracked.clear()

    # -- internals ---------------------------------------------------------------------------

    def _started(self, event: UtteranceStarted, mode: BargeInMode | None) -> list[Action]:
        stop: list[Action] = []
        if mode == BargeInMode.IMMEDIATE:
            stop.append(StopPrompt(event.utterance_id, "immediate", 0))
        if mode != BargeInMode.ALLOW and not self._tracked:
            return [Forward(event), *stop]
        out: list[Action] = []
        if len(self._tracked) >= self.settings.max_held:
            for t in self._tracked:  # bounded: the oldest undecided one goes through
                if t.verdict is None:
                    t.verdict = "speech"
                    break
            out += self._flush()
            if len(self._tracked) >= self.settings.max_held:  # all decided, none finished
                self._tracked.popleft()
        t = _Tracked(event.utterance_id, event.at_ms, [event])
        if mode == BargeInMode.ALLOW:
            frames = sum(1 for s in self._recent if s >= event.at_ms)
            t.voiced_ms = frames * self._frame_ms
        else:
            t.verdict = "speech"  # not over an allow prompt: only waits for its turn
        self._tracked.append(t)
        return out + self._flush() + stop

    def _find(self, uid: str) -> _Tracked | None:
        for t in self._tracked:
            if t.uid == uid:
                return t
        return None

    def _flush(self) -> list[Action]:
        """Pass on what is decided, oldest utterance first (events stay in order)."""
        out: list[Action] = []
        while self._tracked:
            head = self._tracked[0]
            if head.verdict is None:
                break
            if isinstance(head.verdict, Ignore):
                out.append(head.verdict)
                self._tracked.popleft()
                continue
            out += [Forward(e) for e in head.held]
            head.held.clear()
            if not head.finished:
                break
            self._tracked.popleft()
        return out


def _is_partial(event: RecognitionEvent) -> bool:
    return isinstance(event, TranscriptUpdate) and not event.final


# -- the caller's audio ------------------------------------------------------------------------


class AudioTail:
    """The caller's latest audio (16 kHz s16le chunks with call times, at most ``max_ms`` of
    it), for probes of a held utterance."""

    def __init__(self, max_ms: int = 6000) -> None:
        self.max_ms = max_ms
        self._chunks: deque[tuple[int, bytes]] = deque()
        self._ms = 0

    def push(self, pcm: bytes, start_ms: int) -> None:
        self._chunks.append((start_ms, pcm))
        self._ms += len(pcm) // 32
        while self._ms > self.max_ms and len(self._chunks) > 1:
            self._ms -= len(self._chunks.popleft()[1]) // 32

    def slice(self, from_ms: int, to_ms: int) -> NDArray[np.float32]:
        """The audio from ``from_ms`` to ``to_ms`` (what of it is still kept), float32."""
        parts = []
        for start, pcm in self._chunks:
            end = start + len(pcm) // 32
            if end <= from_ms or start >= to_ms:
                continue
            lo = max(0, from_ms - start) * 32
            hi = (min(end, to_ms) - start) * 32
            parts.append(pcm[lo:hi])
        return pcm16_to_float32(b"".join(parts))

    def reset(self) -> None:
        self._chunks.clear()
        self._ms = 0


# -- voice decisions --------------------------------------------------------------------------


class VoiceMeter:
    """webrtcvad decisions on the caller's audio (16 kHz s16le chunks with call times), per
    frame. A chunk that does not continue the previous one starts a new frame grid."""

    def __init__(self, aggressiveness: int = 3, frame_ms: int = 20) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self.frame_ms = frame_ms
        self._frame_bytes = frame_ms * 32
        self._pending = b""
        self._pending_ms = 0  # call time of the pending bytes' start
        self._next_ms: int | None = None  # call time where the next chunk should start

    def push(self, pcm: bytes, start_ms: int) -> Sequence[Frame]:
        if self._next_ms is None or abs(start_ms - self._next_ms) > 1:
            self._pending, self._pending_ms = b"", start_ms
        self._next_ms = start_ms + len(pcm) // 32
        data = self._pending + pcm
        fb = self._frame_bytes
        whole = len(data) - len(data) % fb
        out: list[Frame] = []
        for off in range(0, whole, fb):
            voiced = self._vad.is_speech(data[off : off + fb], 16000)
            out.append((self._pending_ms + off // 32, voiced))
        self._pending = data[whole:]
        self._pending_ms += whole // 32
        return out

    def reset(self) -> None:
        self._pending, self._next_ms = b"", None
