"""Convert a Whisper model in CTranslate2 format into a whisper.cpp ggml file.

The output is what whisper.cpp's ``models/convert-pt-to-ggml.py`` writes from an OpenAI
checkpoint, so pywhispercpp (and any whisper.cpp) loads it:

    i32 magic 0x67676d6c ("ggml")
    i32 x 11 hparams: n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer,
                      n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype
    i32 n_mels, i32 n_fft/2+1, f32 mel filterbank [n_mels, n_fft/2+1]
    i32 n_tokens, n_tokens x (i32 len, bytes)     regular tokens only: whisper.cpp adds specials
    tensors until EOF: i32 ndim, i32 len(name), i32 type (0 f32, 1 f16),
                       i32 dims[ndim] (innermost first), name, data

Everything is derived from the model itself, so any Whisper size in CTranslate2 format works:

* ``n_vocab, n_text_state`` = ``decoder/embeddings/weight`` shape; ``n_audio_ctx, n_audio_state``
  = ``encoder/position_encodings/encodings``; ``n_text_ctx`` = ``decoder/position_encodings``;
  ``n_mels`` = input channels of ``encoder/conv1/weight``; layer counts = number of
  ``{encoder,decoder}/layer_N`` scopes.
* Head counts: CTranslate2's ``config.json`` does **not** hold them (it has alignment heads,
  suppress ids, language ids). ``model.bin`` does, as the int16 scalars ``encoder/num_heads`` and
  ``decoder/num_heads``. When a (very old) model lacks them the rule is head size 64, which holds
  for every released Whisper size (tiny 384/6 ... large 1280/20).
* ``ftype``: 1 (float16 matrices), or with ``quantization`` every weight matrix in ggml's
  q8_0 or q5_1 blocks (:mod:`.ggml_quantize`; header ftype 2007 / 2009, format version 2).
  float32, bfloat16 and quantized sources (int8/int16 with ``*_scale`` variables, dequantized
  first) are written as float16 (or quantized from those values). An all-float32 file
  (ftype 0) is valid for whisper.cpp's loader but aborts the process in the first encoder conv
  on the CPU backend of whisper.cpp 1.8.5 (``ggml_conv_1d`` builds an F16 im2col, which asserts an
  F16 kernel), so it is never written.
* Vocabulary: ``vocabulary.txt`` (older ctranslate2), ``vocabulary.json`` (newer) or
  ``tokenizer.json``; the regular tokens are those before ``<|endoftext|>``, decoded from GPT-2's
  byte-to-unicode alphabet to bytes: 50256 for English-only models, 50257 for multilingual ones
  (the last is the empty token of OpenAI's multilingual.tiktoken; whisper.cpp reads it as "").
* whisper.cpp adds the special tokens itself and derives their ids from ``n_vocab`` alone
  (``whisper_model_load``): multilingual when ``n_vocab >= 51865``, then ``<|endoftext|>`` moves
  from 50256 to 50257, ``<|startoftranscript|>`` follows it, one language token per language
  (``n_vocab - 51765 - 1`` of them: 99 for base) and the task and timestamp tokens shift by the
  number of languages beyond 98. :func:`check_special_tokens` checks the model's vocabulary puts
  them there too, so a model whose tokens whisper.cpp would misread is refused, not converted.
* Mel filters are computed here (librosa's slaney-style filterbank, sr 16000, n_fft 400), not
  read from the model: CTranslate2 does not store them.

Tensor names follow the OpenAI checkpoint. CTranslate2 fuses self-attention q/k/v into one
``linear_0`` ([3d, d]) and cross-attention k/v into ``linear_1`` ([2d, d]); they are split by rows.
Whisper has no key bias: CTranslate2 stores zeros there and they are dropped (a key bias would not
change attention anyway: it adds the same q.b to every score of a query row). Conv biases become
[n, 1]. Positional embeddings, conv biases and all 1-D tensors are float32 (whisper.cpp expects
that); the rest float16.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from voicetyped_speech.models.ctranslate2_reader import (
    CT2Model,
    CT2Variable,
    bfloat16_to_float32,
    read_ct2_model,
)
from voicetyped_speech.models.ggml_quantize import (
    BLOCK,
    BLOCK_BYTES,
    TENSOR_TYPE,
    Quantization,
    header_ftype,
    quantize,
)

GGML_MAGIC = 0x67676D6C
MULTILINGUAL_MIN_VOCAB = 51865
GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1
SAMPLE_RATE = 16000
N_FFT = 400
DEFAULT_HEAD_DIM = 64
END_OF_TEXT = "<|endoftext|>"

ProgressCallback = Callable[[int, int], None]
"""Called with (bytes written, total bytes) as tensors are written."""


class ConversionError(ValueError):
    """The input is not a Whisper model in CTranslate2 format this converter can handle."""


@dataclass(frozen=True)
class WhisperHParams:
    n_vocab: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int
    n_mels: int
    ftype: int

    def as_list(self) -> list[int]:
        return list(asdict(self).values())


@dataclass(frozen=True)
class ConversionResult:
    path: Path
    hparams: WhisperHParams
    n_tensors: int
    n_tokens: int
    size_bytes: int
    sha256: str


# -- mel filterbank (librosa.filters.mel, htk=False, norm="slaney") ------------------------------

_F_SP = 200.0 / 3  # Hz per mel in the linear region
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(freqs: NDArray[np.float64]) -> NDArray[np.float64]:
    mels = freqs / _F_SP
    log_region = freqs >= _MIN_LOG_HZ
    mels[log_region] = _MIN_LOG_MEL + np.log(freqs[log_region] / _MIN_LOG_HZ) / _LOGSTEP
    return mels


def mel_to_hz(mels: NDArray[np.float64]) -> NDArray[np.float64]:
    freqs = _F_SP * mels
    log_region = mels >= _MIN_LOG_MEL
    freqs[log_region] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels[log_region] - _MIN_LOG_MEL))
    return freqs


def mel_filters(
    n_mels: int, *, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT
) -> NDArray[np.float32]:
    """Slaney-style mel filterbank [n_mels, n_fft // 2 + 1] from 0 Hz to Nyquist (as Whisper)."""
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    edges = hz_to_mel(np.array([0.0, sample_rate / 2.0]))
    mel_freqs = mel_to_hz(np.linspace(edges[0], edges[1], n_mels + 2))
    widths = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_freqs[2 : n_mels + 2] - mel_freqs[:n_mels]))[:, None]
    return weights.astype(np.float32)


