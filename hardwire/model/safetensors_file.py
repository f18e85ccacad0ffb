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
from hardwire.jsonfile import parse_json

MAX_HEADER_BYTES = 100 << 20
# Every dtype the safetensors format defines (whole-byte ones) and its bytes per element.
ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
              "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
# The ones holding weights hardwire reads, as numpy reads them (bfloat16 as its raw 16 bits).
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
        header = parse_json(self._file.read(header_len), path, BadCheckpoint, what="safetensors header")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise BadCheckpoint("expected an object of strings", path=path, field="__metadata__")
        self.metadata = metadata
        data_start = 8 + header_len
        self.entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        for name, info in header.items():
            try:
                dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            except (TypeError, KeyError, ValueError):
                raise BadCheckpoint("expected dtype, shape and data_offsets", path=path,
                                    field=f"tensor {name}") from None
            if not (isinstance(dtype, str) and dtype in ITEM_BYTES):
                raise BadCheckpoint(f"unknown dtype {json.dumps(dtype)[:40]}; expected one of "
                                    f"{', '.join(ITEM_BYTES)}", path=path, field=f"tensor {name}")
            if not all(type(d) is int and d >= 0 for d in shape) or not (
                    type(begin) is int and type(end) is int and 0 <= begin <= end):
                raise BadCheckpoint(f"bad shape {list(shape)} or offsets [{begin}, {end}]", path=path,
                                    field=f"tensor {name}")
            if end + data_start > size:
                raise BadCheckpoint(f"data ends at byte {end + data_start} but the file has {size} bytes "
                                    f"(truncated?)", path=path, field=f"tensor {name}")
            needed = math.prod(shape) * ITEM_BYTES[dtype]
            if needed != end - begin:
                raise BadCheckpoint(f"shape {list(shape)} of {dtype} needs {needed} bytes, offsets give "
                                    f"{end - begin}", path=path, field=f"tensor {name}")
            self.entries[name] = (dtype, shape, data_start + begin, data_start + end)
        self._check_coverage(data_start, size)
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else None

    def _check_coverage(self, data_start: int, size: int) -> None:
        """The tensors' byte ranges, in offset order, tile the data section exactly: no overlap (two
        tensors sharing bytes), no gap (bytes no tensor owns) and nothing after the last one, as the
        reference `safetensors` reader requires."""
        position = data_start
        for name, (_, _, begin, end) in sorted(self.entries.items(), key=lambda item: item[1][2:]):
            if begin != position:
                problem = "overlaps the previous tensor" if begin < position else "leaves a gap after the previous tensor"
                raise BadCheckpoint(f"data starts at offset {begin - data_start}, expected {position - data_start}: "
                                    f"it {problem}", path=self.path, field=f"tensor {name}")
            position = end
        if position != size:
            raise BadCheckpoint(f"tensors end at offset {position - data_start} but the data section has "
                                f"{size - data_start} bytes; the header length or offsets are wrong",
                                path=self.path)

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
