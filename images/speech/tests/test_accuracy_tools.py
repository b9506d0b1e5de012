"""The accuracy tooling itself: espeak-ng voices, the WER normalisation, the phrase sets.

The research harness (``images/speech/bench/asr_accuracy.py``) and the accuracy benchmark
(``bench/recognition.py``) rest on these; a voice variant that silently does nothing or a
normaliser that calls everything right would make their figures meaningless.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from voicetyped_speech.asr.whispercpp import WhisperCppRecognizer
from voicetyped_speech.vad import pcm16_to_float32
from voicetyped_testkit import espeak
from voicetyped_testkit.phrases import HELD_OUT, TUNING
from voicetyped_testkit.speech import Pcm, Score, telephone, word_errors, words

if TYPE_CHECKING:
    from voicetyped_speech.models.ggml_converter import ConversionResult

REPO = Path(__file__).resolve().parents[3]


def _median_f0(pcm: Pcm) -> float:
    """Median pitch (Hz) of the loud 50 ms frames, by autocorrelation (70-400 Hz)."""
    x = pcm.astype(np.float64) / 32768
    found = []
    for i in range(0, len(x) - 800, 400):
        frame = x[i : i + 800]
        if np.sqrt(np.mean(frame**2)) < 0.05:
            continue
        ac = np.correlate(frame, frame, "full")[799:]
        lo, hi = 16000 // 400, 16000 // 70
        found.append(16000 / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(found))


def test_espeak_voices_differ_and_female_variants_are_higher() -> None:
    text = "Hello, my name is Sarah and I am calling about my order."
    audio = {v.name: espeak.speak_16k(text, v) for v in espeak.VOICES}
    for name, pcm in audio.items():
        assert 1.5 < len(pcm) / 16000 < 8, name
        assert np.abs(pcm.astype(np.int32)).max() > 8000, name
    digests = {pcm.tobytes() for pcm in audio.values()}
    assert len(digests) == len(audio), "two voices produced the same audio"
    pitch = {name: _median_f0(pcm) for name, pcm in audio.items()}
    males = [p for n, p in pitch.items() if n.endswith("-male")]
    females = [p for n, p in pitch.items() if n.endswith("-female")]
    assert males and females
    assert min(females) > 1.4 * max(males), pitch


async def test_espeak_async_matches_blocking_and_reports_bad_voices() -> None:
    voice = espeak.VOICES[1]
    blocking = espeak.speak_16k("Goodbye.", voice)
    concurrent = await asyncio.gather(
        espeak.speak_16k_async("Goodbye.", voice), asyncio.sleep(0, result="loop ran")
    )
    assert np.array_equal(concurrent[0], blocking)
    with pytest.raises(espeak.EspeakError, match="zz-notavoice"):
        await espeak.speak_16k_async("Hello.", espeak.EspeakVoice("zz-notavoice"))
    with pytest.raises(espeak.EspeakError, match="not a WAV"):
        espeak.parse_wav(b"garbage that is not a wav stream")


@pytest.mark.parametrize(
    ("reference", "hypothesis", "errors"),
    [
        ("I live at twelve Mill Lane.", "I live at 12 Mill Ln", 1),
        ("The code is six one eight four two.", "The code is 618-42.", 0),
        ("The code is six one eight four two.", "The code is 61842.", 0),
        ("The code is six one eight four two.", "The code is 61942.", 1),
        ("I'd like room one.", "I would like room 1.", 0),
        ("the ninth of October, nineteen eighty", "the 9th of October 1980", 0),
        ("No, I don't know.", "No I do not know...", 0),
        ("Goodbye.", "Bye. Bye. Bye.", 3),
        ("Yes.", "", 1),
    ],
)
def test_word_errors_normalise_the_way_whisper_writes(
    reference: str, hypothesis: str, errors: int
) -> None:
    assert word_errors(reference, hypothesis)[0] == errors, (words(reference), words(hypothesis))


def test_phrase_sets_are_disjoint_and_held_out_is_used_nowhere_else() -> None:
    assert len(set(TUNING)) == len(TUNING) and len(set(HELD_OUT)) == len(HELD_OUT)
    assert not set(TUNING) & set(HELD_OUT)
    normal = {" ".join(words(p)) for p in TUNING}
    assert not normal & {" ".join(words(p)) for p in HELD_OUT}
    allowed = {"testkit/src/voicetyped_testkit/phrases.py", "bench/recognition.py"}
    tracked = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "*.py", "*.yaml", "*.yml", "*.json", "*.md"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    users = {}
    for rel in tracked:
        if rel in allowed or not (REPO / rel).is_file():
            continue
        text = (REPO / rel).read_text("utf-8", errors="replace")
        found = [p for p in HELD_OUT if p in text]
        if found:
            users[rel] = found
    assert not users, f"held-out phrases used elsewhere: {users}"


def test_espeak_over_the_phone_is_scored_by_the_wer_harness(converted: ConversionResult) -> None:
    """A few tuning phrases, two voices, through the mu-law round trip and the gateway's
    whisper.cpp recogniser: the harness reads them mostly right (the bound is loose; the
    research harness reports the real figures), and scoring the same transcripts against the
    wrong references reads them almost all wrong."""
    recognizer = WhisperCppRecognizer(converted.path)
    phrases = [TUNING[11], TUNING[10], TUNING[20]]  # order number, a person, an appointment
    heard: list[tuple[str, str]] = []
    score = Score()
    for voice in (espeak.VOICES[0], espeak.VOICES[3]):
        for text in phrases:
            pcm = np.concatenate([np.zeros(3200, np.int16), espeak.speak_16k(text, voice)])
            audio = pcm16_to_float32(telephone(pcm).tobytes())
            hypothesis = recognizer.transcribe(audio).text
            heard.append((text, hypothesis))
            score.add(text, hypothesis)
    assert score.utterances == 6 and score.words == 2 * sum(len(words(p)) for p in phrases)
    assert score.wer <= 0.5, heard
    shifted = Score()
    for (_, hypothesis), (reference, _) in zip(heard, heard[1:] + heard[:1], strict=True):
        shifted.add(reference, hypothesis)
    assert shifted.wer >= 0.7, heard
