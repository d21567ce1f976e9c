"""One ``*.safetensors`` file, read lazily through a memory map: its header names each tensor's
dtype, shape and byte range, and a slice of a tensor reads only the rows it covers.

The format (safetensors' own specification): 8 bytes, the header's length N as a little-endian
u64; N bytes of JSON, ``{name: {"dtype", "shape", "data_offsets": [begin, end]}}`` (and an
optional ``"__metadata__"``); then the data, each tensor row-major from ``begin`` to ``end``.
Reading it directly takes every dtype the Hub's checkpoints use, FP8 included, as numpy arrays
(the ``ml_dtypes`` types that jax ships), where the safetensors library's numpy reader has no
FP8. No jax, no torch.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

from jaxpart.config import ConfigError

DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
MAX_HEADER = 100 * 2**20  # the library's own limit on a header's size


class TensorFile:
    """The tensors of one safetensors file: ``names``, ``shape(name)``, ``dtype(name)`` and
    ``read(name, index)``, which reads only the block ``index`` (a tuple of slices) covers."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with open(path, "rb") as f:
                raw = f.read(8)
                size = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
                if not 0 < size <= MAX_HEADER:
                    self._bad("no safetensors header (the file is cut short or not safetensors)")
                text = f.read(size)
        except OSError as e:
            raise ConfigError(f"{path}: cannot be read: {e.strerror or e}") from None
        try:
            header = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._bad("its safetensors header is not valid JSON (the file is damaged)")
        if not isinstance(header, dict):
            self._bad("its safetensors header is not a table of tensors")
        header.pop("__metadata__", None)
        self.data_start = 8 + size
        length = path.stat().st_size - self.data_start
        self.entries = {}
        for name, entry in header.items():
            try:
                dtype = DTYPES[entry["dtype"]]
                shape = tuple(int(n) for n in entry["shape"])
                begin, end = (int(n) for n in entry["data_offsets"])
            except (KeyError, TypeError, ValueError):
                self._bad(f"tensor {name!r} has a malformed header entry {entry!r}")
            if any(n < 0 for n in shape) or not 0 <= begin <= end <= length:
                self._bad(f"tensor {name!r} lies outside the file's {length} bytes of data")
            if end - begin != int(np.prod(shape)) * dtype.itemsize:
                self._bad(
                    f"tensor {name!r}: {end - begin} bytes for shape {list(shape)} of "
                    f"{entry['dtype']}"
                )
            self.entries[name] = (dtype, shape, begin)
        self._map = None

    def _bad(self, why: str):
        raise ConfigError(f"{self.path}: {why}")

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][1]

    def dtype(self, name: str) -> np.dtype:
        return self.entries[name][0]

    def nbytes(self, name: str) -> int:
        dtype, shape, _ = self.entries[name]
        return int(np.prod(shape)) * dtype.itemsize

    def read(self, name: str, index: tuple = ()) -> np.ndarray:
        """A copy of ``tensor[index]``: only the pages that block covers are read."""
        dtype, shape, begin = self.entries[name]
        if self._map is None:
            self._map = np.memmap(self.path, np.uint8, "r")
        count = int(np.prod(shape))
        start = self.data_start + begin
        flat = self._map[start : start + count * dtype.itemsize].view(dtype)
        return np.array(flat.reshape(shape)[index])
