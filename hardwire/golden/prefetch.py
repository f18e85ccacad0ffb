"""Software prefetch from compiled code: LLVM's `llvm.prefetch`, a cache line at a time.

Used where the hardware prefetcher cannot see a stream coming: the tile kernel's next row blocks
(`hardwire.golden.amx`), and a user's KV cache rows before attention walks them head by head
(`prefetch_rows`: each head reads 128 of every row's bytes, a stride the prefetcher does not
follow; in a 32-user step attention took 3.4-3.5 ms without it, 2.5-2.6 with it, docs/benchmarks.md).
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

CACHE_LINE = 64
_i32, _i64 = ir.IntType(32), ir.IntType(64)
_byte_ptr = ir.PointerType(ir.IntType(8))
L2 = 2                    # llvm.prefetch locality that keeps a line in L2 and below


def emit_prefetch(builder: ir.IRBuilder, base: ir.Value, start: ir.Value, count: ir.Value) -> None:
    """Prefetch (for reading, into L2) bytes [start, start + count) from the i8* `base`, a line at a time."""
    fetch = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [_byte_ptr, _i32, _i32, _i32]), "llvm.prefetch.p0")
    line = _i64(CACHE_LINE)
    with cgutils.for_range(builder, builder.udiv(builder.add(count, _i64(CACHE_LINE - 1)), line)) as loop:
        address = builder.gep(base, [builder.add(start, builder.mul(loop.index, line))])
        builder.call(fetch, [address, _i32(0), _i32(L2), _i32(1)])     # read, data cache


@intrinsic
def prefetch_rows(typingctx, array, first, count):
    """Prefetch into L2 rows [first, first + count) of a C-contiguous array (all of each row)."""
    if not (isinstance(array, types.Array) and array.layout == "C" and isinstance(first, types.Integer)
            and isinstance(count, types.Integer)):
        return None
    def codegen(context, builder, signature, args):
        array_value = context.make_array(signature.args[0])(context, builder, args[0])
        row_bytes = _i64(context.get_abi_sizeof(context.get_data_type(signature.args[0].dtype)))
        for extent in cgutils.unpack_tuple(builder, array_value.shape)[1:]:
            row_bytes = builder.mul(row_bytes, extent)
        start, rows = (context.cast(builder, args[i], signature.args[i], types.int64) for i in (1, 2))
        emit_prefetch(builder, builder.bitcast(array_value.data, _byte_ptr), builder.mul(start, row_bytes),
                      builder.mul(rows, row_bytes))
        return context.get_dummy_value()
    return types.void(array, first, count), codegen
