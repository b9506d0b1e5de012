"""ggml's q8_0 and q5_1 block quantization, for whisper.cpp model files we write ourselves.

whisper.cpp ships a ``quantize`` program, but not in pywhispercpp's wheel, and we convert our
models from CTranslate2 in Python (:mod:`.ggml_converter`), so the two formats are written here
with numpy, exactly as ggml's reference quantizers (``quantize_row_q8_0_ref``,
``quantize_row_q5_1_ref``) lay them out; whisper.cpp reads them with its own kernels.

Both cut a row into blocks of 32 values:

q8_0 (34 bytes a block)
    ``d`` (float16) = max |x| / 127, then 32 int8 ``round(x / d)`` (halves away from zero).
q5_1 (24 bytes a block)
    ``d`` (float16) = (max - min) / 31, ``m`` (float16) = min, the 32 fifth bits as one
    little-endian uint32 ``qh`` (bit j for value j), then 16 bytes of 4-bit values: value j in
    the low nibble of byte j, value j + 16 in its high nibble; each value is
    ``floor((x - min) / d + 0.5)``.

The arithmetic is float32 like ggml's, so a block comes out as ggml's own quantizer makes it.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

Quantization = Literal["f16", "q8_0", "q5_1"]
QUANTIZATIONS: Final[tuple[Quantization, ...]] = ("f16", "q8_0", "q5_1")
BLOCK: Final = 32
"""Values per block (QK8_0 = QK5_1 = 32): a quantized row's length must be a multiple."""

GGML_TYPE_Q5_1: Final = 7
GGML_TYPE_Q8_0: Final = 8
GGML_QNT_VERSION: Final = 2
GGML_QNT_VERSION_FACTOR: Final = 1000
TENSOR_TYPE: Final[dict[Quantization, int]] = {"q8_0": GGML_TYPE_Q8_0, "q5_1": GGML_TYPE_Q5_1}
FILE_TYPE: Final[dict[Quantization, int]] = {"f16": 1, "q8_0": 7, "q5_1": 9}
"""ggml_ftype of a file whose weight matrices are of this kind (GGML_FTYPE_MOSTLY_*)."""

_Q8_0: Final = np.dtype([("d", "<f2"), ("qs", "i1", (BLOCK,))])
_Q5_1: Final = np.dtype([("d", "<f2"), ("m", "<f2"), ("qh", "<u4"), ("qs", "u1", (BLOCK // 2,))])
BLOCK_BYTES: Final[dict[Quantization, int]] = {"q8_0": _Q8_0.itemsize, "q5_1": _Q5_1.itemsize}


def header_ftype(quantization: Quantization) -> int:
    """The ``ftype`` a whisper.cpp file header holds (quantized files carry the format version,
    which whisper.cpp reads back as ``ftype // 1000``)."""
    ftype = FILE_TYPE[quantization]
    return ftype if quantization == "f16" else GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR + ftype


def _blocks(values: NDArray[Any]) -> NDArray[np.float32]:
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    if flat.size % BLOCK:
        raise ValueError(f"{flat.size} values do not fill blocks of {BLOCK}")
    return flat.reshape(-1, BLOCK)


def _inverse(d: NDArray[np.float32]) -> NDArray[np.float32]:
    safe = np.where(d != 0, d, np.float32(1))
    return np.where(d != 0, np.float32(1) / safe, np.float32(0)).astype(np.float32)


def quantize_q8_0(values: NDArray[Any]) -> bytes:
    x = _blocks(values)
    d = (np.abs(x).max(axis=1) / np.float32(127)).astype(np.float32)
    scaled = x * _inverse(d)[:, None]
    q = np.sign(scaled) * np.floor(np.abs(scaled) + np.float32(0.5))  # C roundf
    out = np.empty(len(x), dtype=_Q8_0)
    out["d"] = d.astype(np.float16)
    out["qs"] = q.astype(np.int8)
    return out.tobytes()


def quantize_q5_1(values: NDArray[Any]) -> bytes:
    x = _blocks(values)
    low, high = x.min(axis=1), x.max(axis=1)
    d = ((high - low) / np.float32(31)).astype(np.float32)
    scaled = (x - low[:, None]) * _inverse(d)[:, None]
    q = np.minimum(np.floor(scaled + np.float32(0.5)), 31).astype(np.uint8)
    half = BLOCK // 2
    out = np.empty(len(x), dtype=_Q5_1)
    out["d"] = d.astype(np.float16)
    out["m"] = low.astype(np.float16)
    bits = ((q >> 4) & 1).astype(np.uint32) << np.arange(BLOCK, dtype=np.uint32)
    out["qh"] = np.bitwise_or.reduce(bits, axis=1)
    out["qs"] = (q[:, :half] & 0x0F) | ((q[:, half:] & 0x0F) << 4)
    return out.tobytes()


def quantize(values: NDArray[Any], quantization: Quantization) -> bytes:
    if quantization == "q8_0":
        return quantize_q8_0(values)
    if quantization == "q5_1":
        return quantize_q5_1(values)
    raise ValueError(f"not a block quantization: {quantization!r}")


def dequantize(data: bytes, quantization: Quantization) -> NDArray[np.float32]:
    """The values a quantized buffer stands for (as ggml's ``dequantize_row_*``)."""
    if quantization == "q8_0":
        blocks = np.frombuffer(data, dtype=_Q8_0)
        values = blocks["qs"].astype(np.float32) * blocks["d"].astype(np.float32)[:, None]
        return values.reshape(-1)
    if quantization == "q5_1":
        blocks = np.frombuffer(data, dtype=_Q5_1)
        half = BLOCK // 2
        q = np.empty((len(blocks), BLOCK), dtype=np.uint8)
        q[:, :half] = blocks["qs"] & 0x0F
        q[:, half:] = blocks["qs"] >> 4
        fifth = (blocks["qh"][:, None] >> np.arange(BLOCK, dtype=np.uint32)) & 1
        q |= (fifth << 4).astype(np.uint8)
        d = blocks["d"].astype(np.float32)[:, None]
        m = blocks["m"].astype(np.float32)[:, None]
        return (q.astype(np.float32) * d + m).reshape(-1)
    raise ValueError(f"not a block quantization: {quantization!r}")


__all__ = [
    "BLOCK",
    "BLOCK_BYTES",
    "QUANTIZATIONS",
    "TENSOR_TYPE",
    "Quantization",
    "dequantize",
    "header_ftype",
    "quantize",
    "quantize_q5_1",
    "quantize_q8_0",
]
