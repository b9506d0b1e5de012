"""End of turn: the text hints, the decision, the Smart Turn model file and its features, and
semantic endpointing in the streaming recogniser (real whisper.cpp, real Smart Turn, Piper
speech through G.711 pushed in real time)."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from voicetyped.recognition import Expect, RecognitionContext
from voicetyped_speech.asr.pool import RecognitionPool
from voicetyped_speech.asr.whispercpp import WhisperCppRecognizer
from voicetyped_speech.streaming import StreamingRecognizer, TurnDecision, TurnEndSettings
from voicetyped_speech.turn import hints
from voicetyped_speech.turn.decision import decide
from voicetyped_speech.turn.hints import Hint, TextHint
from voicetyped_speech.turn.model import SmartTurn, TurnModelError, model_path, verify
from voicetyped_speech.turn.runner import TurnModelRunner
from voicetyped_testkit.speech import phone_speech, silence

from .test_streaming import QUIET, Recorder, push, trimmed

if TYPE_CHECKING:
    from piper import PiperVoice
    from voicetyped_speech.models.prepare import PrepareResult


def ctx(expect: Expect = Expect.FREE, **kw: object) -> RecognitionContext:
    return RecognitionContext.fitted(expect=expect, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "context", "hint"),
    [
        ("My order number is", None, Hint.CONTINUES),
        ("I live at twelve Oak Street and", None, Hint.CONTINUES),
        ("Um, I think it was on the", None, Hint.CONTINUES),
        ("It was, um", None, Hint.CONTINUES),
        ("My card number is 4152...", None, Hint.CONTINUES),
        ("Four eight,", None, Hint.CONTINUES),
        ("Can you check my order?", None, Hint.SENTENCE),
        ("That's all.", None, Hint.SENTENCE),
        ("that's all", None, Hint.UNKNOWN),
        ("", ctx(Expect.YES_NO), Hint.UNKNOWN),
        ("four eight two", ctx(Expect.DIGITS, min_digits=5, max_digits=5), Hint.CONTINUES),
        ("48 21", ctx(Expect.DIGITS, min_digits=5, max_digits=5), Hint.CONTINUES),
        ("four eight two one three", ctx(Expect.DIGITS, min_digits=5), Hint.COMPLETE),
        ("double five one two three", ctx(Expect.DIGITS, min_digits=5), Hint.COMPLETE),
        ("It's 48213.", ctx(Expect.DIGITS, min_digits=5), Hint.COMPLETE),
        ("four eight", ctx(Expect.DIGITS), Hint.UNKNOWN),
        ("I don't know it.", ctx(Expect.DIGITS, min_digits=5), Hint.SENTENCE),
        ("Yes.", ctx(Expect.YES_NO), Hint.COMPLETE),
        ("Nope, not that one.", ctx(Expect.YES_NO), Hint.COMPLETE),
        ("Yes, my order number is", ctx(Expect.YES_NO), Hint.CONTINUES),
        ("Support, thanks.", ctx(Expect.CHOICE, choices=["billing", "support"]), Hint.COMPLETE),
        ("Bill me", ctx(Expect.CHOICE, choices=["billing"]), Hint.UNKNOWN),
        ("Bill me.", ctx(Expect.CHOICE, choices=["billing"]), Hint.SENTENCE),
    ],
)
def test_text_hints(text: str, context: RecognitionContext | None, hint: Hint) -> None:
    assert hints.read(text, context).hint == hint


def test_word_lists_apply_to_english_only() -> None:
    assert hints.read("Meine Bestellnummer ist und", None, english=False).hint == Hint.UNKNOWN
    digits = ctx(Expect.DIGITS, min_digits=4)
    assert hints.read("4 8", digits, english=False).hint == Hint.CONTINUES


def test_decision_text_first_then_model() -> None:
    open_phrase = TextHint(Hint.CONTINUES, "ends on 'is'")
    assert not decide(0.99, open_phrase, 0.5, 0.05).end
    assert decide(0.01, TextHint(Hint.COMPLETE, "a yes/no answer"), 0.5, 0.05).end
    assert decide(0.7, hints.UNKNOWN, 0.5, 0.05).end
    assert not decide(0.3, hints.UNKNOWN, 0.5, 0.05).end
    sentence = TextHint(Hint.SENTENCE, "a sentence")
    assert decide(0.3, sentence, 0.5, 0.05).end
    assert not decide(0.02, sentence, 0.5, 0.05).end
    none = decide(None, hints.UNKNOWN, 0.5, 0.05)
    assert (none.end, none.basis) == (False, "none")


def test_the_model_file_is_verified(tmp_path: Path) -> None:
    verify(model_path())
    altered = tmp_path / "smart-turn.onnx"
    shutil.copyfile(model_path(), altered)
    with altered.open("r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(TurnModelError, match="sha256"):
        verify(altered)
    with pytest.raises(TurnModelError, match="not found"):
        verify(tmp_path / "missing.onnx")


@pytest.fixture(scope="module")
def smart_turn() -> SmartTurn:
    return SmartTurn()


def test_features_match_pipecats_extractor(smart_turn: SmartTurn) -> None:
    # The features Pipecat feeds the model (its numpy copy of the Transformers extractor),
    # read from the installed wheel by path: pipecat itself is never imported.
    source = model_path().parent.parent / "_whisper_features.py"
    spec = importlib.util.spec_from_file_location("pipecat_whisper_features", source)
    assert spec is not None and spec.loader is not None
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    rng = np.random.default_rng(7)
    audio = (rng.standard_normal(3 * 16000) * 0.2).astype(np.float32)
    padded = np.pad(audio, (8 * 16000 - len(audio), 0))
    want = reference.compute_whisper_log_mel_features(padded, do_normalize=True)
    got = smart_turn.features(audio)[0]
    assert got.shape == want.shape == (80, 800)
    assert np.abs(got - want).max() < 1e-4


def test_the_model_hears_a_finished_and_an_unfinished_phrase(
    smart_turn: SmartTurn, voice: PiperVoice
) -> None:
    def turn(text: str) -> np.ndarray:
        pcm = np.concatenate(
            [silence(300), trimmed(phone_speech(voice, text, QUIET)), silence(200)]
        )
        return pcm.astype(np.float32) / 32768

    done = smart_turn.probability(turn("Can you check my order?"))
    hesitating = smart_turn.probability(turn("Um, I think it was"))
    assert 0 <= hesitating < 0.3 < 0.7 < done <= 1, (done, hesitating)


@pytest.fixture(scope="module")
def pool(prepared: PrepareResult) -> Iterator[RecognitionPool]:
    pool = RecognitionPool(lambda: WhisperCppRecognizer(prepared.ggml_path), workers=1)
    yield pool
    pool.close()


def paused(voice: PiperVoice, first: str, pause_ms: int, second: str) -> np.ndarray:
    return np.concatenate(
        [
            silence(400),
            trimmed(phone_speech(voice, first, QUIET)),
            silence(pause_ms),
            trimmed(phone_speech(voice, second, QUIET)),
            silence(2500),
        ]
    )


async def test_semantic_endpointing_waits_through_a_mid_phrase_pause(
    pool: RecognitionPool, smart_turn: SmartTurn, voice: PiperVoice
) -> None:
    pcm = paused(voice, "My order number is", 900, "four eight two one three.")
    runner = TurnModelRunner(smart_turn)
    decisions: list[TurnDecision] = []
    rec = Recorder()
    semantic = TurnEndSettings(mode="semantic", min_ms=200, max_ms=2000)
    stream = StreamingRecognizer(
        "call-s", pool, rec, turn_model=runner, turn_end=semantic, on_turn=decisions.append
    )
    end = await push(stream, pcm, realtime=True)
    await stream.finish(end)
    runner.close()
    finals = rec.finals()
    assert len(finals) == 1, rec.events
    assert "4" in finals[0].text or "four" in finals[0].text.lower(), finals[0].text
    first, *rest = decisions
    assert not first.decision.end and first.decision.basis == "text", decisions
    # The end of the turn was decided at the last pause (no decision: max_ms closed it).
    assert rest and rest[-1].decision.end, decisions


async def test_silence_endpointing_cuts_at_min_ms(
    pool: RecognitionPool, smart_turn: SmartTurn, voice: PiperVoice
) -> None:
    pcm = paused(voice, "My order number is", 900, "four eight two one three.")
    runner = TurnModelRunner(smart_turn)
    rec = Recorder()
    stream = StreamingRecognizer(
        "call-t",
        pool,
        rec,
        turn_model=runner,
        turn_end=TurnEndSettings(mode="silence", min_ms=300, max_ms=2000),
    )
    end = await push(stream, pcm, realtime=True)
    await stream.finish(end)
    runner.close()
    assert len(rec.finals()) == 2, rec.events


def test_unset_turn_end_bounds_come_from_the_vad_and_max_is_never_below_min() -> None:
    assert TurnEndSettings.resolve(300) == TurnEndSettings(mode="silence", min_ms=300)
    semantic = TurnEndSettings.resolve(300, mode="semantic", min_ms=2500, max_ms=2000)
    assert (semantic.mode, semantic.min_ms, semantic.max_ms) == ("semantic", 2500, 2500)
    assert TurnEndSettings.resolve(450, min_ms=0).min_ms == 450  # proto3's unset
    with pytest.raises(ValueError, match="min_ms"):
        TurnEndSettings.resolve(10)
