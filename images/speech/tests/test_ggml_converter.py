"""CTranslate2 -> whisper.cpp conversion, checked against whisper.cpp itself and the sources."""

from __future__ import annotations

import importlib
import json
import shutil
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from numpy.typing import NDArray
from tokenizers import Tokenizer
from voicetyped_speech.models.ctranslate2_reader import read_ct2_model
from voicetyped_speech.models.ggml_converter import (
    GGML_MAGIC,
    ConversionError,
    ConversionResult,
    convert_ct2_to_ggml,
    derive_hparams,
    load_vocabulary,
    mel_filters,
    read_ggml_header,
    regular_tokens,
    token_bytes,
)
from voicetyped_speech.models.prepare import BundledModels, sha256_file
from voicetyped_speech.models.verify import (
    load_whisper_cpp,
    normalize_words,
    synthesize_16k,
    transcribe,
)

if TYPE_CHECKING:
    from piper import PiperVoice
    from pywhispercpp.model import Model

TINY_EN_HPARAMS = [51864, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1]


@dataclass
class GgmlFile:
    hparams: list[int]
    filters: NDArray[np.float32]
    tokens: list[bytes]
    tensors: dict[str, tuple[int, tuple[int, ...], NDArray[Any]]]
    """name -> (type, dims as written (innermost first), data in numpy order)"""


def parse_ggml(path: Path) -> GgmlFile:
    """An independent reader of the whisper.cpp model format."""
    buf = path.read_bytes()
    pos = 0

    def take(fmt: str) -> tuple[Any, ...]:
        nonlocal pos
        values = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return values

    assert take("<i")[0] == GGML_MAGIC
    hparams = list(take("<11i"))
    n_mel, n_bins = take("<ii")
    filters = np.frombuffer(buf, "<f4", n_mel * n_bins, pos).reshape(n_mel, n_bins)
    pos += 4 * n_mel * n_bins
    tokens = []
    for _ in range(take("<i")[0]):
        (n,) = take("<i")
        tokens.append(buf[pos : pos + n])
        pos += n
    tensors = {}
    while pos < len(buf):
        ndim, name_len, ttype = take("<iii")
        dims = take(f"<{ndim}i")
        name = buf[pos : pos + name_len].decode()
        pos += name_len
        dtype = np.dtype("<f4") if ttype == 0 else np.dtype("<f2")
        count = int(np.prod(dims))
        data = np.frombuffer(buf, dtype, count, pos).reshape(dims[::-1])
        pos += count * dtype.itemsize
        tensors[name] = (ttype, dims, data)
    return GgmlFile(hparams, filters, tokens, tensors)