# -- vocabulary ----------------------------------------------------------------------------------


@cache
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: printable bytes map to themselves, the other 68
    bytes to code points 256, 257, ... in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def token_bytes(token: str) -> bytes:
    """Decode one GPT-2 byte-level BPE token (``Ġhello``) to its bytes (``b" hello"``)."""
    table = _unicode_to_byte()
    try:
        return bytes(table[ch] for ch in token)
    except KeyError as exc:
        raise ConversionError(f"token {token!r} is not in GPT-2's byte alphabet") from exc


def load_vocabulary(model_dir: Path) -> list[str]:
    """All tokens (regular and special) in id order, from whichever file ctranslate2 wrote.

    ``tokenizer.json`` lacks the 1501 timestamp tokens (``<|0.00|>``...) that ctranslate2's
    vocabulary files list at the end; only the regular tokens go into the ggml file anyway."""
    txt = model_dir / "vocabulary.txt"
    if txt.is_file():
        # One token per line; split on "\n" only (a token may be empty, none contains "\n").
        lines = txt.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return lines
    js = model_dir / "vocabulary.json"
    if js.is_file():
        tokens = json.loads(js.read_text(encoding="utf-8"))
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ConversionError(f"{js}: expected a JSON list of strings")
        return tokens
    tok = model_dir / "tokenizer.json"
    if tok.is_file():
        data = json.loads(tok.read_text(encoding="utf-8"))
        ids: dict[int, str] = {int(i): t for t, i in data["model"]["vocab"].items()}
        for added in data.get("added_tokens", []):
            ids[int(added["id"])] = added["content"]
        if sorted(ids) != list(range(len(ids))):
            raise ConversionError(f"{tok}: token ids are not contiguous")
        return [ids[i] for i in range(len(ids))]
    raise ConversionError(
        f"{model_dir}: no vocabulary.txt, vocabulary.json or tokenizer.json next to model.bin"
    )


