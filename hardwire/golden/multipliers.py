"""How the kernels store a matrix's §3 group multipliers: 3 bytes each, and how they read them back.

A multiplier m <= 2^23 (docs/arithmetic.md §1.3) is stored in MULTIPLIER_BYTES bytes instead of an
int32: the stream a token reads shrinks by a byte per row and group (w8g32 on the 110M shape: 123 ->
120 MB a step). `pack` and `unpack` are the numpy side; `spread` is the LLVM IR the vpdpbusd and AMX
kernels use to turn a row block's 3R bytes into R int32 lanes with one shuffle.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

MULTIPLIER_BYTES = 3


def pack(values: np.ndarray) -> np.ndarray:
    """int32 [..., R] -> uint8 [..., 3R], each value's low 3 bytes, low byte first."""
    as_bytes = values.astype("<u4").view(np.uint8).reshape(*values.shape, 4)
    return np.ascontiguousarray(as_bytes[..., :MULTIPLIER_BYTES].reshape(*values.shape[:-1], -1))


def unpack(packed: np.ndarray) -> np.ndarray:
    """The inverse of `pack`."""
    triples = packed.reshape(*packed.shape[:-1], -1, MULTIPLIER_BYTES).astype(np.int32)
    return sum(triples[..., k] << (8 * k) for k in range(MULTIPLIER_BYTES)).astype(np.int32)


def spread(builder: ir.IRBuilder, triples: ir.Value, rows: int) -> ir.Value:
    """`rows` multipliers loaded as 3 * rows bytes (an <3 rows x i8> vector) -> <rows x i32>: byte
    k < 3 of lane r is byte 3r + k, byte 3 of every lane 0 (an index into a zero vector)."""
    i8, i32 = ir.IntType(8), ir.IntType(32)
    assert triples.type == ir.VectorType(i8, MULTIPLIER_BYTES * rows)
    zeros = ir.Constant(triples.type, [0] * (MULTIPLIER_BYTES * rows))
    order = [MULTIPLIER_BYTES * r + k if k < MULTIPLIER_BYTES else MULTIPLIER_BYTES * rows
             for r in range(rows) for k in range(4)]
    spread_bytes = builder.shuffle_vector(triples, zeros, ir.Constant(ir.VectorType(i32, 4 * rows), order))
    return builder.bitcast(spread_bytes, ir.VectorType(i32, rows))
