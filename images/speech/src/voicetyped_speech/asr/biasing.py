"""Biasing Whisper towards what the dialog expects, and catching its prompt failure modes.

Whisper reads its prompt as the text that came before the audio, so the prompt is written as
a transcript would be: the question the caller was just asked, then answers of the kind
expected (:func:`bias_for`):

- digits: digit strings in figures ("4 8 2 1 3."), of the expected length, so a number read
  digit by digit comes back as figures the runtime's spoken-number normaliser reads;
- yes/no: "Yes. No." and the other words the state looks for;
- a choice: the options, one sentence each;
- free speech: the intents' example phrases;
- names and other words from the call's variables as hotwords (faster-whisper has a separate
  ``hotwords`` argument; whisper.cpp gets them in the prompt).

The prompt is bounded (:data:`MAX_PROMPT_CHARS`, well inside Whisper's 223 prompt tokens);
what does not fit is left out, least important first.

Known failure: on silence, noise or a very short clip Whisper may write its prompt back
("What is your order number?", "Yes. No. Appointments.", the digit examples) instead of what
was said. :func:`echoed` recognises such output (a run of the question, the options run
together, an example number) and :func:`transcribe_with_bias` then decodes the audio again
without the prompt and uses that: biasing may cost a second decode, never a made-up turn.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache

from voicetyped.recognition import Expect, RecognitionContext

from voicetyped_speech.asr.base import Transcription

MAX_PROMPT_CHARS = 480
"""About 120 tokens: room for the question and a dozen options, far from Whisper's limit."""
MAX_QUESTION_CHARS = 160
QUESTION_RUN = 4
"""Words in a row from the question that make a hypothesis an echo ("what is your order")."""
EXAMPLE_RUN = 3
"""Digits in a row that begin an example number and make a hypothesis an echo."""
"""Words in a row from the question that make a hypothesis an echo ("what is your order")."""

_DIGIT_EXAMPLES = ("3 0 7 5 9 1 6 2 8 4 0 3", "6 1 9 4 0 2 7 3 8 5 6 0", "3 1 6 0 2 9 8 4 7 5 1 3")
"""Examples of a number read digit by digit, cut to the expected length (every digit
appears, none in order)."""
_YES_NO = ("Yes.", "No.")


@dataclass(frozen=True)
class Bias:
    """What a context asks of the decoder, and what its output is checked against."""

    prompt: str
    """Whisper's initial prompt, hotwords included (whisper.cpp)."""
    core: str
    """The prompt without the hotwords (faster-whisper, which takes them apart)."""
    hotwords: str
    """faster-whisper's ``hotwords`` (empty: none)."""
    question: str
    answers: tuple[str, ...]
    """What the caller may say (options, phrases, hotwords) as written in the prompt."""
    examples: tuple[str, ...]
    """Example numbers in the prompt (their digits)."""
    digits: tuple[int, int] = (0, 0)
    """Digits expected: (least, most), 0 unknown; (0, 0) when digits are not expected."""


@lru_cache(maxsize=256)
def bias_for(context: RecognitionContext | None) -> Bias | None:
    """The prompt for a context, or None when it asks for nothing (plain recognition)."""
    if context is None or context.empty:
        return None
    question = _question(context.prompt)
    examples: list[str] = []
    answers: list[str] = []
    if context.expect == Expect.DIGITS:
        examples = list(_digit_examples(context.min_digits, context.max_digits))
    elif context.expect == Expect.YES_NO:
        answers = [*_YES_NO, *(_sentence(c) for c in context.choices)]
    elif context.expect == Expect.CHOICE:
        answers = [_sentence(c) for c in context.choices]
    answers += [_sentence(p) for p in context.phrases]
    hotwords = [h for h in context.hotwords if h]
    # Most important first: the question, the examples, then answers, then hotwords, each
    # added while it fits.
    parts = [question] if question else []
    used = len(question)
    for piece in [*(f"{e}." for e in examples), *answers, *(_sentence(h) for h in hotwords)]:
        if used + len(piece) + 1 > MAX_PROMPT_CHARS:
            break
        parts.append(piece)
        used += len(piece) + 1
    kept_answers = tuple(a for a in answers if a in parts)
    kept_hotwords = [h for h in hotwords if _sentence(h) in parts]
    hot = {_sentence(h) for h in kept_hotwords} - set(kept_answers)
    return Bias(
        prompt=" ".join(parts),
        core=" ".join(p for p in parts if p not in hot),
        hotwords=", ".join(kept_hotwords),
        question=question,
        answers=kept_answers + tuple(_sentence(h) for h in hotwords if _sentence(h) in parts),
        examples=tuple(re.sub(r"\D", "", e) for e in examples),
        digits=(
            (context.min_digits, context.max_digits) if context.expect == Expect.DIGITS else (0, 0)
        ),
    )


