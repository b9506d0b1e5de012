"""Prompt texts for cache warm-up, read from dialog documents as users write them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from voicetyped_speech.warmup import dialog_prompts, read_prompts
from voicetyped_testkit.footprint import measure
from voicetyped_testkit.hostile import GROWTH_BYTES, HOSTILE, SECONDS

if TYPE_CHECKING:
    from voicetyped_speech.models.prepare import PrepareResult

REPO = Path(__file__).resolve().parents[3]


def test_every_play_tts_of_a_dialog_with_its_voice() -> None:
    dialog = {
        "name": "d",
        "initial": "a",
        "settings": {"voice": "anna"},
        "global_transitions": [{"event": "error", "actions": [{"play_tts": {"text": "Oops."}}]}],
        "states": {
            "a": {
                "on_enter": [{"play_tts": {"text": "Hello."}}, {"set": {"x": "1"}}],
                "transitions": [
                    {
                        "event": "speech",
                        "actions": [{"play_tts": {"text": "Bye.", "voice": "ben"}}],
                        "target": "a",
                    }
                ],
            }
        },
    }
    assert sorted(dialog_prompts(dialog)) == [
        ("Bye.", "ben"),
        ("Hello.", "anna"),
        ("Oops.", "anna"),
    ]


def test_a_dialog_resource_and_a_dialog_without_voice() -> None:
    resource = {
        "apiVersion": "voicetyped.io/v1alpha1",
        "kind": "Dialog",
        "metadata": {"name": "x"},
        "spec": {"states": {"s": {"on_enter": [{"play_tts": {"text": "Hi {{ vars.name }}."}}]}}},
    }
    assert dialog_prompts(resource) == [("Hi {{ vars.name }}.", "")]
    assert dialog_prompts("not a mapping") == []
    assert dialog_prompts({"states": {"s": {"on_enter": [{"play_tts": "bad"}]}}}) == []


def test_the_example_dialogs_and_broken_files(tmp_path: Path) -> None:
    prompts = read_prompts(REPO / "examples" / "dialogs")
    texts = [t for t, _ in prompts]
    assert any(t.startswith("Hi, thanks for calling.") for t in texts)
    assert len(texts) == len(set(prompts)) >= 10
    (tmp_path / "good.yaml").write_text("states: {a: {on_enter: [{play_tts: {text: One.}}]}}\n")
    (tmp_path / "broken.yaml").write_text("states: [unclosed\n")
    (tmp_path / ".hidden.yaml").write_text("states: {a: {on_enter: [{play_tts: {text: No.}}]}}\n")
    assert read_prompts(tmp_path) == [("One.", "")]


async def test_the_service_is_ready_once_models_and_prompts_are_warm(
    prepared: PrepareResult, tmp_path: Path
) -> None:
    """Readiness waits for a decode on every recognition worker and for the dialogs' fixed
    prompts in the cache: the first call admitted meets neither a cold model nor a warm-up
    competing for the cores."""
    from prometheus_client import CollectorRegistry
    from voicetyped_speech.app import SpeechService
    from voicetyped_speech.config import SpeechSettings

    dialogs = tmp_path / "dialogs"
    dialogs.mkdir()
    (dialogs / "d.yaml").write_text(
        "initial: a\nstates:\n  a:\n    on_enter:\n"
        '      - play_tts: {text: "Hello, and welcome."}\n'
        '      - play_tts: {text: "Please say a word."}\n'
    )
    settings = SpeechSettings(
        asr={"models_dir": prepared.models_dir},
        tts={"warmup_dialogs_dir": dialogs, "warmup_poll_s": 60},
    )
    service = SpeechService(settings, CollectorRegistry())
    assert await service.ready() == "loading models"
    await service.start()
    try:
        assert service.pool is not None and service.synth is not None
        assert await service.ready() == "warming the prompt cache"
        await asyncio.wait_for(service.prompts_warmed.wait(), 120)
        assert await service.ready() is None
        voice = settings.tts.default_voice
        warm = await service.synth.warm_up(
            ["Hello, and welcome.", "Please say a word."], voice, 8000
        )
        assert warm.synthesized == 0, "both prompts were in the cache when ready"
    finally:
        await service.stop()


def test_hostile_dialog_files_are_skipped_quickly(tmp_path: Path) -> None:
    # The gateway reads the dialogs directory for warm-up and languages: a billion-laughs
    # file would otherwise be walked in full (10**9 strings).
    for kind, data in HOSTILE.items():
        (tmp_path / f"{kind}.yaml").write_bytes(data)
    (tmp_path / "good.yaml").write_text(
        "name: good\ninitial: a\nsettings: {language: de}\n"
        "states: {a: {on_enter: [{play_tts: {text: Hallo}}], terminal: true}}\n"
    )
    found = measure(
        "from pathlib import Path\n"
        "from voicetyped_speech.warmup import dialog_languages, read_prompts",
        {
            "prompts": f"read_prompts(Path({str(tmp_path)!r}))",
            "languages": f"dialog_languages(Path({str(tmp_path)!r}))",
        },
    )
    assert found["prompts"].outcome == repr([("Hallo", "")])
    assert found["languages"].outcome == repr([("good", "de")])
    for footprint in found.values():
        assert footprint.seconds < SECONDS, footprint
        assert footprint.grew_bytes < GROWTH_BYTES, footprint