def regular_tokens(tokens: list[str]) -> list[bytes]:
    """The tokens before ``<|endoftext|>``, as bytes: what whisper.cpp reads from the file."""
    try:
        n_regular = tokens.index(END_OF_TEXT)
    except ValueError:
        raise ConversionError(f"vocabulary has no {END_OF_TEXT} token") from None
    return [token_bytes(t) for t in tokens[:n_regular]]


def is_multilingual(hp: WhisperHParams) -> bool:
    """whisper.cpp's rule (``whisper_vocab::is_multilingual``)."""
    return hp.n_vocab >= MULTILINGUAL_MIN_VOCAB


def n_languages(hp: WhisperHParams) -> int:
    """Language tokens whisper.cpp assumes (``whisper_vocab::num_languages``)."""
    return hp.n_vocab - 51765 - (1 if is_multilingual(hp) else 0)


def special_token_ids(hp: WhisperHParams) -> dict[str, int]:
    """Where whisper.cpp expects each special token (``whisper_model_load``)."""
    multi = is_multilingual(hp)
    shift = n_languages(hp) - 98 if multi else 0
    eot = 50256 + multi
    ids = {"<|endoftext|>": eot, "<|startoftranscript|>": eot + 1}
    if multi:
        ids["<|en|>"] = eot + 2  # language tokens follow, English first
    for offset, token in enumerate(
        ("<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>")
    ):
        ids[token] = 50357 + shift + offset
    ids["<|notimestamps|>"] = 50362 + shift
    ids["<|0.00|>"] = 50363 + shift
    return ids


def check_special_tokens(tokens: list[str], hp: WhisperHParams) -> None:
    """Raise ConversionError unless the special tokens the vocabulary lists are where whisper.cpp
    will look for them (a vocabulary without timestamps, as tokenizer.json, is checked as far
    as it goes)."""
    wrong = [
        f"{token} at {tokens.index(token) if token in tokens else 'none'} (whisper.cpp: {i})"
        for token, i in special_token_ids(hp).items()
        if (i < len(tokens) or token in tokens) and (i >= len(tokens) or tokens[i] != token)
    ]
    if wrong:
        kind = "multilingual" if is_multilingual(hp) else "English-only"
        raise ConversionError(
            f"special tokens of this {kind} vocabulary ({hp.n_vocab}) are not where whisper.cpp "
            f"expects them: {', '.join(wrong)}"
        )


# -- hyper-parameters ----------------------------------------------------------------------------


