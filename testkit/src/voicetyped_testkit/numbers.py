"""Numbers through the voice and back: prompts read with say_as hints and callers reading
numbers their own way, each spoken by Piper over a G.711 call leg and transcribed by
whisper.cpp, then turned into values by the dialog's normaliser (``spokenDigits`` /
``spokenNumbers``).

- :data:`PROMPTS`: a prompt template with a hinted part and its value; heard right when the
  value comes back out of the transcript. The same template with the value as it renders
  without say_as (what the runtime sent before) is the baseline.
- :data:`CALLERS`: what a caller says and the value the dialog must get from it.

Used by ``tests/test_numbers_round_trip.py`` and ``bench/numbers_round_trip.py``. None of these
phrases is in :mod:`.phrases` (the recognition sets).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from voicetyped_specs.dialog.spoken import spoken_digits, spoken_numbers
from voicetyped_specs.dialog.template import Template

from voicetyped_testkit.speech import phone_speech, silence

if TYPE_CHECKING:
    from piper import PiperVoice
    from pywhispercpp.model import Model

Check = Literal["digits", "numbers", "characters"]


@dataclass(frozen=True)
class PromptCase:
    template: str
    value: Any
    check: Check
    expected: Any

    def spoken(self) -> str:
        """The prompt as the runtime sends it to TTS now (hints and defaults applied)."""
        return Template(self.template).render_speech({"vars": {"v": self.value}})

    def unhinted(self) -> str:
        """The prompt as it was sent before say_as: the value as it renders."""
        plain = re.sub(r"\s*\|\s*[\w:]+\s*\}\}", " }}", self.template)
        return Template(plain).render_text({"vars": {"v": self.value}})


@dataclass(frozen=True)
class CallerCase:
    said: str
    check: Check
    expected: Any


PROMPTS: tuple[PromptCase, ...] = (
    PromptCase("Order {{ vars.v | digits }} has shipped.", "48213", "digits", "48213"),
    PromptCase("Order {{ vars.v }} is on its way.", "73019", "digits", "73019"),
    PromptCase(
        "Your account number is {{ vars.v | digits }}.", "5550100199", "digits", "5550100199"
    ),
    PromptCase("Your PIN is {{ vars.v | digits }}.", "0042", "digits", "0042"),
    PromptCase(
        "Call us on {{ vars.v | telephone }}.", "+1 (555) 010-0199", "digits", "15550100199"
    ),
    PromptCase("Your total is {{ vars.v | currency }}.", 12.5, "numbers", [12.5]),
    PromptCase("The refund is {{ vars.v | currency:EUR }}.", "30", "numbers", [30]),
    PromptCase("It arrives on {{ vars.v | date }}.", "2026-12-03", "numbers", [3, 2026]),
    PromptCase("Your appointment is at {{ vars.v | time }}.", "14:30", "digits", "230"),
    PromptCase("You are {{ vars.v | ordinal }} in the queue.", 3, "numbers", [3]),
    PromptCase("You have {{ vars.v | number }} points.", 1250, "numbers", [1250]),
    PromptCase("Your code is {{ vars.v | spell }}.", "AB12", "characters", "AB12"),
)

CALLERS: tuple[CallerCase, ...] = (
    CallerCase("It's four eight two one three.", "digits", "48213"),
    CallerCase("Forty-eight thousand two hundred thirteen.", "digits", "48213"),
    CallerCase("The reference is double three seven oh two.", "digits", "33702"),
    CallerCase("My PIN is oh four two six.", "digits", "0426"),
    CallerCase("Account nine oh one, triple eight, two.", "digits", "9018882"),
    CallerCase("The code is sixty-seven eighty-nine.", "digits", "6789"),
    CallerCase("Two adults and three children.", "numbers", [2, 3]),
    CallerCase("About twelve hundred dollars.", "numbers", [1200]),
)


def heard(check: Check, expected: Any, transcript: str) -> bool:
    """Whether the value came back out of ``transcript``."""
    if check == "digits":
        return bool(spoken_digits(transcript) == expected)
    if check == "numbers":
        return bool(spoken_numbers(transcript) == expected)
    # Spelled codes ("AB12"): the single letters heard, then the digits.
    letters = "".join(re.findall(r"\b[A-Za-z]\b", transcript)).upper()
    return bool(letters + spoken_digits(transcript) == expected)


def transcribe_phone(voice: PiperVoice, whisper: Model, text: str) -> str:
    """``text`` spoken by Piper through a G.711 call leg, as whisper.cpp writes it."""
    from piper import SynthesisConfig

    pcm = phone_speech(voice, text, SynthesisConfig(noise_scale=0, noise_w_scale=0))
    audio = (np.concatenate([pcm, silence(500)]) / 32768).astype(np.float32)
    return " ".join(s.text for s in whisper.transcribe(audio)).strip()
