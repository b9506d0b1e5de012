"""q8_0 and q5_1 whisper.cpp files written by our converter: the block layouts are ggml's, the
values come back within a quantization step, and whisper.cpp loads the files and hears speech."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from voicetyped_speech.models.ggml_converter import (
    GGML_MAGIC,
    ConversionError,
    convert_ct2_to_ggml,
    read_ggml_header,
)
from voicetyped_speech.models.ggml_quantize import (
    BLOCK_BYTES,
    Quantization,
    dequantize,
    quantize,
    quantize_q5_1,
    quantize_q8_0,
)
from voicetyped_speech.models.prepare import BundledModels
from voicetyped_speech.models.verify import load_whisper_cpp

from .test_ggml_converter import SENTENCES, _assert_hears

if TYPE_CHECKING:
    from piper import PiperVoice

QUANTIZED: tuple[Quantization, ...] = ("q8_0", "q5_1")


def test_q8_0_block_by_hand() -> None:
    x = np.zeros(32, dtype=np.float32)
    x[:4] = [1.27, -0.635, 0.005, -0.005]  # d = 0.01: 127, -63.5 -> -64 (away from zero), 0.5 -> 1
    data = quantize_q8_0(x)
    assert len(data) == 34
    (d,) = struct.unpack_from("<e", data)
    assert d == pytest.approx(0.01, rel=1e-3)
    assert list(struct.unpack_from("<4b", data, 2)) == [127, -64, 1, -1]
    assert quantize_q8_0(np.zeros(32)) == bytes(34)  # d = 0: no division by zero


def test_q5_1_block_by_hand() -> None:
    x = np.linspace(-1.0, 2.1, 32, dtype=np.float32)  # d = 0.1, min -1: value j = j
    data = quantize_q5_1(x)
    assert len(data) == 24
    d, m, qh = struct.unpack_from("<eeI", data)
    assert d == pytest.approx(0.1, rel=1e-3) and m == pytest.approx(-1.0)
    assert qh == 0xFFFF0000  # values 16..31 have their fifth bit set
    low = data[8:]
    assert [b & 0x0F for b in low] == list(range(16))  # value j in the low nibble of byte j
    assert [b >> 4 for b in low] == list(range(16))  # value j + 16 (& 15) in its high nibble


@pytest.mark.parametrize("quantization", QUANTIZED)
def test_values_come_back_within_one_step(quantization: Quantization) -> None:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((64, 384)) * rng.uniform(0.01, 3, (64, 1))).astype(np.float32)
    data = quantize(x, quantization)
    assert len(data) == x.size // 32 * BLOCK_BYTES[quantization]
    back = dequantize(data, quantization).reshape(x.shape)
    blocks = x.reshape(-1, 32)
    if quantization == "q8_0":
        step = np.abs(blocks).max(axis=1) / 127
    else:
        step = (blocks.max(axis=1) - blocks.min(axis=1)) / 31
    # Half a step of rounding, plus float16 scale (and min) rounding across the block's range.
    bound = step * 0.5 + np.abs(blocks).max(axis=1) * 2e-3 + 1e-6
    error = np.abs(back.reshape(-1, 32) - blocks).max(axis=1)
    assert (error <= bound).all()


def test_rows_that_do_not_fill_blocks_are_refused() -> None:
    with pytest.raises(ValueError, match="blocks of 32"):
        quantize_q8_0(np.zeros(40, dtype=np.float32))


@pytest.fixture(scope="module", params=QUANTIZED)
def quantized(
    request: pytest.FixtureRequest, bundled: BundledModels, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Quantization, Path]:
    quantization: Quantization = request.param
    out = tmp_path_factory.mktemp("ggml") / f"ggml-tiny.en-{quantization}.bin"
    convert_ct2_to_ggml(bundled.whisper_ct2_dir, out, quantization=quantization)
    return quantization, out


def test_quantized_file_header_and_tensor_types(quantized: tuple[Quantization, Path]) -> None:
    quantization, path = quantized
    hp = read_ggml_header(path)
    assert hp.ftype == {"q8_0": 2007, "q5_1": 2009}[quantization]
    buf = path.read_bytes()
    assert struct.unpack_from("<i", buf)[0] == GGML_MAGIC
    # Walk the tensors: weight matrices quantized, conv kernels float16, the rest float32.
    pos = 4 + 44
    n_mel, n_bins = struct.unpack_from("<ii", buf, pos)
    pos += 8 + 4 * n_mel * n_bins
    (n_tokens,) = struct.unpack_from("<i", buf, pos)
    pos += 4
    for _ in range(n_tokens):
        pos += 4 + struct.unpack_from("<i", buf, pos)[0]
    types: dict[str, int] = {}
    while pos < len(buf):
        ndim, name_len, ttype = struct.unpack_from("<iii", buf, pos)
        dims = struct.unpack_from(f"<{ndim}i", buf, pos + 12)
        pos += 12 + 4 * ndim
        name = buf[pos : pos + name_len].decode()
        pos += name_len
        count = int(np.prod(dims))
        size = {0: 4 * count, 1: 2 * count}.get(ttype, count // 32 * BLOCK_BYTES[quantization])
        pos += size
        types[name] = ttype
    assert pos == len(buf)
    quant_type = {"q8_0": 8, "q5_1": 7}[quantization]
    assert types["decoder.token_embedding.weight"] == quant_type
    assert types["encoder.blocks.0.mlp.0.weight"] == quant_type
    assert types["decoder.blocks.3.cross_attn.key.weight"] == quant_type
    assert types["encoder.conv1.weight"] == 1
    assert types["encoder.positional_embedding"] == 0
    assert types["decoder.blocks.0.mlp.0.bias"] == 0


def test_whisper_cpp_hears_speech_with_quantized_weights(
    quantized: tuple[Quantization, Path], voice: PiperVoice
) -> None:
    _, path = quantized
    _assert_hears(load_whisper_cpp(path), voice, SENTENCES)


def test_a_model_whose_rows_cannot_be_blocked_is_refused(
    bundled: BundledModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import voicetyped_speech.models.ggml_converter as converter

    monkeypatch.setattr(converter, "BLOCK", 7)  # 384-wide rows do not divide by 7
    out = tmp_path / "q.bin"
    with pytest.raises(ConversionError, match="cannot be quantized in blocks of 7"):
        convert_ct2_to_ggml(bundled.whisper_ct2_dir, out, quantization="q8_0")
    assert not out.exists()
