"""Prompt texts for cache warm-up, read from dialog documents as users write them."""

from __future__ import annotations

from pathlib import Path

from voicetyped_speech.warmup import dialog_prompts, read_prompts

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
