"""The CTranslate2 model.bin reader: the bundled Whisper model, synthetic edge cases."""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from voicetyped_speech.models.ctranslate2_reader import (
    CT2FormatError,
    CT2Model,
    read_ct2_model,
)
from voicetyped_speech.models.prepare import BundledModels

D, FFN, LAYERS, VOCAB, MELS = 384, 1536, 4, 51864, 80


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of Whisper tiny.en as CTranslate2's WhisperSpec stores it."""
    shapes: dict[str, tuple[int, ...]] = {
        "encoder/conv1/weight": (D, MELS, 3),
        "encoder/conv1/bias": (D,),
        "encoder/conv2/weight": (D, D, 3),
        "encoder/conv2/bias": (D,),
        "encoder/position_encodings/encodings": (1500, D),
        "encoder/layer_norm/gamma": (D,),
        "encoder/layer_norm/beta": (D,),
        "decoder/embeddings/weight": (VOCAB, D),
        "decoder/position_encodings/encodings": (448, D),
        "decoder/layer_norm/gamma": (D,),
        "decoder/layer_norm/beta": (D,),
    }

    def linear(prefix: str, rows: int, cols: int) -> None:
        shapes[f"{prefix}/weight"] = (rows, cols)
        shapes[f"{prefix}/bias"] = (rows,)

    def norm(prefix: str) -> None:
        shapes[f"{prefix}/gamma"] = (D,)
        shapes[f"{prefix}/beta"] = (D,)

    for side in ("encoder", "decoder"):
        for i in range(LAYERS):
            layer = f"{side}/layer_{i}"
            norm(f"{layer}/self_attention/layer_norm")
            linear(f"{layer}/self_attention/linear_0", 3 * D, D)
            linear(f"{layer}/self_attention/linear_1", D, D)
            norm(f"{layer}/ffn/layer_norm")
            linear(f"{layer}/ffn/linear_0", FFN, D)
            linear(f"{layer}/ffn/linear_1", D, FFN)
            if side == "decoder":
                norm(f"{layer}/attention/layer_norm")
                linear(f"{layer}/attention/linear_0", D, D)
                linear(f"{layer}/attention/linear_1", 2 * D, D)
                linear(f"{layer}/attention/linear_2", D, D)
    return shapes


@pytest.fixture(scope="module")
def model(bundled: BundledModels) -> CT2Model:
    return read_ct2_model(bundled.whisper_ct2_dir / "model.bin")


def test_reads_every_variable_with_its_shape(model: CT2Model) -> None:
    assert (model.binary_version, model.spec, model.revision) == (6, "WhisperSpec", 3)
    assert len(model.variables) == 148
    tensors = {name: var.shape for name, var in model.variables.items() if var.shape}
    assert tensors == _expected_shapes()
    assert {model[name].ct2_dtype for name in tensors} == {"float16"}
    scalars = {name: model[name].scalar() for name, var in model.variables.items() if not var.shape}
    assert scalars["encoder/num_heads"] == 6
    assert scalars["decoder/num_heads"] == 6
    assert scalars["decoder/pre_norm"] == 1
    assert model["encoder/num_heads"].ct2_dtype == "int16"


def test_alias_resolves_to_the_stored_variable(model: CT2Model) -> None:
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert "decoder/projection/weight" in model
    assert model["decoder/projection/weight"] is model["decoder/embeddings/weight"]
    assert len(model) == 149 and set(model) >= set(model.variables) | set(model.aliases)


def test_arrays_are_read_only_views_of_the_memory_map(model: CT2Model) -> None:
    data = model.array("decoder/embeddings/weight")
    assert not data.flags.owndata and not data.flags.writeable
    base: Any = data
    while isinstance(base, np.ndarray | memoryview):
        base = base.obj if isinstance(base, memoryview) else base.base
    assert isinstance(base, mmap.mmap)
    # The values are Whisper's: layer norm gains are around 1, embeddings small.
    assert float(np.abs(model.array("encoder/layer_norm/gamma").astype(np.float32)).mean()) > 0.2
    assert float(np.abs(data[:1000].astype(np.float32)).max()) < 2.0


def test_reads_a_model_directory(bundled: BundledModels, model: CT2Model) -> None:
    assert read_ct2_model(bundled.whisper_ct2_dir).variables.keys() == model.variables.keys()


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<H", len(raw) + 1) + raw + b"\0"


def _model_bin(
    variables: list[tuple[str, tuple[int, ...], int, bytes]],
    aliases: dict[str, str] | None = None,
    version: int = 6,
) -> bytes:
    out = (
        struct.pack("<I", version) + _string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    )
    for name, dims, dtype, data in variables:
        out += _string(name) + struct.pack(f"<B{len(dims)}I", len(dims), *dims)
        out += struct.pack("<BI", dtype, len(data)) + data
    out += struct.pack("<I", len(aliases or {}))
    for alias, target in (aliases or {}).items():
        out += _string(alias) + _string(target)
    return out


def test_bfloat16_int8_and_alias_chains(tmp_path: Path) -> None:
    values = np.array([1.5, -2.25, 3.0e-3], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    path = tmp_path / "model.bin"
    path.write_bytes(
        _model_bin(
            [
                ("a/bf16", (3,), 5, bf16),
                ("a/int8", (2, 2), 1, bytes([1, 2, 255, 128])),
                ("a/scalar", (), 2, struct.pack("<h", -7)),
            ],
            {"b": "a/bf16", "c": "b"},
        )
    )
    model = read_ct2_model(path)
    np.testing.assert_allclose(model["a/bf16"].to_float32(), values, rtol=1e-2)
    assert model["a/int8"].data.tolist() == [[1, 2], [-1, -128]]
    assert model["a/scalar"].scalar() == -7
    assert model["c"] is model["a/bf16"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_model_bin([("x", (2,), 0, b"\0" * 8)], version=2), "binary version 2"),
        (_model_bin([("x", (2,), 0, b"\0" * 4)]), "expected 8"),
        (_model_bin([("x", (1,), 9, b"\0")]), "unknown dtype"),
        (_model_bin([("x", (2,), 0, b"\0" * 8)])[:-12], "past the end"),
        (_model_bin([("x", (1,), 0, b"\0" * 4)], {"y": "missing"}), "missing"),
        (_model_bin([("x", (1,), 0, b"\0" * 4)]) + b"junk", "trailing"),
        (b"", "empty"),
    ],
)
def test_rejects_malformed_files(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(payload)
    with pytest.raises(CT2FormatError, match=message):
        read_ct2_model(path)
