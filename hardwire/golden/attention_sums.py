"""§6 attention's two sums over a user's KV cache, written as LLVM vector code (docs/arithmetic.md §6).

numba's auto-vectoriser turns both into 64-bit multiplies of widened 16-bit values, one multiply per
element (~27 and ~24 cycles a position for a 64-wide head on this machine); written out they take
a third to a half of that. Both stay exact integer sums, equal to the plain loops they replace.

- `dot16(q, k)`: sum_d q_d k_d of 16-bit vectors. Neighbouring products are added in 32 bits (the
  pattern x86 compiles to one pmaddwd per 32 elements): |q| and |k| are at most 2^15 - 1 (q
  saturated to INTERNAL_BITS = 16 by RoPE, §5; k to the cache width <= 16, §6.1), so a pair is at
  most 2 (2^15 - 1)^2 = 2^31 - 2^17 + 2 < 2^31 and never wraps. The pairs are widened to 64 bits
  before they are added up.
- `weighted_rows(weights, values, g, first, length, total)`: total[d] = sum_t w_t values[t, g, d]
  over positions t in [first, length), 16 columns at a time in 64-bit accumulators that stay in
  registers across the positions. Each product is a 32 x 32 -> 64-bit multiply (w_t <= 2^15, §6.2:
  a softmax weight; |v| < 2^15), so it is exact and x86 compiles it to one vpmuldq per 8 columns.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_i16, _i32, _i64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
DOT_LANES = 32            # 16-bit elements a step of `dot16` reads (one 512-bit load each of q and k)
ROW_LANES = 16            # columns `weighted_rows` accumulates at once (two 512-bit accumulators)


def _vector(builder, array, index, lanes: int, element):
    """<lanes x element> loaded from the 1-D or flattened array's data at element `index`."""
    pointer = builder.gep(builder.bitcast(array.data, ir.PointerType(element)), [index])
    value = builder.load(builder.bitcast(pointer, ir.PointerType(ir.VectorType(element, lanes))))
    value.align = element.width // 8
    return value


def _halves(builder, vector, lanes: int):
    """The even and odd lanes of a vector of 2 * lanes."""
    return [builder.shuffle_vector(vector, vector, ir.Constant(ir.VectorType(_i32, lanes),
                                                                [2 * i + parity for i in range(lanes)]))
            for parity in range(2)]


