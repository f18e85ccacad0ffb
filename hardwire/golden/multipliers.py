"""How the kernels store a matrix's §3 group multipliers: 3 bytes each, and how they read them back.

A multiplier m <= 2^23 (docs/arithmetic.md §1.3) is stored in MULTIPLIER_BYTES bytes instead of an
int32: the stream a token reads shrinks by a byte per row and group (w8g32 on the 110M shape: 123 ->
120 MB a step). The R multipliers of a row block's group lie in planes: their low bytes, then their
middle bytes, then their high bytes (byte k of row r at k R + r), so that compiled code reads them
as three zero-extending R-byte loads, shifted and or-ed (`spread`), with no byte shuffle. The AMX
kernel reading them so ran as fast as on an unpacked int32 copy, within this machine's noise
(docs/benchmarks.md), and that copy is no longer kept.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

MULTIPLIER_BYTES = 3


def pack(values: np.ndarray) -> np.ndarray:
    """int32 [..., R] -> uint8 [..., 3R]: byte k of value r at k R + r (low byte first)."""
    as_bytes = values.astype("<u4").view(np.uint8).reshape(*values.shape, 4)[..., :MULTIPLIER_BYTES]
    return np.ascontiguousarray(np.swapaxes(as_bytes, -1, -2).reshape(*values.shape[:-1], -1))


def unpack(packed: np.ndarray) -> np.ndarray:
    """The inverse of `pack`."""
    planes = packed.reshape(*packed.shape[:-1], MULTIPLIER_BYTES, -1).astype(np.int32)
    return sum(planes[..., k, :] << (8 * k) for k in range(MULTIPLIER_BYTES)).astype(np.int32)


def spread(builder: ir.IRBuilder, group_bytes: ir.Value, rows: int) -> ir.Value:
    """The `rows` multipliers whose 3 * rows packed bytes start at the i8* `group_bytes`, as
    <rows x i32>."""
    i8, i32 = ir.IntType(8), ir.IntType(32)
    lanes = ir.VectorType(i32, rows)
    value = None
    for k in range(MULTIPLIER_BYTES):
        plane_ptr = builder.bitcast(builder.gep(group_bytes, [ir.Constant(ir.IntType(64), k * rows)]),
                                    ir.PointerType(ir.VectorType(i8, rows)))
        plane = builder.load(plane_ptr)
        plane.align = 1
        widened = builder.zext(plane, lanes)
        if k:
            widened = builder.shl(widened, ir.Constant(lanes, [8 * k] * rows))
        value = widened if value is None else builder.or_(value, widened)
    return value
