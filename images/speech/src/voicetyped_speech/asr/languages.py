"""What a Whisper model can recognise, and a requested language checked against it.

whisper.cpp numbers Whisper's languages (en 0, zh 1, de 2, es 3, ...; ``whisper_lang_str``). A
multilingual model knows the first ``n_vocab - 51766`` of them (99 for base: all but Cantonese,
which came with large-v3); an English-only model knows English alone, and given another language
whisper.cpp would quietly decode English anyway. So languages are checked before they reach a
decoder: the configured default when the service starts, a dialog's when its documents are read,
a call's when the runtime names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from voicetyped_speech.models.ggml_converter import WhisperHParams, is_multilingual, n_languages


class LanguageError(ValueError):
    """The model cannot recognise this language."""


@cache
def whisper_languages() -> tuple[str, ...]:
    """Whisper's language codes in whisper.cpp's order (its own table, not a copy)."""
    import _pywhispercpp

    lib: Any = _pywhispercpp
    return tuple(str(lib.whisper_lang_str(i)) for i in range(int(lib.whisper_lang_max_id()) + 1))


def whisper_code(language: str) -> str:
    """A Whisper language code from a code or BCP 47 tag: ``de-DE`` -> ``de``, ``EN`` -> ``en``."""
    return language.strip().replace("_", "-").split("-", 1)[0].lower()


@dataclass(frozen=True)
class ModelLanguages:
    model: str
    """The model as messages name it (``tiny.en``, a path)."""
    languages: tuple[str, ...]

    @property
    def multilingual(self) -> bool:
        return len(self.languages) > 1

    def check(self, language: str, where: str) -> str:
        """The Whisper code of ``language`` (``where`` says who asked for it, for the message);
        :class:`LanguageError` when the model cannot recognise it."""
        code = whisper_code(language)
        if code in self.languages:
            return code
        if not self.multilingual:
            raise LanguageError(
                f"{where} is {language!r}, but the recognition model {self.model} is "
                "English-only: configure a multilingual model (asr.model_name: base) for "
                "other languages"
            )
        raise LanguageError(
            f"{where} is {language!r}, which the recognition model {self.model} does not know "
            f"(it knows {', '.join(self.languages)})"
        )


def model_languages(hp: WhisperHParams, model: str) -> ModelLanguages:
    if not is_multilingual(hp):
        return ModelLanguages(model, ("en",))
    return ModelLanguages(model, whisper_languages()[: n_languages(hp)])
