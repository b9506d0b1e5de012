"""Read a CTranslate2 ``model.bin`` into named numpy arrays without copying it.

Binary layout (little-endian), as written by ``ctranslate2.specs.ModelSpec._serialize``
(binary versions 4 to 6; ctranslate2 4.x writes 6)::

    u32 binary_version
    str spec_name              # e.g. "WhisperSpec"
    u32 spec_revision
    u32 variable_count
    variable_count x:
        str  name              # e.g. "encoder/layer_0/self_attention/linear_0/weight"
        u8   ndim
        u32  dims[ndim]
        u8   dtype             # 0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16
        u32  byte_count
        u8   data[byte_count]
    u32 alias_count
    alias_count x: str alias, str target

where ``str`` is a u16 length (including the terminating NUL), the bytes, and the NUL.

The file is memory-mapped and every variable is an ``np.frombuffer`` view into the map, so reading
a 75 MB model costs a few page-table entries; pages are read only when an array is touched. The
arrays keep the map alive. bfloat16 has no numpy dtype: those variables are ``uint16`` views of the
raw bits, and :meth:`CT2Variable.to_float32` widens them.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

SUPPORTED_BINARY_VERSIONS = range(4, 7)

# The DataType enum of include/ctranslate2/types.h, in order.
CT2_DTYPES: dict[int, tuple[str, np.dtype[Any]]] = {
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    5: ("bfloat16", np.dtype("<u2")),  # raw bits; see CT2Variable.to_float32
}


def bfloat16_to_float32(bits: NDArray[Any]) -> NDArray[np.float32]:
    """bfloat16 stored as uint16 bits -> float32 (bfloat16 is the top half of a float32)."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 model.bin this reader understands."""


@dataclass(frozen=True)
class CT2Variable:
    name: str
    ct2_dtype: str
    """CTranslate2's name for the stored type: float32, int8, int16, int32, float16, bfloat16."""
    data: NDArray[Any]
    """A read-only view into the memory map (bfloat16: ``uint16`` bits)."""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.data.shape)

    def to_float32(self) -> NDArray[np.float32]:
        """The values as float32 (integers are *not* dequantized here; see the scale variables)."""
        if self.ct2_dtype == "bfloat16":
            return bfloat16_to_float32(self.data)
        return self.data.astype(np.float32)

    def scalar(self) -> int | float:
        """The value of a 0-dimensional variable (e.g. ``encoder/num_heads``)."""
        if self.data.ndim != 0:
            raise ValueError(f"{self.name} is not a scalar (shape {self.shape})")
        if self.ct2_dtype in ("float32", "float16", "bfloat16"):
            return float(self.to_float32())
        return int(self.data)


@dataclass(frozen=True, eq=False)
class CT2Model(Mapping[str, CT2Variable]):
    """A parsed model.bin: a read-only mapping of variable name (aliases included) to variable."""

    path: Path
    binary_version: int
    spec: str
    revision: int
    variables: dict[str, CT2Variable]
    """The stored variables, in file order."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Alias name -> stored variable name (e.g. ``decoder/projection/weight`` ->
    ``decoder/embeddings/weight`` when the output projection is tied to the embeddings)."""

    def resolve(self, name: str) -> str:
        """The stored variable a name refers to (follows alias chains)."""
        seen: set[str] = set()
        while name in self.aliases:
            if name in seen:
                raise CT2FormatError(f"alias cycle at {name!r}")
            seen.add(name)
            name = self.aliases[name]
        return name

    def __getitem__(self, name: str) -> CT2Variable:
        target = self.resolve(name)
        try:
            return self.variables[target]
        except KeyError:
            if target != name:
                raise CT2FormatError(f"alias {name!r} points to missing {target!r}") from None
            raise

    def __iter__(self) -> Iterator[str]:
        yield from self.variables
        yield from self.aliases

    def __len__(self) -> int:
        return len(self.variables) + len(self.aliases)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.variables or name in self.aliases)

    def array(self, name: str) -> NDArray[Any]:
        return self[name].data


class _Cursor:
    def __init__(self, buf: mmap.mmap, path: Path) -> None:
        self.buf = buf
        self.pos = 0
        self.path = path

    def _take(self, fmt: str) -> tuple[Any, ...]:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise CT2FormatError(f"{self.path}: truncated at byte {self.pos}")
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return values

    def u8(self) -> int:
        return int(self._take("<B")[0])

    def u16(self) -> int:
        return int(self._take("<H")[0])

    def u32(self) -> int:
        return int(self._take("<I")[0])

    def u32s(self, n: int) -> tuple[int, ...]:
        return tuple(int(v) for v in self._take(f"<{n}I")) if n else ()

    def string(self) -> str:
        n = self.u16()
        if n == 0 or self.pos + n > len(self.buf):
            raise CT2FormatError(f"{self.path}: bad string length {n} at byte {self.pos - 2}")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        if raw[-1:] != b"\0":
            raise CT2FormatError(f"{self.path}: unterminated string at byte {self.pos - n}")
        return raw[:-1].decode("utf-8")


def read_ct2_model(path: str | Path) -> CT2Model:
    """Parse ``model.bin`` (or a directory holding one) into memory-mapped arrays."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    with path.open("rb") as fh:
        try:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty file
            raise CT2FormatError(f"{path}: empty file") from None
    cur = _Cursor(buf, path)

    version = cur.u32()
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise CT2FormatError(
            f"{path}: CTranslate2 binary version {version} is not supported "
            f"(supported: {SUPPORTED_BINARY_VERSIONS.start}-{SUPPORTED_BINARY_VERSIONS.stop - 1})"
        )
    spec = cur.string()
    revision = cur.u32()

    variables: dict[str, CT2Variable] = {}
    for _ in range(cur.u32()):
        name = cur.string()
        dims = cur.u32s(cur.u8())
        type_id = cur.u8()
        if type_id not in CT2_DTYPES:
            raise CT2FormatError(f"{path}: variable {name!r} has unknown dtype id {type_id}")
        ct2_dtype, np_dtype = CT2_DTYPES[type_id]
        nbytes = cur.u32()
        count = int(np.prod(dims, dtype=np.int64))
        if nbytes != count * np_dtype.itemsize:
            raise CT2FormatError(
                f"{path}: variable {name!r} {dims} {ct2_dtype} has {nbytes} bytes, "
                f"expected {count * np_dtype.itemsize}"
            )
        if cur.pos + nbytes > len(buf):
            raise CT2FormatError(f"{path}: variable {name!r} runs past the end of the file")
        data = np.frombuffer(buf, dtype=np_dtype, count=count, offset=cur.pos).reshape(dims)
        cur.pos += nbytes
        if name in variables:
            raise CT2FormatError(f"{path}: duplicate variable {name!r}")
        variables[name] = CT2Variable(name=name, ct2_dtype=ct2_dtype, data=data)

    aliases: dict[str, str] = {}
    if cur.pos < len(buf):  # binary version >= 3 always writes the alias count
        for _ in range(cur.u32()):
            alias = cur.string()
            aliases[alias] = cur.string()
    if cur.pos != len(buf):
        raise CT2FormatError(f"{path}: {len(buf) - cur.pos} unexpected trailing bytes")

    model = CT2Model(
        path=path,
        binary_version=version,
        spec=spec,
        revision=revision,
        variables=variables,
        aliases=aliases,
    )
    for alias in aliases:
        model[alias]  # every alias must resolve
    return model