def _layer_count(model: CT2Model, scope: str) -> int:
    pattern = re.compile(rf"^{scope}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in model.variables if (m := pattern.match(name))}
    if not indices or indices != set(range(len(indices))):
        raise ConversionError(f"{model.path}: {scope} layers are {sorted(indices)}")
    return len(indices)


def _heads(model: CT2Model, scope: str, n_state: int) -> int:
    name = f"{scope}/num_heads"
    heads = int(model[name].scalar()) if name in model else n_state // DEFAULT_HEAD_DIM
    if heads <= 0 or n_state % heads:
        raise ConversionError(f"{model.path}: {heads} heads do not divide state size {n_state}")
    return heads


def _shape(model: CT2Model, name: str, ndim: int) -> tuple[int, ...]:
    if name not in model:
        raise ConversionError(f"{model.path}: missing {name} (is this a Whisper model?)")
    shape = model[name].shape
    if len(shape) != ndim:
        raise ConversionError(f"{model.path}: {name} has shape {shape}, expected {ndim} dims")
    return shape


def derive_hparams(model: CT2Model) -> WhisperHParams:
    if model.spec != "WhisperSpec":
        raise ConversionError(f"{model.path}: spec {model.spec!r} is not WhisperSpec")
    n_vocab, n_text_state = _shape(model, "decoder/embeddings/weight", 2)
    n_audio_ctx, n_audio_state = _shape(model, "encoder/position_encodings/encodings", 2)
    n_text_ctx, pe_state = _shape(model, "decoder/position_encodings/encodings", 2)
    conv_out, n_mels, _kernel = _shape(model, "encoder/conv1/weight", 3)
    if pe_state != n_text_state or conv_out != n_audio_state:
        raise ConversionError(f"{model.path}: inconsistent state sizes")
    return WhisperHParams(
        n_vocab=n_vocab,
        n_audio_ctx=n_audio_ctx,
        n_audio_state=n_audio_state,
        n_audio_head=_heads(model, "encoder", n_audio_state),
        n_audio_layer=_layer_count(model, "encoder"),
        n_text_ctx=n_text_ctx,
        n_text_state=n_text_state,
        n_text_head=_heads(model, "decoder", n_text_state),
        n_text_layer=_layer_count(model, "decoder"),
        n_mels=n_mels,
        ftype=GGML_TYPE_F16,
    )


# -- tensors -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """A (slice of a) CTranslate2 variable, dequantized only when written."""

    var: CT2Variable
    data: NDArray[Any]
    scale: NDArray[Any] | None = None

    def rows(self, start: int, stop: int) -> _Source:
        scale = self.scale
        if scale is not None and scale.ndim == 1:
            scale = scale[start:stop]
        return _Source(self.var, self.data[start:stop], scale)

    def values(self) -> NDArray[Any]:
        """float16/float32 values (views of the map when no conversion is needed)."""
        if self.var.ct2_dtype in ("float16", "float32"):
            return self.data
        if self.var.ct2_dtype == "bfloat16":
            return bfloat16_to_float32(self.data)
        values = self.data.astype(np.float32)
        if self.scale is not None:
            scale = self.scale.astype(np.float32)
            if scale.ndim == 1:  # int8: one scale per output row (conv weights flattened)
                scale = scale.reshape((-1,) + (1,) * (values.ndim - 1))
            values /= scale
        return values


@dataclass(frozen=True)
class _Tensor:
    name: str
    source: _Source
    shape: tuple[int, ...]
    ggml_type: int
    quantization: Quantization = "f16"
    """A weight matrix's block format (f16: none; :mod:`.ggml_quantize`)."""

    @property
    def nbytes(self) -> int:
        count = int(np.prod(self.shape, dtype=np.int64))
        if self.quantization != "f16":
            return count // BLOCK * BLOCK_BYTES[self.quantization]
        itemsize = 4 if self.ggml_type == GGML_TYPE_F32 else 2
        return count * itemsize

    def encoded(self) -> bytes | memoryview:
        """The tensor's bytes as the file holds them."""
        if self.quantization != "f16":
            return quantize(self.source.values().reshape(self.shape), self.quantization)
        return self.array().data.cast("B")

    def header_size(self) -> int:
        return 12 + 4 * len(self.shape) + len(self.name.encode())

    def array(self) -> NDArray[Any]:
        dtype = np.float32 if self.ggml_type == GGML_TYPE_F32 else np.float16
        values = self.source.values().reshape(self.shape)
        return np.ascontiguousarray(values.astype(np.dtype(dtype).newbyteorder("<"), copy=False))


_F32_ALWAYS = {
    "encoder.conv1.bias",
    "encoder.conv2.bias",
    "encoder.positional_embedding",
    "decoder.positional_embedding",
}


def _plan(model: CT2Model, hp: WhisperHParams, quantization: Quantization = "f16") -> list[_Tensor]:
    def src(name: str) -> _Source:
        if name not in model:
            raise ConversionError(f"{model.path}: missing variable {name}")
        var = model[name]
        scale_name = f"{name}_scale"
        scale = model[scale_name].data if scale_name in model else None
        if var.ct2_dtype in ("int8", "int16", "int32") and scale is None:
            raise ConversionError(f"{model.path}: {name} is {var.ct2_dtype} without a scale")
        return _Source(var, var.data, scale)

    plan: list[_Tensor] = []

    def add(ggml_name: str, source: _Source, shape: tuple[int, ...] | None = None) -> None:
        shape = tuple(int(d) for d in (shape if shape is not None else source.data.shape))
        f32 = len(shape) < 2 or ggml_name in _F32_ALWAYS
        if quantization != "f16" and not f32 and len(shape) == 2:
            # whisper.cpp creates every weight matrix in the file's type (conv kernels, 3-D,
            # stay float16): each must be quantized, so its rows must fill whole blocks.
            if shape[-1] % BLOCK:
                raise ConversionError(
                    f"{ggml_name}: rows of {shape[-1]} cannot be quantized in blocks of {BLOCK}"
                )
            tensor_type = TENSOR_TYPE[quantization]
            plan.append(_Tensor(ggml_name, source, shape, tensor_type, quantization))
            return
        plan.append(_Tensor(ggml_name, source, shape, GGML_TYPE_F32 if f32 else GGML_TYPE_F16))

    def linear(ct2: str, ggml: str) -> None:
        add(f"{ggml}.weight", src(f"{ct2}/weight"))
        add(f"{ggml}.bias", src(f"{ct2}/bias"))

    def norm(ct2: str, ggml: str) -> None:
        add(f"{ggml}.weight", src(f"{ct2}/gamma"))
        add(f"{ggml}.bias", src(f"{ct2}/beta"))

    def split(ct2: str, ggml_names: list[str | None], d: int, key_index: int) -> None:
        """Split a fused projection by rows; ``None`` names are skipped."""
        weight, bias = src(f"{ct2}/weight"), src(f"{ct2}/bias")
        if weight.data.shape[0] != d * len(ggml_names):
            raise ConversionError(f"{ct2}/weight has shape {weight.data.shape}")
        for i, ggml in enumerate(ggml_names):
            if ggml is None:
                continue
            add(f"{ggml}.weight", weight.rows(i * d, (i + 1) * d))
            if i != key_index:  # Whisper's key projection has no bias
                add(f"{ggml}.bias", bias.rows(i * d, (i + 1) * d))

    def block(ct2: str, ggml: str, d: int, *, cross: bool) -> None:
        norm(f"{ct2}/self_attention/layer_norm", f"{ggml}.attn_ln")
        split(
            f"{ct2}/self_attention/linear_0",
            [f"{ggml}.attn.query", f"{ggml}.attn.key", f"{ggml}.attn.value"],
            d,
            key_index=1,
        )
        linear(f"{ct2}/self_attention/linear_1", f"{ggml}.attn.out")
        if cross:
            norm(f"{ct2}/attention/layer_norm", f"{ggml}.cross_attn_ln")
            linear(f"{ct2}/attention/linear_0", f"{ggml}.cross_attn.query")
            split(
                f"{ct2}/attention/linear_1",
                [f"{ggml}.cross_attn.key", f"{ggml}.cross_attn.value"],
                d,
                key_index=0,
            )
            linear(f"{ct2}/attention/linear_2", f"{ggml}.cross_attn.out")
        norm(f"{ct2}/ffn/layer_norm", f"{ggml}.mlp_ln")
        linear(f"{ct2}/ffn/linear_0", f"{ggml}.mlp.0")
        linear(f"{ct2}/ffn/linear_1", f"{ggml}.mlp.2")

    add("encoder.positional_embedding", src("encoder/position_encodings/encodings"))
    for i in (1, 2):
        add(f"encoder.conv{i}.weight", src(f"encoder/conv{i}/weight"))
        bias = src(f"encoder/conv{i}/bias")
        add(f"encoder.conv{i}.bias", bias, (bias.data.shape[0], 1))
    for i in range(hp.n_audio_layer):
        block(f"encoder/layer_{i}", f"encoder.blocks.{i}", hp.n_audio_state, cross=False)
    norm("encoder/layer_norm", "encoder.ln_post")

    add("decoder.positional_embedding", src("decoder/position_encodings/encodings"))
    add("decoder.token_embedding.weight", src("decoder/embeddings/weight"))
    for i in range(hp.n_text_layer):
        block(f"decoder/layer_{i}", f"decoder.blocks.{i}", hp.n_text_state, cross=True)
    norm("decoder/layer_norm", "decoder.ln")

    # whisper.cpp computes logits with the token embedding (Whisper ties them).
    proj = "decoder/projection/weight"
    embeddings = "decoder/embeddings/weight"
    if (
        proj in model
        and model.resolve(proj) != embeddings
        and not np.array_equal(model.array(proj), model.array(embeddings))
    ):
        raise ConversionError(f"{model.path}: output projection is not tied to embeddings")
    return plan


# -- writing -------------------------------------------------------------------------------------


class _HashingWriter:
    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self.fh.write(data)
        self.sha.update(data)
        self.size += memoryview(data).nbytes


def _write_ggml(
    out: _HashingWriter,
    hp: WhisperHParams,
    filters: NDArray[np.float32],
    vocab: list[bytes],
    tensors: list[_Tensor],
    progress: ProgressCallback | None,
) -> None:
    out.write(struct.pack("<i", GGML_MAGIC))
    out.write(struct.pack("<11i", *hp.as_list()))
    out.write(struct.pack("<ii", *filters.shape))
    out.write(filters.astype("<f4").tobytes())
    out.write(struct.pack("<i", len(vocab)))
    out.write(b"".join(struct.pack("<i", len(tok)) + tok for tok in vocab))
    total = sum(t.nbytes + t.header_size() for t in tensors)
    done = 0
    if progress is not None:
        progress(0, total)
    for tensor in tensors:
        name = tensor.name.encode()
        dims = tensor.shape[::-1]  # ggml lists the innermost dimension first
        out.write(struct.pack(f"<iii{len(dims)}i", len(dims), len(name), tensor.ggml_type, *dims))
        out.write(name)
        out.write(tensor.encoded())
        done += tensor.nbytes + tensor.header_size()
        if progress is not None:
            progress(done, total)


def convert_ct2_to_ggml(
    model_dir: str | Path,
    output: str | Path,
    *,
    progress: ProgressCallback | None = None,
    quantization: Quantization = "f16",
) -> ConversionResult:
    """Convert ``model_dir`` (model.bin + vocabulary) to the ggml file ``output``, its weight
    matrices in float16 or quantized (``q8_0``, ``q5_1``: :mod:`.ggml_quantize`).

    The file appears atomically: it is written to a temporary file in the same directory,
    flushed to disk and renamed, so readers never see a partial model.
    """
    model_dir, output = Path(model_dir), Path(output)
    model = read_ct2_model(model_dir / "model.bin")
    hp = replace(derive_hparams(model), ftype=header_ftype(quantization))
    tokens = load_vocabulary(model_dir)
    check_special_tokens(tokens, hp)
    vocab = regular_tokens(tokens)
    if len(vocab) >= hp.n_vocab:
        raise ConversionError(
            f"{model_dir}: {len(vocab)} regular tokens do not fit a vocabulary of {hp.n_vocab}"
        )
    tensors = _plan(model, hp, quantization)
    filters = mel_filters(hp.n_mels)

    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            writer = _HashingWriter(fh)
            _write_ggml(writer, hp, filters, vocab, tensors, progress)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.chmod(0o644)
        tmp.replace(output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(output.parent)
    return ConversionResult(
        path=output,
        hparams=hp,
        n_tensors=len(tensors),
        n_tokens=len(vocab),
        size_bytes=writer.size,
        sha256=writer.sha.hexdigest(),
    )


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_ggml_header(path: str | Path) -> WhisperHParams:
    """The hyper-parameters of a whisper.cpp ggml file (raises ConversionError if not one)."""
    with Path(path).open("rb") as fh:
        head = fh.read(48)
    if len(head) < 48 or struct.unpack_from("<i", head)[0] != GGML_MAGIC:
        raise ConversionError(f"{path}: not a whisper.cpp ggml file")
    return WhisperHParams(*struct.unpack_from("<11i", head, 4))
