"""Memory-mapped, validating reader of one `.safetensors` file.

The `safetensors` package cannot hand bfloat16 to numpy, and we want every header field checked
against the file before anything is mapped, so the (simple) format is read here: 8-byte little-endian
header length, a JSON header {name: {dtype, shape, data_offsets}}, then the data.
"""
from __future__ import annotations

import json
import math
import mmap
import struct
from pathlib import Path

import numpy as np

from hardwire.errors import BadCheckpoint

MAX_HEADER_BYTES = 100 << 20
DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "F64": np.dtype("<f8")}


def bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


class SafetensorsFile:
    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._file = open(self.path, "rb")
        except OSError as e:
            raise BadCheckpoint(f"cannot open: {e.strerror}", path=path) from None
        size = self.path.stat().st_size
        head = self._file.read(8)
        if len(head) < 8:
            raise BadCheckpoint(f"file of {size} bytes is too short for a safetensors header", path=path)
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise BadCheckpoint(f"header length {header_len} is larger than the file ({size} bytes) "
                                f"or the {MAX_HEADER_BYTES}-byte limit; truncated or not safetensors",
                                path=path)
        try:
            header = json.loads(self._file.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BadCheckpoint(f"header is not valid JSON ({e})", path=path) from None
        if not isinstance(header, dict):
            raise BadCheckpoint("header is not a JSON object", path=path)
        self.metadata = header.pop("__metadata__", None) or {}
        data_start = 8 + header_len
        self.entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        for name, info in header.items():
            try:
                dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            except (TypeError, KeyError, ValueError):
                raise BadCheckpoint("expected dtype, shape and data_offsets", path=path,
                                    field=f"tensor {name}") from None
            if not all(isinstance(d, int) and d >= 0 for d in shape) or not (
                    isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
                raise BadCheckpoint(f"bad shape {shape} or offsets [{begin}, {end}]", path=path,
                                    field=f"tensor {name}")
            if end + data_start > size:
                raise BadCheckpoint(f"data ends at byte {end + data_start} but the file has {size} bytes "
                                    f"(truncated?)", path=path, field=f"tensor {name}")
            itemsize = DTYPES[dtype].itemsize if dtype in DTYPES else None
            if itemsize is not None and math.prod(shape) * itemsize != end - begin:
                raise BadCheckpoint(f"shape {list(shape)} of {dtype} needs {math.prod(shape) * itemsize} "
                                    f"bytes, offsets give {end - begin}", path=path, field=f"tensor {name}")
            self.entries[name] = (dtype, shape, data_start + begin, data_start + end)
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else None

    def dtype(self, name: str) -> str:
        return self.entries[name][0]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][1]

    def read(self, name: str) -> np.ndarray:
        """The tensor as float32 (a copy; the file stays mapped, not loaded)."""
        dtype, shape, begin, end = self.entries[name]
        if dtype not in DTYPES:
            raise BadCheckpoint(f"dtype {dtype} is not supported; expected one of {', '.join(DTYPES)}",
                                path=self.path, field=f"tensor {name}")
        raw = np.frombuffer(self._map, dtype=DTYPES[dtype], count=math.prod(shape), offset=begin)
        array = bfloat16_to_float32(raw) if dtype == "BF16" else raw.astype(np.float32)
        del raw
        self._release(begin, end)
        return array.reshape(shape)

    def _release(self, begin: int, end: int) -> None:
        """Drop the pages just copied from this process's resident set, so streaming through a
        checkpoint larger than RAM keeps memory near one tensor (the OS may still cache them)."""
        if not hasattr(mmap, "MADV_DONTNEED") or self._map is None:
            return
        start = begin - begin % mmap.PAGESIZE
        if end > start:
            self._map.madvise(mmap.MADV_DONTNEED, start, end - start)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        self._file.close()
