"""Reader for CTranslate2 ``model.bin`` files (the format faster-whisper models ship in).

Layout (little-endian): ``u32 version``, ``str spec_name``, ``u32 revision``, ``u32 n_vars``; per
variable ``str name``, ``u8 ndim``, ``u32 dims[ndim]``, ``u8 dtype``, ``u32 nbytes``, raw bytes;
then ``u32 n_aliases`` and pairs of ``str``. A ``str`` is ``u16 length`` (including a trailing
NUL) followed by the UTF-8 bytes. Every read is bounds-checked so a truncated or corrupt file
fails with a message naming the file, the variable and the offset, never with a numpy crash.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speechllm.errors import AssetError

_DTYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16: kept as raw 16-bit words, widened in to_float32()
}
_DTYPE_NAMES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}


@dataclass
class CT2Model:
    """Variables of a CTranslate2 model: name -> numpy array, plus aliases (name -> target)."""

    spec_name: str
    version: int
    revision: int
    variables: dict[str, np.ndarray]
    dtypes: dict[str, str]
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        """A variable by name, following aliases."""
        name = self.aliases.get(name, name)
        return self.variables[name]

    def __contains__(self, name: str) -> bool:
        return name in self.variables or name in self.aliases

    def to_float32(self, name: str) -> np.ndarray:
        """A float variable widened to float32 (bf16 words shifted into the high half)."""
        arr = self.get(name)
        resolved = self.aliases.get(name, name)
        if self.dtypes[resolved] == "bfloat16":
            return (arr.astype(np.uint32) << 16).view(np.float32)
        return arr.astype(np.float32)


class _Reader:
    def __init__(self, buf: memoryview, path: str):
        self.buf = buf
        self.pos = 0
        self.path = path

    def _need(self, n: int, what: str) -> None:
        if self.pos + n > len(self.buf):
            raise AssetError(
                f"{self.path}: truncated or corrupt CTranslate2 file: needed {n} bytes for {what} at "
                f"offset {self.pos}, but the file has {len(self.buf)} bytes"
            )

    def u8(self, what: str) -> int:
        self._need(1, what)
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def u16(self, what: str) -> int:
        self._need(2, what)
        (v,) = struct.unpack_from("<H", self.buf, self.pos)
        self.pos += 2
        return v

    def u32(self, what: str) -> int:
        self._need(4, what)
        (v,) = struct.unpack_from("<I", self.buf, self.pos)
        self.pos += 4
        return v

    def string(self, what: str) -> str:
        n = self.u16(what)
        self._need(n, what)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        try:
            return raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            raise AssetError(f"{self.path}: corrupt CTranslate2 file: {what} is not UTF-8") from None


def read_ct2_model(path: str | os.PathLike | list[str | os.PathLike]) -> CT2Model:
    """Parse a CTranslate2 ``model.bin``. A list of paths is read as the parts of one file,
    concatenated in order (models split across several packages)."""
    paths = [Path(p) for p in (path if isinstance(path, list) else [path])]
    for p in paths:
        if not p.is_file():
            raise AssetError(f"{p}: CTranslate2 weight file not found")
    data = b"".join(p.read_bytes() for p in paths)
    label = " + ".join(str(p) for p in paths)
    r = _Reader(memoryview(data), label)
    version = r.u32("the format version")
    if version < 5 or version > 6:
        raise AssetError(f"{label}: unsupported CTranslate2 format version {version} (expected 5 or 6)")
    spec_name = r.string("the spec name")
    revision = r.u32("the spec revision")
    n_vars = r.u32("the variable count")
    if n_vars > 100_000:
        raise AssetError(f"{label}: corrupt CTranslate2 file: implausible variable count {n_vars}")
    variables: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for i in range(n_vars):
        name = r.string(f"the name of variable {i}")
        ndim = r.u8(f"the rank of {name}")
        dims = [r.u32(f"the shape of {name}") for _ in range(ndim)]
        code = r.u8(f"the dtype of {name}")
        if code not in _DTYPES:
            raise AssetError(f"{label}: corrupt CTranslate2 file: unknown dtype code {code} for {name}")
        nbytes = r.u32(f"the size of {name}")
        dtype = _DTYPES[code]
        expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize if dims else dtype.itemsize
        if nbytes != expected:
            raise AssetError(
                f"{label}: corrupt CTranslate2 file: {name} declares {nbytes} bytes, but shape {dims} "
                f"of {_DTYPE_NAMES[code]} needs {expected}"
            )
        r._need(nbytes, f"the data of {name}")
        arr = np.frombuffer(data, dtype=dtype, count=nbytes // dtype.itemsize, offset=r.pos)
        r.pos += nbytes
        variables[name] = arr.reshape(dims) if dims else arr.reshape(())
        dtypes[name] = _DTYPE_NAMES[code]
    aliases: dict[str, str] = {}
    if r.pos < len(data):
        n_aliases = r.u32("the alias count")
        for _ in range(n_aliases):
            alias = r.string("an alias name")
            aliases[alias] = r.string(f"the target of alias {alias}")
    if r.pos != len(data):
        raise AssetError(f"{label}: corrupt CTranslate2 file: {len(data) - r.pos} unexpected trailing bytes")
    return CT2Model(spec_name, version, revision, variables, dtypes, aliases)
