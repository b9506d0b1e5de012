"""Intent matchers: embedding similarity, with a keyword fallback (see the package docstring)."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

from voicetyped_runtime.intents.encoder import MiniLMEncoder, package_model_dir

__all__ = [
    "STOP_WORDS",
    "EmbeddingIntentMatcher",
    "IntentMatch",
    "IntentMatcher",
    "KeywordIntentMatcher",
    "SentenceEncoder",
    "build_intent_matcher",
    "content_words",
    "get_encoder",
]


class IntentMatch(NamedTuple):
    """The best intent for a text, or ``intent=None`` when its score is below the threshold.

    `score` is always the best score found (also when no intent is returned), so a dialog can
    log or branch on near misses; it is 0.0 for a blank text or when there are no examples.
    """

    intent: str | None
    score: float


class IntentMatcher(Protocol):
    """What the runtime needs from a matcher; `match` is synchronous and CPU-bound."""

    @property
    def kind(self) -> Literal["embedding", "keyword"]: ...

    @property
    def threshold(self) -> float: ...

    def match(self, text: str) -> IntentMatch: ...


class SentenceEncoder(Protocol):
    """Anything that maps texts to unit-length float32 row vectors (e.g. `MiniLMEncoder`)."""

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


def _examples(intents: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """``(intent, example)`` pairs, blank examples dropped, declaration order kept."""
    pairs: list[tuple[str, str]] = []
    for name, examples in intents.items():
        if isinstance(examples, str):
            raise TypeError(f"intent {name!r}: examples must be a list of phrases, not a string")
        pairs.extend((name, ex.strip()) for ex in examples if ex.strip())
    return pairs


def _check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    return float(threshold)


class EmbeddingIntentMatcher:
    """Nearest-example intent matching on sentence embeddings.

    The examples are encoded once, here. `match` encodes the text and scores each intent by the
    **maximum** cosine similarity between the text and that intent's examples (nearest
    neighbour, not the centroid: one close paraphrase is enough, and an intent with varied
    examples is not diluted by the others). The best intent wins, the earlier-declared one on a
    tie; below `threshold` the intent is None. An intent without examples never matches.
    """

    def __init__(
        self,
        encoder: SentenceEncoder,
        intents: Mapping[str, Sequence[str]],
        threshold: float,
    ) -> None:
        self._threshold = _check_threshold(threshold)
        self._encoder = encoder
        pairs = _examples(intents)
        self.intents: tuple[str, ...] = tuple(dict.fromkeys(name for name, _ in pairs))
        index = {name: i for i, name in enumerate(self.intents)}
        self._owner: NDArray[np.intp] = np.array([index[n] for n, _ in pairs], dtype=np.intp)
        self._examples: NDArray[np.float32] = encoder.encode([ex for _, ex in pairs])
        self._examples.flags.writeable = False

    @property
    def kind(self) -> Literal["embedding"]:
        return "embedding"

    @property
    def threshold(self) -> float:
        return self._threshold

    def scores(self, text: str) -> dict[str, float]:
        """Every intent's score (max cosine over its examples) for `text`."""
        if not text.strip() or not self.intents:
            return dict.fromkeys(self.intents, 0.0)
        sims = self._examples @ self._encoder.encode([text])[0]
        best = np.full(len(self.intents), -np.inf, dtype=np.float32)
        np.maximum.at(best, self._owner, sims)
        return {name: float(best[i]) for i, name in enumerate(self.intents)}

    def match(self, text: str) -> IntentMatch:
        scores = self.scores(text)
        if not scores:
            return IntentMatch(None, 0.0)
        name = max(scores, key=lambda n: scores[n])  # first of equals: declaration order
        score = scores[name]
        return IntentMatch(name if score >= self._threshold else None, score)

    def __repr__(self) -> str:
        return f"EmbeddingIntentMatcher(intents={list(self.intents)}, threshold={self.threshold})"


_STOP_WORDS_TEXT = """
a an the and or but if so of to in on at by for with from about as into than then
i me my mine we us our you your he him his she her it its they them their this that these those
there here is am are was were be been being do does did have has had will would shall should
can could may might must please just like um uh oh hi hello hey well okay ok
what which who whom how when where why some any
"""
STOP_WORDS: frozenset[str] = frozenset(_STOP_WORDS_TEXT.split())
"""Function words ignored by `KeywordIntentMatcher` (negations such as "not" are kept)."""

