"""What the caller is expected to say in a dialog state, for biasing the recogniser.

A pure function of the compiled dialog, the state, the call's variables and what the caller
just heard: :func:`recognition_context`. The part that depends only on the dialog
(:class:`StateExpectation`: digits, yes/no, a menu, intents' phrases) is worked out once per
dialog version (:func:`expectations`); variables (names a backend returned) and the prompt are
added per state entry.

What counts, in order of precedence:

- **digits**: the state collects digits (``collect_digits``, which also takes spoken digits),
  or one of its speech transitions tests ``spokenDigits(transcript)`` (its size bound gives
  the length);
- **yes/no**: its speech transitions look for yes or no words (``transcript.contains("yes")``)
  or intents that mean yes or no;
- **a choice**: two or more options: words its speech transitions look for, the options of a
  keypad menu its prompt reads out ("For appointments press 1"), an LLM's classify labels;
- **free speech** otherwise. Every kind carries the example phrases of the intents the state
  (then the dialog's global transitions) reacts to, and short text variables as hotwords.

The menu and yes/no readings of prompts and words are English; other languages get digits,
intents' phrases, condition words and variables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import JsonValue
from voicetyped.recognition import (
    NO_WORDS,
    YES_WORDS,
    Expect,
    RecognitionContext,
    TurnEnd,
    TurnEndMode,
)
from voicetyped_specs.dialog import compiled as c
from voicetyped_specs.dialog.model import EventType

_ANSWER_WORDS = YES_WORDS | NO_WORDS | {"not", "wrong", "incorrect"}
"""Words a condition that reads a yes or no answer tests for."""
_YES_NO_INTENTS = re.compile(
    r"^(yes|no|confirm|confirmed|deny|denied|affirm|affirmative|negative|agree|disagree|"
    r"accept|decline|reject|correct|incorrect)$"
)
_TRANSCRIPT_TEST = re.compile(
    r"transcript\b[^&|]*?\.\s*(?:contains|startsWith|endsWith|matches)\s*\(\s*[\"']([^\"']+)"
    r"|transcript\b[^&|]*?==\s*[\"']([^\"']+)"
)
_DIGITS_SIZE = re.compile(
    r"spokenDigits\s*\(\s*transcript\s*\)\s*\.\s*size\s*\(\s*\)\s*(>=|>|==)\s*(\d+)"
    r"|size\s*\(\s*spokenDigits\s*\(\s*transcript\s*\)\s*\)\s*(>=|>|==)\s*(\d+)"
)
_INTENT_REF = re.compile(r"""\bintent\s*==\s*["']([^"']+)["']|["']([^"']+)["']\s*==\s*intent\b""")
_KEY = r"(?:[0-9*#]|one|two|three|four|five|six|seven|eight|nine|zero|star|hash)"
_MENU = re.compile(
    rf"\b(?:for|to)\s+([^,.;:!?]{{2,40}}?),?\s+(?:press|dial|say)\s+{_KEY}\b"
    rf"|(?:\bpress\s+|,\s*(?:or\s+)?|\bor\s+){_KEY}\s+(?:for|to)\s+([^,.;:!?]{{2,40}})",
    re.IGNORECASE,
)
_YES_NO_QUESTION = re.compile(
    r"^(?:(?:so|and|but|ok|okay|now|then),?\s+)?(?:is|are|was|were|do|does|did|can|could|will|"
    r"would|shall|should|have|has|may)\b[^?]{0,120}\?$",
    re.IGNORECASE,
)
"""A question that starts with an auxiliary verb ("Can you make it?"), not a wh-question."""
_ARTICLE = re.compile(r"^(?:the|a|an|your|our)\s+", re.IGNORECASE)
MAX_VAR_CHARS = 40
MAX_VAR_WORDS = 5


@dataclass(frozen=True)
class StateExpectation:
    """What a state expects, from the dialog alone."""

    expect: Expect = Expect.FREE
    min_digits: int = 0
    max_digits: int = 0
    choices: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    hotwords: tuple[str, ...] = ()
    vars_used: tuple[str, ...] = ()
    """Variables its prompts and conditions read (their values become hotwords first)."""


def recognition_context(
    dialog: c.CompiledDialog,
    state: str,
    variables: Mapping[str, JsonValue],
    heard: Sequence[str] = (),
) -> RecognitionContext:
    """The context for the utterances after entering ``state``: its expectation, the short
    text values of ``variables`` (those the state reads first) and ``heard``, the prompts the
    caller was just played (the last of them kept within the contract's bound)."""
    exp = expectations(dialog)[state]
    ep = dialog.states[state].endpointing
    return RecognitionContext.fitted(
        state=state,
        expect=exp.expect,
        min_digits=exp.min_digits,
        max_digits=exp.max_digits,
        choices=exp.choices,
        phrases=exp.phrases,
        hotwords=[*_var_words(variables, exp.vars_used), *exp.hotwords],
        prompt=" ".join(t.strip() for t in heard if t.strip()),
        endpointing=TurnEnd(mode=TurnEndMode(ep.mode.value), min_ms=ep.min_ms, max_ms=ep.max_ms),
    )


def expectations(dialog: c.CompiledDialog) -> dict[str, StateExpectation]:
    """Every state's expectation (computed once per dialog content)."""
    found = _CACHE.get(dialog.content_hash)
    if found is None:
        found = _CACHE[dialog.content_hash] = _expectations(dialog)
        while len(_CACHE) > _CACHE_SIZE:
            del _CACHE[next(iter(_CACHE))]
    return found


_CACHE: dict[str, dict[str, StateExpectation]] = {}
_CACHE_SIZE = 64


def _expectations(dialog: c.CompiledDialog) -> dict[str, StateExpectation]:
    global_phrases = _intent_phrases(dialog, _intents(dialog.global_transitions))
    english = dialog.spec.settings.language.lower().startswith("en")
    return {
        name: _expect(dialog, state, global_phrases, english)
        for name, state in dialog.states.items()
    }


def _expect(
    dialog: c.CompiledDialog,
    state: c.CompiledState,
    global_phrases: list[str],
    english: bool,
) -> StateExpectation:
    speech = [t for t in state.transitions if t.event in (EventType.SPEECH, EventType.PARTIAL)]
    sources = [t.condition.source for t in speech if t.condition is not None]
    intents = _intents(speech)
    phrases = _intent_phrases(dialog, intents) + global_phrases
    words = [w for src in sources for pair in _TRANSCRIPT_TEST.findall(src) for w in pair if w]
    lowered = {w.strip().lower() for w in words}
    prompts = [a.text.source for a in state.on_enter if isinstance(a, c.PlayTts)]
    labels = [
        label for t in speech for a in t.actions if isinstance(a, c.Llm) for label in a.spec.labels
    ]
    vars_used = _vars_used(state)

    collect = next((a.spec for a in state.on_enter if isinstance(a, c.CollectDigits)), None)
    if collect is not None and getattr(collect, "spoken", True):
        return StateExpectation(
            Expect.DIGITS,
            collect.min_digits,
            collect.max_digits,
            (),
            tuple(phrases),
            (),
            vars_used,
        )
    digit_bounds = _spoken_digit_bounds(sources)
    if digit_bounds is not None:
        return StateExpectation(
            Expect.DIGITS, digit_bounds[0], digit_bounds[1], (), tuple(phrases), (), vars_used
        )

    yes_no_intents = [i for i in intents if _YES_NO_INTENTS.match(i.lower())]
    asks_yes_no = english and any(_YES_NO_QUESTION.match(_last_sentence(p)) for p in prompts)
    other_words = [w for w in words if w.strip().lower() not in _ANSWER_WORDS]
    if lowered & _ANSWER_WORDS or yes_no_intents or (asks_yes_no and not labels):
        return StateExpectation(
            Expect.YES_NO, 0, 0, tuple(other_words), tuple(phrases), tuple(labels), vars_used
        )

    menu = _menu_options(prompts) if english else []
    choices = [*menu, *other_words]
    if len(choices) >= 2:
        return StateExpectation(
            Expect.CHOICE, 0, 0, tuple(choices), tuple(phrases), tuple(labels), vars_used
        )
    return StateExpectation(
        Expect.FREE, 0, 0, (), tuple(phrases), tuple([*choices, *labels]), vars_used
    )


def _intents(transitions: Sequence[c.CompiledTransition]) -> list[str]:
    out: list[str] = []
    for t in transitions:
        if t.event not in (EventType.SPEECH, EventType.PARTIAL) or t.condition is None:
            continue
        for pair in _INTENT_REF.findall(t.condition.source):
            out.extend(name for name in pair if name and name not in out)
    return out


def _intent_phrases(dialog: c.CompiledDialog, intents: list[str]) -> list[str]:
    return [p for name in intents for p in dialog.spec.intents.get(name, [])]


def _spoken_digit_bounds(sources: list[str]) -> tuple[int, int] | None:
    """(least, most) digits the state's spokenDigits tests accept (most 0: no bound); None
    when no condition tests spoken digits."""
    found: tuple[int, int] | None = None
    for src in sources:
        if "spokenDigits" not in src:
            continue
        low, high = 1, 0
        for m in _DIGITS_SIZE.finditer(src):
            op, n = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            low = max(low, int(n) + (1 if op == ">" else 0))
            if op == "==":
                high = int(n)
        if found is None:
            found = (low, high)
        else:  # several tests: the loosest bounds
            found = (min(found[0], low), 0 if 0 in (found[1], high) else max(found[1], high))
    return found


def _literal_text(template: str) -> str:
    """A prompt's words without its ``{{ }}`` parts (they are not known before the call)."""
    return re.sub(r"\{\{.*?\}\}", " ", template).strip()


def _last_sentence(template: str) -> str:
    sentences = re.findall(r"[^.!?]+[.!?]*", _literal_text(template))
    return sentences[-1].strip() if sentences else ""


def _menu_options(prompts: list[str]) -> list[str]:
    """The options a keypad menu reads out: "For appointments press 1" -> "appointments"."""
    out: list[str] = []
    for prompt in prompts:
        for m in _MENU.finditer(_literal_text(prompt)):
            option = _ARTICLE.sub("", (m.group(1) or m.group(2)).strip())
            if option and option.lower() not in (o.lower() for o in out):
                out.append(option)
    return out


def _vars_used(state: c.CompiledState) -> tuple[str, ...]:
    found: list[str] = []
    sources = [a.text.source for a in state.on_enter if isinstance(a, c.PlayTts)]
    sources += [t.condition.source for t in state.transitions if t.condition is not None]
    for src in sources:
        for name in re.findall(r"\bvars\s*\.\s*([A-Za-z_]\w*)", src):
            if name not in found:
                found.append(name)
    return tuple(found)


def _var_words(variables: Mapping[str, JsonValue], first: Sequence[str]) -> list[str]:
    """Short text values with letters (names, places, a weekday), those in ``first`` first."""
    order = [*first, *(k for k in variables if k not in first)]
    out = []
    for name in order:
        value = variables.get(name)
        if (
            isinstance(value, str)
            and re.search(r"[^\W\d_]", value)
            and len(value) <= MAX_VAR_CHARS
            and len(value.split()) <= MAX_VAR_WORDS
        ):
            out.append(value)
    return out
