"""The end-of-turn decision at a pause: the text hint first, then the turn model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from voicetyped_speech.turn.hints import Hint, TextHint


@dataclass(frozen=True)
class Decision:
    end: bool
    reason: str
    probability: float | None
    basis: Literal["text", "model", "none"]
    """What decided: the transcript and the state's expectation, the turn model, or neither."""


def decide(
    probability: float | None, hint: TextHint, threshold: float, sentence_threshold: float
) -> Decision:
    """End the turn now, or wait (for more speech, or for ``max_ms`` of silence).

    What the transcript says wins: a phrase left open or digits still missing wait even when
    the sound says "finished" (synthetic and flat voices often sound finished mid-phrase), and
    an expected answer given ends the turn even when the sound is unsure. Otherwise Smart Turn's
    probability against ``threshold``, or against the lower ``sentence_threshold`` when Whisper
    punctuated the words as a finished sentence; without a probability (the model failed), wait.

    Why the lower bar: on the pause set (bench/turn_taking.py) Smart Turn called a third of the
    finished turns of espeak-ng's voices unfinished, and each then waited ``max_ms``; Whisper
    closed 61 of 64 finished utterances with a full stop but also most mid-phrase cuts, so the
    two together end finished turns at ``min_ms`` and still hold where the model is sure.
    """
    if hint.hint == Hint.CONTINUES:
        return Decision(False, hint.reason, probability, "text")
    if hint.hint == Hint.COMPLETE:
        return Decision(True, hint.reason, probability, "text")
    if probability is None:
        return Decision(False, "no turn model verdict", None, "none")
    bar = sentence_threshold if hint.hint == Hint.SENTENCE else threshold
    end = probability >= bar
    return Decision(end, f"turn model {probability:.2f}", probability, "model")