def whisper_cpp_tensor_names(n_audio_layer: int, n_text_layer: int) -> set[str]:
    """The tensors whisper.cpp's loader requires (whisper_model_load in whisper.cpp)."""
    names = {
        "encoder.positional_embedding",
        "encoder.conv1.weight",
        "encoder.conv1.bias",
        "encoder.conv2.weight",
        "encoder.conv2.bias",
        "encoder.ln_post.weight",
        "encoder.ln_post.bias",
        "decoder.positional_embedding",
        "decoder.token_embedding.weight",
        "decoder.ln.weight",
        "decoder.ln.bias",
    }
    attn = ["query.weight", "query.bias", "key.weight", "value.weight", "value.bias"]
    attn += ["out.weight", "out.bias"]
    block = ["mlp_ln.weight", "mlp_ln.bias", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight"]
    block += ["mlp.2.bias", "attn_ln.weight", "attn_ln.bias"] + [f"attn.{a}" for a in attn]
    for i in range(n_audio_layer):
        names |= {f"encoder.blocks.{i}.{b}" for b in block}
    for i in range(n_text_layer):
        names |= {f"decoder.blocks.{i}.{b}" for b in block}
        names |= {f"decoder.blocks.{i}.cross_attn_ln.{p}" for p in ("weight", "bias")}
        names |= {f"decoder.blocks.{i}.cross_attn.{a}" for a in attn}
    return names


@pytest.fixture(scope="module")
def ggml(converted: ConversionResult) -> GgmlFile:
    return parse_ggml(converted.path)


# -- mel filters and vocabulary -------------------------------------------------------------------


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_equal_faster_whispers(n_mels: int) -> None:
    fe: Any = importlib.import_module("faster_whisper.feature_extractor")
    expected = fe.FeatureExtractor(feature_size=n_mels).mel_filters
    ours = mel_filters(n_mels)
    assert ours.dtype == np.float32 and ours.shape == (n_mels, 201)
    np.testing.assert_array_equal(ours, expected)


def test_gpt2_byte_alphabet() -> None:
    assert token_bytes("Ġhello") == b" hello"
    assert token_bytes("Ċ") == b"\n"
    assert token_bytes("Ã©") == "é".encode()
    every_byte = [token_bytes(chr(c)) for c in range(0x2FF) if _is_byte_char(chr(c))]
    assert sorted(every_byte) == [bytes([b]) for b in range(256)]
    with pytest.raises(ConversionError):
        token_bytes("<|endoftext|>\u4e00")


def _is_byte_char(ch: str) -> bool:
    try:
        token_bytes(ch)
    except ConversionError:
        return False
    return True


def test_vocabulary_bytes_match_the_hf_tokenizer(bundled: BundledModels) -> None:
    tokens = load_vocabulary(bundled.whisper_ct2_dir)
    assert len(tokens) == 51864 and tokens[50256] == "<|endoftext|>"
    regular = regular_tokens(tokens)
    assert len(regular) == 50256
    tokenizer = Tokenizer.from_file(str(bundled.whisper_ct2_dir / "tokenizer.json"))
    decoded = tokenizer.decode_batch([[i] for i in range(len(regular))])
    checked = 0
    for raw, text in zip(regular, decoded, strict=True):
        try:
            as_text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a partial UTF-8 sequence; the HF decoder shows U+FFFD there
        assert as_text == text
        checked += 1
    assert checked > 49000


def test_vocabulary_from_tokenizer_json_only(
    bundled: BundledModels, converted: ConversionResult, tmp_path: Path
) -> None:
    shutil.copy(bundled.whisper_ct2_dir / "tokenizer.json", tmp_path)
    (tmp_path / "model.bin").symlink_to(bundled.whisper_ct2_dir / "model.bin")
    from_tokenizer = load_vocabulary(tmp_path)
    full = load_vocabulary(bundled.whisper_ct2_dir)
    assert from_tokenizer == full[: len(from_tokenizer)]
    assert full[len(from_tokenizer)] == "<|0.00|>"  # timestamp tokens: vocabulary.txt only
    assert regular_tokens(from_tokenizer) == regular_tokens(full)
    result = convert_ct2_to_ggml(tmp_path, tmp_path / "ggml.bin")
    assert result.sha256 == converted.sha256


# -- hyper-parameters -----------------------------------------------------------------------------


def test_hparams_are_derived_from_the_model(bundled: BundledModels) -> None:
    model = read_ct2_model(bundled.whisper_ct2_dir)
    assert derive_hparams(model).as_list() == TINY_EN_HPARAMS
    # Without the num_heads scalars the head size of 64 rule gives the same answer.
    headless = replace(
        model, variables={k: v for k, v in model.variables.items() if "num_heads" not in k}
    )
    assert derive_hparams(headless).as_list() == TINY_EN_HPARAMS


# -- the ggml file --------------------------------------------------------------------------------


def test_ggml_header_filters_and_vocabulary(
    ggml: GgmlFile, converted: ConversionResult, bundled: BundledModels
) -> None:
    assert ggml.hparams == TINY_EN_HPARAMS == converted.hparams.as_list()
    assert read_ggml_header(converted.path).as_list() == TINY_EN_HPARAMS
    np.testing.assert_array_equal(ggml.filters, mel_filters(80))
    assert ggml.tokens == regular_tokens(load_vocabulary(bundled.whisper_ct2_dir))
    assert ggml.tokens[220] == b" " and ggml.tokens[50255] != b""
    assert converted.size_bytes == converted.path.stat().st_size
    assert converted.sha256 == sha256_file(converted.path)
    assert 77_000_000 < converted.size_bytes < 78_500_000


def test_ggml_tensors_are_whisper_cpps(ggml: GgmlFile) -> None:
    assert set(ggml.tensors) == whisper_cpp_tensor_names(4, 4)
    assert len(ggml.tensors) == 167
    always_f32 = {
        "encoder.conv1.bias",
        "encoder.conv2.bias",
        "encoder.positional_embedding",
        "decoder.positional_embedding",
    }
    for name, (ttype, dims, _data) in ggml.tensors.items():
        expected = 0 if len(dims) == 1 or name in always_f32 else 1
        assert ttype == expected, name
    assert ggml.tensors["encoder.conv1.weight"][1] == (3, 80, 384)
    assert ggml.tensors["encoder.conv1.bias"][1] == (1, 384)
    assert ggml.tensors["decoder.token_embedding.weight"][1] == (384, 51864)
    assert ggml.tensors["decoder.blocks.0.cross_attn.key.weight"][1] == (384, 384)


def test_ggml_tensor_data_is_the_sources(ggml: GgmlFile, bundled: BundledModels) -> None:
    src = read_ct2_model(bundled.whisper_ct2_dir)

    def out(name: str) -> NDArray[Any]:
        return ggml.tensors[name][2]

    qkv = src.array("encoder/layer_2/self_attention/linear_0/weight")
    qkv_bias = src.array("encoder/layer_2/self_attention/linear_0/bias")
    np.testing.assert_array_equal(out("encoder.blocks.2.attn.query.weight"), qkv[:384])
    np.testing.assert_array_equal(out("encoder.blocks.2.attn.key.weight"), qkv[384:768])
    np.testing.assert_array_equal(out("encoder.blocks.2.attn.value.weight"), qkv[768:])
    np.testing.assert_array_equal(out("encoder.blocks.2.attn.query.bias"), qkv_bias[:384])
    np.testing.assert_array_equal(out("encoder.blocks.2.attn.value.bias"), qkv_bias[768:])
    assert not qkv_bias[384:768].any()  # the key bias that is dropped is zero

    kv = src.array("decoder/layer_3/attention/linear_1/weight")
    kv_bias = src.array("decoder/layer_3/attention/linear_1/bias")
    np.testing.assert_array_equal(out("decoder.blocks.3.cross_attn.key.weight"), kv[:384])
    np.testing.assert_array_equal(out("decoder.blocks.3.cross_attn.value.weight"), kv[384:])
    np.testing.assert_array_equal(out("decoder.blocks.3.cross_attn.value.bias"), kv_bias[384:])
    assert not kv_bias[:384].any()

    np.testing.assert_array_equal(
        out("encoder.conv2.bias"), src.array("encoder/conv2/bias").astype(np.float32)[:, None]
    )
    np.testing.assert_array_equal(out("encoder.conv2.weight"), src.array("encoder/conv2/weight"))
    np.testing.assert_array_equal(
        out("decoder.positional_embedding"),
        src.array("decoder/position_encodings/encodings").astype(np.float32),
    )
    np.testing.assert_array_equal(
        out("decoder.blocks.1.mlp.2.weight"), src.array("decoder/layer_1/ffn/linear_1/weight")
    )
    np.testing.assert_array_equal(
        out("decoder.blocks.0.cross_attn_ln.bias").astype(np.float16),
        src.array("decoder/layer_0/attention/layer_norm/beta"),
    )
    np.testing.assert_array_equal(
        out("decoder.token_embedding.weight"), src.array("decoder/embeddings/weight")
    )


# -- whisper.cpp loads and understands the result -------------------------------------------------

# Sentences tiny.en hears right with a margin (see VERIFY_SENTENCE): a test should not depend on
# a coin flip in the last float bits of another CPU.
SENTENCES = [
    "I need to cancel my subscription.",
    "I would like to check the status of my order.",
    "Can you call me back tomorrow morning?",
]


def _assert_hears(model: Model, voice: PiperVoice, sentences: list[str]) -> None:
    for sentence in sentences:
        heard = transcribe(model, synthesize_16k(voice, sentence))
        assert normalize_words(heard) == normalize_words(sentence), heard


def test_whisper_cpp_transcribes_piper_speech(whisper_cpp: Model, voice: PiperVoice) -> None:
    _assert_hears(whisper_cpp, voice, SENTENCES)


@pytest.mark.parametrize("quantization", ["int8", "float32"])
def test_models_written_by_ctranslate2(
    quantization: str, bundled: BundledModels, voice: PiperVoice, tmp_path: Path
) -> None:
    """CTranslate2's own serializer writes the model again (int8 with ``*_scale`` variables, or
    float32; vocabulary.json); the reader reads it back and the converter makes it a working
    float16 ggml file."""
    source = read_ct2_model(bundled.whisper_ct2_dir)
    specs: Any = importlib.import_module("ctranslate2.specs")
    spec = specs.WhisperSpec(4, 6, 4, 6)
    for name, var in source.variables.items():
        scope, attr = name.rsplit("/", 1)
        setattr(specs.model_spec.index_spec(spec, scope), attr, np.array(var.data))
    spec.decoder.projection.weight = np.array(source.array("decoder/projection/weight"))
    spec.register_vocabulary(load_vocabulary(bundled.whisper_ct2_dir))
    spec.validate()
    spec.optimize(quantization=quantization)
    ct2_dir = tmp_path / quantization
    ct2_dir.mkdir()
    spec.save(str(ct2_dir))
    assert (ct2_dir / "vocabulary.json").is_file()

    written = read_ct2_model(ct2_dir)
    assert written.aliases == source.aliases
    name = "encoder/layer_0/ffn/linear_0/weight"
    weight = written[name]
    original = source.array(name).astype(np.float32)
    assert weight.ct2_dtype == quantization
    if quantization == "int8":
        scale = written.array(f"{name}_scale")
        dequantized = weight.data.astype(np.float32) / scale[:, None]
        assert np.abs(dequantized - original).max() <= np.abs(original).max() / 127
    else:
        np.testing.assert_array_equal(weight.data, original)

    result = convert_ct2_to_ggml(ct2_dir, tmp_path / "ggml.bin")
    assert result.hparams.as_list() == TINY_EN_HPARAMS  # float16 either way
    assert read_ggml_header(result.path).ftype == 1
    _assert_hears(load_whisper_cpp(result.path), voice, SENTENCES[1:2])


# -- failures leave nothing behind ----------------------------------------------------------------


def test_failed_conversion_keeps_the_previous_file(bundled: BundledModels, tmp_path: Path) -> None:
    out = tmp_path / "ggml.bin"
    out.write_bytes(b"previous")

    def fail(done: int, total: int) -> None:
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert_ct2_to_ggml(bundled.whisper_ct2_dir, out, progress=fail)
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["ggml.bin"]


def test_rejects_a_model_that_is_not_whisper(bundled: BundledModels, tmp_path: Path) -> None:
    model_dir = tmp_path / "ct2"
    model_dir.mkdir()
    raw = (bundled.whisper_ct2_dir / "model.bin").read_bytes()
    # Same layout, another spec name ("WhisperSpec" and "OtherSpecXY" have the same length).
    (model_dir / "model.bin").write_bytes(raw.replace(b"WhisperSpec\0", b"OtherSpecXY\0", 1))
    (model_dir / "config.json").write_text(json.dumps({}))
    with pytest.raises(ConversionError, match="not WhisperSpec"):
        convert_ct2_to_ggml(model_dir, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()


def test_read_ggml_header_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"\0" * 64)
    with pytest.raises(ConversionError):
        read_ggml_header(path)