@intrinsic
def dot16(typingctx, q, k):
    """int64 sum_i q[i] * k[i] of two int16 1-D contiguous arrays of one length."""
    if not all(isinstance(t, types.Array) and t.dtype == types.int16 and t.ndim == 1 for t in (q, k)):
        return None
    def codegen(context, builder, signature, args):
        q_array, k_array = (context.make_array(t)(context, builder, v) for t, v in zip(signature.args, args))
        size = cgutils.unpack_tuple(builder, q_array.shape)[0]
        lanes64 = ir.VectorType(_i64, DOT_LANES // 4)
        wide32 = ir.VectorType(_i32, DOT_LANES)
        vector_total = cgutils.alloca_once_value(builder, ir.Constant(lanes64, [0] * (DOT_LANES // 4)))
        steps = builder.udiv(size, _i64(DOT_LANES))
        with cgutils.for_range(builder, steps) as loop:
            at = builder.mul(loop.index, _i64(DOT_LANES))
            products = builder.mul(builder.sext(_vector(builder, q_array, at, DOT_LANES, _i16), wide32),
                                   builder.sext(_vector(builder, k_array, at, DOT_LANES, _i16), wide32))
            pairs = builder.add(*_halves(builder, products, DOT_LANES // 2))    # < 2^31: see the module note
            low, high = (builder.sext(half, lanes64) for half in _halves(builder, pairs, DOT_LANES // 4))
            builder.store(builder.add(builder.load(vector_total), builder.add(low, high)), vector_total)
        reduce = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_i64, [lanes64]),
                                                "llvm.vector.reduce.add.v8i64")
        total = cgutils.alloca_once_value(builder, builder.call(reduce, [builder.load(vector_total)]))
        q_data = builder.bitcast(q_array.data, ir.PointerType(_i16))
        k_data = builder.bitcast(k_array.data, ir.PointerType(_i16))
        done = builder.mul(steps, _i64(DOT_LANES))
        with cgutils.for_range(builder, builder.sub(size, done)) as loop:     # the columns past the last step
            at = builder.add(done, loop.index)
            product = builder.mul(builder.sext(builder.load(builder.gep(q_data, [at])), _i64),
                                  builder.sext(builder.load(builder.gep(k_data, [at])), _i64))
            builder.store(builder.add(builder.load(total), product), total)
        return builder.load(total)
    return types.int64(q, k), codegen


@intrinsic
def weighted_rows(typingctx, weights, values, g, first, length, total):
    """total[d] = sum over t in [first, length) of weights[t] * values[t, g, d] (weights int64
    0 <= w <= 2^15, values int16 [positions, kv_heads, head_dim] C-contiguous, total int64
    [head_dim])."""
    if not (isinstance(weights, types.Array) and weights.dtype == types.int64 and isinstance(values, types.Array)
            and values.dtype == types.int16 and values.ndim == 3 and values.layout == "C"
            and isinstance(total, types.Array) and total.dtype == types.int64):
        return None
    def codegen(context, builder, signature, args):
        weights_array, values_array = (context.make_array(t)(context, builder, v)
                                       for t, v in zip(signature.args[:2], args[:2]))
        total_array = context.make_array(signature.args[5])(context, builder, args[5])
        g_value, first_value, length_value = args[2:5]
        _, kv_heads, head_dim = cgutils.unpack_tuple(builder, values_array.shape)
        row_elements = builder.mul(kv_heads, head_dim)
        lanes = ir.VectorType(_i64, ROW_LANES)
        weights_data = builder.bitcast(weights_array.data, ir.PointerType(_i64))
        total_data = builder.bitcast(total_array.data, ir.PointerType(_i64))
        accumulator = cgutils.alloca_once(builder, lanes)
        positions = builder.sub(length_value, first_value)

        def weight_at(t, as_lanes: int):
            """w_t as a 32-bit number sign-extended to 64 (what it is), so that the product is a
            32 x 32 -> 64-bit multiply."""
            narrow = builder.sext(builder.trunc(builder.load(builder.gep(weights_data, [t])), _i32), _i64)
            if not as_lanes:
                return narrow
            splat = builder.insert_element(ir.Constant(lanes, None), narrow, _i32(0))
            return builder.shuffle_vector(splat, ir.Constant(lanes, None),
                                          ir.Constant(ir.VectorType(_i32, as_lanes), [0] * as_lanes))

        def row_start(t):
            return builder.add(builder.mul(t, row_elements), builder.mul(g_value, head_dim))

        steps = builder.udiv(head_dim, _i64(ROW_LANES))
        with cgutils.for_range(builder, steps) as column_loop:
            column = builder.mul(column_loop.index, _i64(ROW_LANES))
            builder.store(ir.Constant(lanes, [0] * ROW_LANES), accumulator)
            with cgutils.for_range(builder, positions) as position_loop:
                t = builder.add(first_value, position_loop.index)
                row = builder.sext(_vector(builder, values_array, builder.add(row_start(t), column), ROW_LANES, _i16),
                                   lanes)
                builder.store(builder.add(builder.load(accumulator), builder.mul(weight_at(t, ROW_LANES), row)),
                              accumulator)
            target = builder.bitcast(builder.gep(total_data, [column]), ir.PointerType(lanes))
            builder.store(builder.load(accumulator), target).align = 8
        values_data = builder.bitcast(values_array.data, ir.PointerType(_i16))
        done = builder.mul(steps, _i64(ROW_LANES))
        with cgutils.for_range(builder, builder.sub(head_dim, done)) as column_loop:     # the last columns
            column = builder.add(done, column_loop.index)
            sum_slot = cgutils.alloca_once_value(builder, _i64(0))
            with cgutils.for_range(builder, positions) as position_loop:
                t = builder.add(first_value, position_loop.index)
                value = builder.sext(builder.load(builder.gep(values_data, [builder.add(row_start(t), column)])), _i64)
                builder.store(builder.add(builder.load(sum_slot), builder.mul(weight_at(t, 0), value)), sum_slot)
            builder.store(builder.load(sum_slot), builder.gep(total_data, [column]))
        return context.get_dummy_value()
    return types.void(weights, values, g, first, length, total), codegen

