"""The local stack prepares the models directory the speech gateway will actually read."""

from __future__ import annotations

from voicetyped_dev.stack import models_prepare_argv


def test_the_gateways_own_models_dir_is_the_one_prepared() -> None:
    argv = models_prepare_argv(
        {"VOICETYPED_MODELS_DIR": "/elsewhere", "VOICETYPED_ASR__MODELS_DIR": "/srv/models"}
    )
    assert argv[-4:] == ["models", "prepare", "--models-dir", "/srv/models"]


def test_without_a_setting_the_command_picks_its_default() -> None:
    # `voicetyped models prepare` then reads $VOICETYPED_MODELS_DIR / the cache from its env.
    assert models_prepare_argv({"VOICETYPED_MODELS_DIR": "/elsewhere"})[-2:] == [
        "models",
        "prepare",
    ]
