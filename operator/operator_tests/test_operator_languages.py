"""A VoiceDeployment whose speech model cannot recognise a served Dialog's language stalls,
saying what to set, instead of deploying pods that hear English in German calls."""

from __future__ import annotations

import copy
from typing import Any

from voicetyped_operator.reconcile.voicedeployment import DependencyError, language_problems
from voicetyped_operator.render.common import ServedDialog
from voicetyped_specs.resources.voicedeployment import VoiceDeploymentSpec


def _served(name: str, language: str) -> ServedDialog:
    return ServedDialog(name, f"dialog-{name}", "hash", language)


def test_an_english_only_model_with_a_german_dialog_stalls(vd_spec: dict[str, Any]) -> None:
    dialogs = [_served("orders", "en"), _served("uk", "en-GB"), _served("bestellung", "de-DE")]
    spec = VoiceDeploymentSpec.model_validate(vd_spec)
    assert spec.speech.model_name == "tiny.en"
    (problem,) = language_problems(spec, dialogs)
    assert problem.stalled and problem.reason == "LanguageNotSupported"
    assert problem.message == (
        "Dialog bestellung has settings.language 'de-DE', but spec.speech.modelName tiny.en "
        "is English-only: set spec.speech.modelName: base (multilingual)"
    )
    assert DependencyError([problem]).reason == "LanguageNotSupported"

    multilingual = copy.deepcopy(vd_spec)
    multilingual["speech"]["modelName"] = "base"
    assert language_problems(VoiceDeploymentSpec.model_validate(multilingual), dialogs) == []
    by_path = copy.deepcopy(vd_spec)  # a model of the user's: the speech pods check it
    by_path["speech"]["model"] = "/models/ggml-medium.bin"
    assert language_problems(VoiceDeploymentSpec.model_validate(by_path), dialogs) == []