def _question(prompt: str) -> str:
    """The end of what the caller was asked (the question is last)."""
    if len(prompt) <= MAX_QUESTION_CHARS:
        return prompt
    sentences = re.findall(r"[^.!?]+[.!?]*", prompt)
    out = ""
    for sentence in reversed(sentences):
        if len(out) + len(sentence) > MAX_QUESTION_CHARS:
            break
        out = sentence.strip() + (" " + out if out else "")
    return out or prompt[-MAX_QUESTION_CHARS:].split(" ", 1)[-1]


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text[-1:] in ".?!" else text + "."


def _digit_examples(min_digits: int, max_digits: int) -> list[str]:
    """Two example numbers: the shortest and the longest length expected (4 and 6 digits when
    nothing is known), digits spaced as read."""
    low = min_digits or 4
    high = max(max_digits or max(low, 6), low)
    lengths = [low] if low == high else [low, high]
    return [" ".join(_DIGIT_EXAMPLES[i].split()[:n]) for i, n in enumerate(lengths)]


# ---- the prompt echoed back -----------------------------------------------------------------


def _words(text: str) -> list[str]:
    """Lower-case words; figures split into single digits ("48,213" and "4 8 2 1 3" match)."""
    out: list[str] = []
    for token in re.findall(r"[^\W_]+(?:'[^\W_]+)*", text.lower()):
        out.extend(token if token.isdigit() else [token])
    return out


def echoed(bias: Bias, text: str) -> bool:
    """Whether ``text`` copies the prompt rather than answering it: it repeats
    :data:`QUESTION_RUN` words of the question in a row, runs two or more of the prompt's
    answers together, is one of its example numbers or goes on into one."""
    hyp = _words(text)
    if not hyp:
        return False
    digits = "".join(w for w in hyp if w.isdigit())
    if digits and digits in bias.examples:
        return True
    spaced = " " + " ".join(hyp) + " "
    if any(f" {' '.join(e[:EXAMPLE_RUN])} " in spaced for e in bias.examples):
        return True  # the prompt's next example, continued after the caller's number
    segments = [_words(bias.question), *(_words(a) for a in bias.answers)]
    flat = [(w, i) for i, seg in enumerate(segments) for w in seg]
    for start, length in _common_runs(hyp, [w for w, _ in flat]):
        run = flat[start : start + length]
        spanned = {i for _, i in run}
        if len(spanned) > 1 and length >= 2:
            return True  # the options (or the question and an option) run together
        if spanned == {0} and bias.question and length >= QUESTION_RUN:
            return True
    return False


def _common_runs(hyp: list[str], ref: list[str]) -> list[tuple[int, int]]:
    """Runs of ``ref`` that also occur in ``hyp``, as (start in ref, length): for every place
    a shared run ends, the longest one ending there (so every maximal run is among them)."""
    runs: list[tuple[int, int]] = []
    prev = [0] * (len(ref) + 1)
    for h in hyp:
        row = [0] * (len(ref) + 1)
        for j, r in enumerate(ref, 1):
            if h == r:
                row[j] = prev[j - 1] + 1
                runs.append((j - row[j], row[j]))
        prev = row
    return runs


def digits_fit(bias: Bias, text: str) -> bool:
    """Whether a number read where digits are expected is one the dialog can take: a length it
    accepts (a dropped digit makes a wrong number) and not one block said over and over ("4 8 2
    1 3 4 8 2 1 3": the decoder looping on the prompt's pattern)."""
    low, high = bias.digits
    if not (low or high):
        return True
    digits = "".join(w for w in _words(text) if w.isdigit())
    n = len(digits)
    if n == 0:
        return True
    for size in range(EXAMPLE_RUN, n // 2 + 1):
        if n % size == 0 and digits == digits[:size] * (n // size):
            return False
    return (not low or n >= low) and (not high or n <= high)


Decode = Callable[[Bias | None], Transcription]


def transcribe_with_bias(context: RecognitionContext | None, decode: Decode) -> Transcription:
    """Decode with the context's bias. When the result echoes the prompt, decode again without
    it and use that; when it reads a number of a length the state does not accept, decode
    again without it and use that only if its length fits. The time of both is counted."""
    bias = bias_for(context)
    if bias is None:
        return decode(None)
    biased = decode(bias)
    echo = echoed(bias, biased.text)
    if not echo and digits_fit(bias, biased.text):
        return biased
    plain = decode(None)
    if not echo and not digits_fit(bias, plain.text):
        return replace(biased, compute_s=biased.compute_s + plain.compute_s)
    return replace(plain, compute_s=biased.compute_s + plain.compute_s, echoed=echo)