_NON_WORD = re.compile(r"[^\w\s]|_")


def _words(text: str) -> frozenset[str]:
    return frozenset(
        _NON_WORD.sub(" ", text.lower().replace("'", "").replace("\u2019", "")).split()
    )


def content_words(text: str) -> frozenset[str]:
    """Lower-cased words of `text` minus `STOP_WORDS`; apostrophes are dropped ("where's" ->
    "wheres"), other punctuation separates words."""
    return _words(text) - STOP_WORDS


class KeywordIntentMatcher:
    """Word-overlap intent matching, the fallback when no embedding model can be loaded.

    Each example is reduced to its content words (`content_words`). An example's score is the
    fraction of its content words present in the text; an intent's score is the best of its
    examples'. Same tie and threshold rules as `EmbeddingIntentMatcher`. It only recognises the
    examples' own words: a paraphrase ("where's my package" for "check my order status") scores
    0, so dialogs relying on it should list more examples or use transcript conditions. A score
    of 0 (no shared word) never matches, even with a threshold of 0.
    """

    def __init__(self, intents: Mapping[str, Sequence[str]], threshold: float) -> None:
        self._threshold = _check_threshold(threshold)
        self._examples: list[tuple[str, frozenset[str]]] = []
        for name, example in _examples(intents):
            words = content_words(example)
            if not words:  # an example made only of stop words ("what is it"): use them all
                words = _words(example)
            if words:
                self._examples.append((name, words))
        self.intents: tuple[str, ...] = tuple(dict.fromkeys(n for n, _ in self._examples))

    @property
    def kind(self) -> Literal["keyword"]:
        return "keyword"

    @property
    def threshold(self) -> float:
        return self._threshold

    def scores(self, text: str) -> dict[str, float]:
        """Every intent's score (best example word coverage) for `text`."""
        words = _words(text)
        best = dict.fromkeys(self.intents, 0.0)
        for name, example in self._examples:
            best[name] = max(best[name], len(example & words) / len(example))
        return best

    def match(self, text: str) -> IntentMatch:
        scores = self.scores(text)
        if not scores:
            return IntentMatch(None, 0.0)
        name = max(scores, key=lambda n: scores[n])
        score = scores[name]
        return IntentMatch(name if score >= self._threshold and score > 0 else None, score)

    def __repr__(self) -> str:
        return f"KeywordIntentMatcher(intents={list(self.intents)}, threshold={self.threshold})"


_encoders: dict[Path, MiniLMEncoder] = {}
_encoders_lock = threading.Lock()


def get_encoder(model_dir: Path | None = None) -> MiniLMEncoder:
    """The process-wide encoder for `model_dir` (default: the packaged all-MiniLM-L6-v2).

    Loaded on first use and cached per resolved directory, under a lock so that concurrent
    first calls load it once. Failures are not cached: the next call tries again.
    """
    key = (model_dir if model_dir is not None else package_model_dir()).resolve()
    with _encoders_lock:
        encoder = _encoders.get(key)
        if encoder is None:
            encoder = MiniLMEncoder.from_dir(key)
            _encoders[key] = encoder
        return encoder


def build_intent_matcher(
    intents: Mapping[str, Sequence[str]],
    threshold: float = 0.5,
    model_dir: Path | None = None,
) -> tuple[IntentMatcher, str | None]:
    """An embedding matcher over the shared encoder, or a keyword one if the model won't load.

    Returns ``(matcher, None)`` normally and ``(keyword_matcher, reason)`` after a fallback,
    with `reason` saying why, for the caller to log or surface: the change of method is never
    silent. Invalid `intents` or `threshold` raise instead of falling back. Blocking (the first
    call loads the model, about a second): call it from a worker thread in async code.
    """
    _check_threshold(threshold)
    _examples(intents)
    try:
        encoder = get_encoder(model_dir)
    except Exception as exc:  # any load failure: missing files, bad config, corrupt weights
        reason = f"embedding model unavailable: {type(exc).__name__}: {exc}; using keyword matching"
        return KeywordIntentMatcher(intents, threshold), reason
    return EmbeddingIntentMatcher(encoder, intents, threshold), None
