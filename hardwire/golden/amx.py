"""§3 matvec sums for many users at once with Intel AMX tile instructions (docs/arithmetic.md §3.1).

The vpdpbusd kernel of `matvec` adds 64 u8 x s8 products per instruction; one AMX tile product
adds 16 x 16 x K of them (K <= 64 columns), so when enough users share a step, the sums of a row
block's group are tile products: C[user, row] += A[user, column] (s8 activations) x
B[column, row] (codes), 16 users by 16 rows per C tile, in int32. That B operand wants a tile row
per 4 consecutive columns ("a quad"), each holding those 4 columns of the 16 rows: the same bytes
as a 16-row block of `matvec`'s byte layout (4R bytes per quad, byte 4r + k = row r, column k).
Where there are zero points, `tdpbsud` multiplies the unsigned codes u, loaded in place (8-bit) or
unpacked from their nibbles (4-bit), and the combination removes the correction as the vpdpbusd
kernel does. Where there are none, `tdpbssd` multiplies the signed codes c = u - offset (the top
bit of a byte flipped, or a nibble less 8), made one tile at a time in a 1 KiB buffer on the stack
that stays in L1 (an unpacked copy would double the bytes a step streams): sum c x is P_ig itself
and nothing is subtracted.

Each pass holds 2 user tiles x 2 row blocks: 2 A and 2 B tiles loaded, 4 C tiles accumulating, so
that consecutive products do not wait for one another. A C tile is one group's int32 sums P_ugr,
the same integers the vpdpbusd lanes hold (products exact, added into int32 without saturation,
every term bounded as in §3.1). It is stored, and each user's row of it is combined exactly as the
vpdpbusd kernel combines its lanes: acc[u, r] += m[g, r] * (P_ugr - corr[u, g, r]) in int64 (the
products of the next group, or of the next pair's first, already in flight; a pair's sums are
requantized in the step that combines its last group), so the two kernels return the same
integers. With groups of 32 columns this combination, one int64 multiply-add per user, row and
group, costs about as much as the tile products save: AMX pays most with per-channel scales
(docs/benchmarks.md).

Linux hands a process the tile registers only after it asks (arch_prctl ARCH_REQ_XCOMP_PERM for
XFEATURE_XTILEDATA); this module asks once, at import, and `AMX` is true only when the CPU has
AMX-INT8, numba compiles for this CPU, and the kernel granted the request. numba reaches the
instructions through LLVM's AMX intrinsics in a numba `@intrinsic` (tile numbers are immediates;
each thread sets the tile shapes once per call with `ldtilecfg` from a 64-byte configuration).
"""
from __future__ import annotations

import ctypes
import functools
import platform

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import config, get_num_threads, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from hardwire.arithmetic import TOKEN_GUARD_BITS, TOKEN_MANTISSA_BITS, TOKEN_PRODUCT_LIMIT_BITS
from hardwire.golden.builds import serial_and_parallel
from hardwire.golden.multipliers import spread
from hardwire.golden.prefetch import emit_prefetch

TILE_ROWS = 16            # rows of a tile: users of an A or C tile, matrix rows (int32 columns) of a C tile
TILE_ROW_BYTES = 64       # bytes of a tile row: K = 64 activation bytes, or 16 rows x one quad of codes
QUAD = 4                  # columns one int32 of a tile product sums (the B operand's byte pairing)
# Users from which tile products beat the vpdpbusd kernel: 12-16 with 4-bit codes or groups of 32,
# 20-24 with 8-bit per-channel codes (bench/amx_crossover.py, docs/benchmarks.md "AMX tile
# products"); from 16 every user tile is full.
MIN_USERS = 16

# Linux: arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) grants this process the AMX tile data.
_SYS_ARCH_PRCTL = 158     # x86-64 syscall number
_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18


def _cpu_has_amx() -> bool:
    """AMX-INT8 on the CPU numba compiles for (none when it targets another or a generic CPU)."""
    if config.CPU_NAME is not None:
        return False
    features = llvm_binding.get_host_cpu_features()
    return bool(features.get("amx-tile") and features.get("amx-int8"))


def _request_tile_data() -> bool:
    """Ask Linux for the tile registers; false where the OS refuses or is not x86-64 Linux."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(ctypes.c_long(_SYS_ARCH_PRCTL), ctypes.c_long(_ARCH_REQ_XCOMP_PERM),
                            ctypes.c_long(_XFEATURE_XTILEDATA)) == 0
    except (OSError, AttributeError):
        return False


AMX = _cpu_has_amx() and _request_tile_data()


def pays(users: int, row_block: int) -> bool:
    """Whether `users` vectors over a matrix packed in blocks of `row_block` rows go through tile
    products: AMX usable, the blocks one B tile wide, and enough users to beat vpdpbusd."""
    return AMX and row_block == TILE_ROWS and users >= MIN_USERS


# A pass multiplies up to PASS_TILES user tiles by up to PASS_BLOCKS row blocks: 2 A and 2 B tiles
# loaded, 4 independent C tiles accumulating, all 8 tile registers, so that consecutive products
# need not wait for one another's result. B (codes) of block b is tile b, A of user tile t is 2 + t,
# C is 4 + 2 t + b.
PASS_TILES = 2
PASS_BLOCKS = 2


def _b_tile(b: int) -> int:
    return b


def _a_tile(t: int) -> int:
    return PASS_BLOCKS + t


def _c_tile(t: int, b: int) -> int:
    return PASS_BLOCKS + PASS_TILES + PASS_BLOCKS * t + b


_CONFIG_COLSB, _CONFIG_ROWS = 16, 48     # where the configuration keeps the tiles' row widths and row counts


@functools.lru_cache(maxsize=None)        # a step asks for the same few widths ~50 times
def tile_config(group_width: int) -> np.ndarray:
    """The 64-byte `ldtilecfg` operand (palette 1) for groups of `group_width` columns (a multiple
    of 16): each tile product covers K = the largest of 64, 32, 16 dividing it, so that a group is
    a whole number of products."""
    k = 64 if group_width % 64 == 0 else 32 if group_width % 32 == 0 else 16
    assert group_width % k == 0
    cfg = np.zeros(64, dtype=np.uint8)
    cfg[0] = 1                                            # palette 1: 8 tiles of up to 16 x 64 bytes
    colsb = cfg[_CONFIG_COLSB:_CONFIG_ROWS].view(np.uint16)   # bytes per row, tile by tile
    rows = cfg[_CONFIG_ROWS:]                                 # rows, tile by tile
    for b in range(PASS_BLOCKS):
        rows[_b_tile(b)], colsb[_b_tile(b)] = k // QUAD, TILE_ROW_BYTES
    for t in range(PASS_TILES):
        rows[_a_tile(t)], colsb[_a_tile(t)] = TILE_ROWS, k
        for b in range(PASS_BLOCKS):
            rows[_c_tile(t, b)], colsb[_c_tile(t, b)] = TILE_ROWS, TILE_ROWS * 4
    cfg.flags.writeable = False
    return cfg


# -- intrinsics -----------------------------------------------------------------------------------

_i1, _i8, _i32, _i64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
_byte_ptr = ir.PointerType(_i8)


def _declare(builder, name: str, args: list):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), args), name)


@intrinsic
def _load_tile_config(typingctx, cfg):
    """ldtilecfg: this thread's tile shapes (each thread configures its own tiles)."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        builder.call(_declare(builder, "llvm.x86.ldtilecfg", [_byte_ptr]), [builder.bitcast(data, _byte_ptr)])
        return context.get_dummy_value()
    return types.void(cfg), codegen


@intrinsic
def _release_tiles(typingctx):
    """tilerelease: back to the init state, so a context switch saves no tile data."""
    def codegen(context, builder, signature, args):
        builder.call(_declare(builder, "llvm.x86.tilerelease", []), [])
        return context.get_dummy_value()
    return types.void(), codegen


def _group_products(nibbles: bool, signed: bool):
    """An intrinsic for one step of the tile kernel's stream of (row-block pair, user pass, group)
    tasks: it multiplies one task and combines the one before, so that the combination (and, at the
    end of a pair, its requantization) runs while the tile products are in flight.

    Multiplying, for the users from `first` (up to PASS_TILES x 16 of them) and one group g of one
    or two row blocks (`pair`: the second is there): the int32 sums
    P_b[u, r] = sum over the group's columns j of x[u, j] * u_brj by `steps` tile products of
    `k_quads` quads each, stored to `sums` when done (`product_group` < 0: none). Combining the
    task before, whose sums are in `sums`, for each user u from `combine_first` (< `users`), in
    int64, 16 rows at a time as the vpdpbusd kernel's lanes:
    totals[u, 16 b + r] (+)= m_b[g, r] * (P_b[u, r] - corr_b[u, g, r or 0]), written at group 0
    and added after (`combine_group` < 0: none). Then, given `requantize_at` >= 0 (the task
    combined was its pair's last), every user's totals are requantized into out from that column
    (`_emit_requantized_rows`).
    Arguments: (codes of block 0, of block 1, codes of the next pair's two blocks, xs [padded users,
    groups * W] int8, mults of each combined block [groups, 48] uint8 (3 bytes a row,
    `multipliers.pack`), corr of each [users, groups, 16 or 1] int32, sums, totals [users, 32] int64,
    out, shifts, bias, scales (as `_rows_amx`), first, product_group, pair, fetch: whether each step
    also prefetches the same columns of the next pair's blocks into L2, combine_first,
    combine_group, combine_pair, k_quads, steps, users, offset, requantize_at, out_bits)."""

    @intrinsic
    def group_products(typingctx, codes0, codes1, next0, next1, xs, mults0, mults1, corr0, corr1, sums, totals, out,
                       shifts, bias, scales, first, product_group, pair, fetch, combine_first, combine_group,
                       combine_pair, k_quads, steps, users, offset, requantize_at, out_bits):
        if not all(isinstance(a, types.Array) and a.dtype == types.int64 and a.layout == "C"
                   for a in (totals, out, shifts, bias, scales)):
            return None                 # the requantization's code assumes them so
        def codegen(context, builder, signature, args):
            arrays = [context.make_array(t)(context, builder, v) for t, v in zip(signature.args[:15], args[:15])]
            codes_arrs, next_arrs, xs_arr, mults_arrs, corr_arrs, sums_arr, totals_arr = (
                arrays[0:2], arrays[2:4], arrays[4], arrays[5:7], arrays[7:9], arrays[9], arrays[10])
            out_arr, shifts_arr, bias_arr, scales_arr = arrays[11:15]
            (first_user, product_g, pair_value, fetch_value, combine_first_user, combine_g, combine_pair_value,
             k_quads_value, steps_value, users_value, offset_value, requantize_column, out_bits_value) = (
                context.cast(builder, value, typ, types.int64) for value, typ in zip(args[15:], signature.args[15:]))
            load_tile = _declare(builder, "llvm.x86.tileloadd64", [_i8, _byte_ptr, _i64])
            store_tile = _declare(builder, "llvm.x86.tilestored64", [_i8, _byte_ptr, _i64])
            zero_tile = _declare(builder, "llvm.x86.tilezero", [_i8])
            # A (activations) signed times B (codes): unsigned u, or signed c = u - offset
            product = _declare(builder, "llvm.x86.tdpbssd" if signed else "llvm.x86.tdpbsud", [_i8, _i8, _i8])
            lanes32 = ir.VectorType(_i32, TILE_ROWS)
            bytes64 = ir.VectorType(_i8, TILE_ROW_BYTES)
            row_bytes = _i64(TILE_ROW_BYTES)
            sums_row_bytes = _i64(TILE_ROWS * 4)
            tile = lambda number: ir.Constant(_i8, number)   # noqa: E731  (tile numbers are immediates)

            def data(array):
                return builder.bitcast(array.data, _byte_ptr)

            def stride(array, axis):
                return cgutils.unpack_tuple(builder, array.strides)[axis]

            def load(ptr, offset, typ, align=1):
                value = builder.load(builder.bitcast(builder.gep(ptr, [offset]), ir.PointerType(typ)))
                value.align = align
                return value

            def when(condition, emit):
                with builder.if_then(condition):
                    emit()

            # which of the 2 x 2 (user tile, block) products this pass has
            second_tile = builder.icmp_signed("<", builder.add(first_user, _i64(TILE_ROWS)),
                                              cgutils.unpack_tuple(builder, xs_arr.shape)[0])
            pair_flag = builder.icmp_signed("!=", pair_value, _i64(0))
            fetch_flag = builder.icmp_signed("!=", fetch_value, _i64(0))
            combine_pair_flag = builder.icmp_signed("!=", combine_pair_value, _i64(0))
            code_bytes = TILE_ROW_BYTES // 2 if nibbles else TILE_ROW_BYTES   # of codes a quad of 16 rows holds
            present = {(t, b): (ir.Constant(_i1, 1) if (t, b) == (0, 0) else second_tile if b == 0
                                else pair_flag if t == 0 else builder.and_(second_tile, pair_flag))
                       for t in range(PASS_TILES) for b in range(PASS_BLOCKS)}
            x_ptrs = [builder.gep(data(xs_arr), [builder.mul(builder.add(first_user, _i64(TILE_ROWS * t)),
                                                             stride(xs_arr, 0))])
                      for t in range(PASS_TILES)]
            sums_ptr = data(sums_arr)
            if nibbles or signed:
                unpacked = cgutils.alloca_once(builder, ir.ArrayType(_i8, PASS_BLOCKS * TILE_ROWS * TILE_ROW_BYTES))
                unpacked.align = 64
                unpacked_ptrs = [builder.gep(builder.bitcast(unpacked, _byte_ptr),
                                             [_i64(TILE_ROWS * TILE_ROW_BYTES * b)]) for b in range(PASS_BLOCKS)]
                low_mask = ir.Constant(bytes64, [15] * TILE_ROW_BYTES)
                offset = builder.shuffle_vector(  # the codes' offset in every byte
                    builder.insert_element(ir.Constant(bytes64, None), builder.trunc(offset_value, _i8), _i32(0)),
                    ir.Constant(bytes64, None), ir.Constant(ir.VectorType(_i32, TILE_ROW_BYTES), [0] * TILE_ROW_BYTES))
            def products(g):
                for (t, b), here in present.items():
                    when(here, lambda t=t, b=b: builder.call(zero_tile, [tile(_c_tile(t, b))]))
                quad0 = builder.mul(g, builder.mul(k_quads_value, steps_value))
                with cgutils.for_range(builder, steps_value) as step_loop:
                    quad = builder.add(quad0, builder.mul(step_loop.index, k_quads_value))

                    def load_codes(b):
                        codes_ptr = data(codes_arrs[b])
                        if nibbles:             # chunk c: quad 2c in the low nibbles, 2c + 1 in the high ones
                            with cgutils.for_range(builder, builder.udiv(k_quads_value, _i64(2))) as chunk_loop:
                                chunk = builder.add(builder.udiv(quad, _i64(2)), chunk_loop.index)
                                packed = load(codes_ptr, builder.mul(chunk, row_bytes), bytes64)
                                halves = (builder.and_(packed, low_mask),
                                          builder.lshr(packed, ir.Constant(bytes64, [4] * TILE_ROW_BYTES)))
                                if signed:
                                    halves = [builder.sub(half, offset) for half in halves]
                                for h, half in enumerate(halves):
                                    row = builder.add(builder.mul(chunk_loop.index, _i64(2)), _i64(h))
                                    target = builder.gep(unpacked_ptrs[b], [builder.mul(row, row_bytes)])
                                    builder.store(half, builder.bitcast(target, ir.PointerType(bytes64))).align = 64
                            source = unpacked_ptrs[b]
                        elif signed:            # c = u - 128 (the offset of bytes): the top bit flipped
                            with cgutils.for_range(builder, k_quads_value) as row_loop:
                                row = builder.add(quad, row_loop.index)
                                unsigned = load(codes_ptr, builder.mul(row, row_bytes), bytes64)
                                target = builder.gep(unpacked_ptrs[b], [builder.mul(row_loop.index, row_bytes)])
                                builder.store(builder.xor(unsigned, offset),
                                              builder.bitcast(target, ir.PointerType(bytes64))).align = 64
                            source = unpacked_ptrs[b]
                        else:
                            source = builder.gep(codes_ptr, [builder.mul(quad, row_bytes)])
                        builder.call(load_tile, [tile(_b_tile(b)), source, row_bytes])

                    load_codes(0)
                    when(pair_flag, lambda: load_codes(1))

                    def prefetch_next(b):   # the same columns of the next pass's block: L2 by the time it starts
                        emit_prefetch(builder, data(next_arrs[b]), builder.mul(quad, _i64(code_bytes)),
                                      builder.mul(k_quads_value, _i64(code_bytes)))

                    when(fetch_flag, lambda: prefetch_next(0))
                    when(builder.and_(fetch_flag, pair_flag), lambda: prefetch_next(1))
                    column = builder.mul(quad, _i64(QUAD))
                    builder.call(load_tile, [tile(_a_tile(0)), builder.gep(x_ptrs[0], [column]), stride(xs_arr, 0)])
                    when(second_tile, lambda: builder.call(
                        load_tile, [tile(_a_tile(1)), builder.gep(x_ptrs[1], [column]), stride(xs_arr, 0)]))
                    for (t, b), here in present.items():
                        when(here, lambda t=t, b=b: builder.call(product, [tile(_c_tile(t, b)), tile(_a_tile(t)),
                                                                           tile(_b_tile(b))]))

            def sums_at(t, b):              # sums [block][user of the pass][row], int32
                return builder.gep(sums_ptr, [_i64(4 * TILE_ROWS * (TILE_ROWS * (PASS_TILES * b + t)))])

            def store_products():
                for (t, b), here in present.items():
                    when(here, lambda t=t, b=b: builder.call(store_tile, [tile(_c_tile(t, b)), sums_at(t, b),
                                                                          sums_row_bytes]))

            # the exact combination, user by user: 16 rows of one group in vector lanes
            valid = builder.sub(users_value, combine_first_user)
            pass_users = _i64(PASS_TILES * TILE_ROWS)
            count = builder.select(builder.icmp_signed("<", valid, pass_users), valid, pass_users)

            # int32 lane pairs read as int64 lanes: vpmuldq multiplies the low (even row) halves as signed
            # 32-bit numbers into 64 bits, and the high (odd row) halves after a 32-bit shift, so no
            # lane is widened first; totals keep the even rows' sums, then the odd rows', of each block
            lanes64 = ir.VectorType(_i64, TILE_ROWS // 2)
            shift32 = ir.Constant(lanes64, [32] * (TILE_ROWS // 2))

            def low_halves(pairs):          # the even rows, sign-extended (folded into vpmuldq)
                return builder.ashr(builder.shl(pairs, shift32), shift32)

            def high_halves(pairs):         # the odd rows
                return builder.ashr(pairs, shift32)

            def combine(b, g):
                group_bytes = builder.gep(data(mults_arrs[b]), [builder.mul(g, stride(mults_arrs[b], 0))])
                mult = builder.bitcast(spread(builder, group_bytes, TILE_ROWS), lanes64)
                mults = (low_halves(mult), high_halves(mult))
                corr_arr = corr_arrs[b]
                corr_shared = builder.icmp_unsigned("==", cgutils.unpack_tuple(builder, corr_arr.shape)[2], _i64(1))
                first_group = builder.icmp_signed("==", g, _i64(0))    # totals are written, not added to
                with cgutils.for_range(builder, count) as user_loop:
                    u = user_loop.index
                    user = builder.add(combine_first_user, u)
                    partial = load(sums_at(0, b), builder.mul(u, sums_row_bytes), lanes32, 4)
                    if signed:              # sum c x is already sum (c - 0) x
                        exact = builder.bitcast(partial, lanes64)
                    else:
                        corr_at = builder.add(builder.mul(user, stride(corr_arr, 0)),
                                              builder.mul(g, stride(corr_arr, 1)))
                        shared_value = load(data(corr_arr), corr_at, _i32, 4)
                        shared_lanes = builder.shuffle_vector(
                            builder.insert_element(ir.Constant(lanes32, None), shared_value, _i32(0)),
                            ir.Constant(lanes32, None), ir.Constant(lanes32, [0] * TILE_ROWS))
                        # a per-row load only where there are per-row corrections (it would read past a shared one)
                        with builder.if_else(corr_shared) as (one_for_all_rows, one_per_row):
                            with one_for_all_rows:
                                shared_block = builder.basic_block
                            with one_per_row:
                                row_values = load(data(corr_arr), corr_at, lanes32, 4)
                                row_block = builder.basic_block
                        removed = builder.phi(lanes32)
                        removed.add_incoming(shared_lanes, shared_block)
                        removed.add_incoming(row_values, row_block)
                        exact = builder.bitcast(builder.sub(partial, removed), lanes64)
                    user_totals = builder.gep(data(totals_arr), [builder.mul(user, stride(totals_arr, 0))])
                    for half, (values, m) in enumerate(zip((low_halves(exact), high_halves(exact)), mults)):
                        target = builder.bitcast(builder.gep(user_totals, [_i64(8 * TILE_ROWS * b + 8 * 8 * half)]),
                                                 ir.PointerType(lanes64))
                        total = builder.load(target)
                        total.align = 8
                        total = builder.select(first_group, ir.Constant(lanes64, [0] * (TILE_ROWS // 2)), total)
                        builder.store(builder.add(total, builder.mul(m, values)), target).align = 8

            # products of one task in flight while the task before is combined (and requantized at the end
            # of its pair), then stored
            multiplying = builder.icmp_signed(">=", product_g, _i64(0))
            when(multiplying, lambda: products(product_g))

            def combine_blocks():
                combine(0, combine_g)
                when(combine_pair_flag, lambda: combine(1, combine_g))

            when(builder.icmp_signed(">=", combine_g, _i64(0)), combine_blocks)
            when(builder.icmp_signed(">=", requantize_column, _i64(0)), lambda: _emit_requantized_rows(
                builder, totals_arr, out_arr, shifts_arr, bias_arr, scales_arr, users_value, requantize_column,
                builder.add(_i64(1), combine_pair_value), out_bits_value))
            when(multiplying, store_products)
            return context.get_dummy_value()

        return (types.void(codes0, codes1, next0, next1, xs, mults0, mults1, corr0, corr1, sums, totals, out, shifts,
                           bias, scales, first, product_group, pair, fetch, combine_first, combine_group, combine_pair,
                           k_quads, steps, users, offset, requantize_at, out_bits), codegen)

    return group_products


# (nibbles, signed): without zero points (one correction for all rows) the codes enter as signed
# c = u - offset, so that the products are P_ig already and the combination subtracts nothing
_bytes_pass, _nibbles_pass = _group_products(False, False), _group_products(True, False)
_signed_bytes_pass, _signed_nibbles_pass = _group_products(False, True), _group_products(True, True)


def _vector_max(builder, a, b):
    """Lane by lane signed max (vpmaxsq)."""
    return builder.select(builder.icmp_signed(">", a, b), a, b)


def _vector_min(builder, a, b):
    """Lane by lane signed min (vpminsq)."""
    return builder.select(builder.icmp_signed("<", a, b), a, b)


def _emit_requantized_rows(builder, totals_arr, out_arr, shifts_arr, bias_arr, scales_arr, users_value,
                           column_value, blocks_value, out_bits_value):
    """Code for out[u, column + 16 b + r] = `matvec._requantize` of row r of block b's sum in
    totals [users, 32] (each block's even rows, then its odd rows) for b < blocks and u < users,
    with row shifts and biases shifts[column + 16 b + r], bias[...] and user u's token scale
    scales[u] = (mu, e). Sixteen rows at a time in int64 vector lanes, branch-free: rshift_round by
    s = k_i + e - 7 is ((a + (2^max(s,0) >> 1)) >> max(s,0)) << max(-s,0), which is both of its
    cases. Every array int64 and C-contiguous (`group_products` types them so); counts int64."""
    half = TILE_ROWS // 2
    lanes, rows = ir.VectorType(_i64, half), ir.VectorType(_i64, TILE_ROWS)
    order = ir.Constant(ir.VectorType(_i32, TILE_ROWS), [half * (i % 2) + i // 2 for i in range(TILE_ROWS)])
    totals_stride, out_stride, scales_stride = (cgutils.unpack_tuple(builder, a.strides)[0]
                                                for a in (totals_arr, out_arr, scales_arr))

    def splat(value):
        return builder.shuffle_vector(builder.insert_element(ir.Constant(rows, None), value, _i32(0)),
                                      ir.Constant(rows, None), ir.Constant(ir.VectorType(_i32, TILE_ROWS),
                                                                           [0] * TILE_ROWS))

    def constant(value):
        return ir.Constant(rows, [value] * TILE_ROWS)

    def at(array, row_bytes, user, element, typ):
        address = builder.gep(builder.bitcast(array.data, _byte_ptr),
                              [builder.add(builder.mul(user, row_bytes), builder.mul(element, _i64(8)))])
        return builder.bitcast(address, ir.PointerType(typ))

    def load(pointer):
        value = builder.load(pointer)
        value.align = 8
        return value

    zero, one = constant(0), constant(1)
    product_limit = constant((1 << (TOKEN_PRODUCT_LIMIT_BITS - 1)) - 1)
    out_limit = splat(builder.sub(builder.shl(_i64(1), builder.sub(out_bits_value, _i64(1))), _i64(1)))
    final_shift = TOKEN_GUARD_BITS + TOKEN_MANTISSA_BITS
    with cgutils.for_range(builder, users_value) as user_loop:
        user = user_loop.index
        mantissa = splat(load(at(scales_arr, scales_stride, user, _i64(0), _i64)))
        exponent = load(at(scales_arr, scales_stride, user, _i64(1), _i64))
        user_shift = splat(builder.sub(exponent, _i64(TOKEN_GUARD_BITS)))
        with cgutils.for_range(builder, blocks_value) as block_loop:
            kept = builder.mul(block_loop.index, _i64(TILE_ROWS))
            row = builder.add(column_value, kept)
            even, odd = (load(at(totals_arr, totals_stride, user, builder.add(kept, _i64(start)), lanes))
                         for start in (0, half))
            sums = builder.shuffle_vector(even, odd, order)
            shift = builder.add(load(at(shifts_arr, _i64(0), _i64(0), row, rows)), user_shift)
            right = _vector_max(builder, shift, zero)
            left = _vector_max(builder, builder.sub(zero, shift), zero)
            rounding = builder.lshr(builder.shl(one, right), one)
            scaled = builder.shl(builder.ashr(builder.add(sums, rounding), right), left)
            guarded = _vector_min(builder, _vector_max(builder, scaled, builder.sub(zero, product_limit)),
                                  product_limit)
            value = builder.ashr(builder.add(builder.mul(guarded, mantissa), constant(1 << (final_shift - 1))),
                                 constant(final_shift))
            value = builder.add(value, load(at(bias_arr, _i64(0), _i64(0), row, rows)))
            value = _vector_min(builder, _vector_max(builder, value, builder.sub(zero, out_limit)), out_limit)
            builder.store(value, at(out_arr, out_stride, user, row, rows)).align = 8


# -- the row-block kernel -------------------------------------------------------------------------

def _rows_amx(cfg, xs, corrections, data, multipliers, quads, nibbles, offset, parts, acc, shifts, bias, scales,
              out_bits):
    """acc[u, 16 block + r] = sum_g m[block, g, r] * (P_ugr - corr[c, u, g, r or 0]) for every row
    block and every user u < acc.shape[0]; xs holds the users padded to a multiple of 16 with zero
    rows. Row blocks go in pairs; the pairs are cut into `parts` runs (prange), each configuring
    its thread's tiles once per call, not per block. Arguments otherwise as `matvec`'s vpdpbusd kernel,
    cfg = `tile_config(W)`.

    A run is a stream of tasks, (pair, pass of up to 32 users, group) in that order; each step
    multiplies one task and combines the one before (`_group_products`), so that the combination,
    and at the end of a pair its requantization or copy, runs while the next task's tile products
    do. Given row shifts (shifts.size > 0: `NO_ROWS` otherwise), acc receives instead each sum
    requantized (`matvec._requantize` with shifts, bias, user u's scales[u] and out_bits) as a
    pair's sums leave the kernel: no int64 sums are written to memory and read back, and acc must
    then have exactly one column per row (docs/benchmarks.md)."""
    shared = corrections.shape[0] == 1
    symmetric = corrections.shape[3] == 1         # no zero points: one correction, offset * sum x, for all rows
    users, padded_users = acc.shape[0], xs.shape[0]
    blocks, groups = data.shape[0], multipliers.shape[1]
    k_quads = np.int64(cfg[_CONFIG_ROWS])           # tile 0 is a B tile: one row per quad of a product
    steps = np.int64(quads) // k_quads
    pairs = (blocks + 1) // PASS_BLOCKS
    pass_users = PASS_TILES * TILE_ROWS
    requantizing = shifts.size > 0
    for part in prange(parts):
        # the pair's sums, contiguous: acc's rows for one block are a row of acc apart (one L1 set)
        totals = np.empty((users, PASS_BLOCKS * TILE_ROWS), dtype=np.int64)
        # one task's int32 products: [block][user of a pass][row]
        sums = np.empty((PASS_BLOCKS * PASS_TILES * TILE_ROWS, TILE_ROWS), dtype=np.int32)
        _load_tile_config(cfg)
        end_pair = (part + 1) * pairs // parts
        # the task multiplied (pair, first user of its pass, group), counted on as an odometer (no
        # divisions in a loop of thousands of steps), and the one combined (group -1: none yet)
        pair, first, group = part * pairs // parts, 0, 0
        combined_pair, combined_first, combined_group = pair, 0, -1
        while pair < end_pair or combined_group >= 0:
            multiplying = pair < end_pair
            first_block = min(PASS_BLOCKS * pair, blocks - 1)     # (past the end: codes that stand in)
            last_block = min(first_block + 1, blocks - 1)
            # the next pair's blocks, whose codes the first user pass prefetches as it goes
            next0, next1 = min(first_block + 2, blocks - 1), min(last_block + 2, blocks - 1)
            combined_first_block = PASS_BLOCKS * combined_pair
            combined_last_block = min(combined_first_block + 1, blocks - 1)
            c0 = 0 if shared else combined_first_block
            c1 = 0 if shared else combined_last_block
            # the combined task is its pair's last: then its pair's sums are complete
            finishing = combined_group == groups - 1 and combined_first + pass_users >= padded_users
            arguments = (data[first_block], data[last_block], data[next0], data[next1], xs,
                         multipliers[combined_first_block], multipliers[combined_last_block], corrections[c0],
                         corrections[c1], sums, totals, acc, shifts, bias, scales, first,
                         group if multiplying else -1, last_block > first_block,
                         multiplying and first == 0 and first_block + 2 < blocks, combined_first, combined_group,
                         combined_last_block > combined_first_block, k_quads, steps, users, offset,
                         combined_first_block * TILE_ROWS if finishing and requantizing else -1, out_bits)
            if symmetric and nibbles:
                _signed_nibbles_pass(*arguments)
            elif symmetric:
                _signed_bytes_pass(*arguments)
            elif nibbles:
                _nibbles_pass(*arguments)
            else:
                _bytes_pass(*arguments)
            if finishing and not requantizing:
                # totals hold each block's even rows, then its odd rows (the combination's int64 lane pairs)
                half = TILE_ROWS // 2
                for b in range(combined_last_block - combined_first_block + 1):
                    at, kept = (combined_first_block + b) * TILE_ROWS, TILE_ROWS * b
                    for u in range(users):
                        for i in range(half):
                            acc[u, at + 2 * i] = totals[u, kept + i]
                            acc[u, at + 2 * i + 1] = totals[u, kept + half + i]
            if multiplying:
                combined_pair, combined_first, combined_group = pair, first, group
                group += 1
                if group == groups:
                    group, first = 0, first + pass_users
                    if first >= padded_users:
                        first, pair = 0, pair + 1
            else:
                combined_group = -1
        _release_tiles()


# `_rows_amx`'s requantizing arguments when it is to leave the sums
NO_ROWS, NO_SCALES = np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=np.int64)
_KERNELS = {}
if AMX:
    _KERNELS[False], _KERNELS[True] = serial_and_parallel(_rows_amx)


def rows_amx(xs: np.ndarray, corrections: np.ndarray, data: np.ndarray, multipliers: np.ndarray, group_width: int,
             nibbles: bool, offset: int, acc: np.ndarray, parallel: bool) -> None:
    """Fill acc int64 [users, row blocks * 16] from xs int8 [users, groups * W], the multipliers
    uint8 [row blocks, groups, 48] (`PackedMatrix.multiplier_bytes`) and the corrections int32
    [1 or row blocks, users, groups, 16 or 1] (`matvec._prepare`), as the vpdpbusd kernel;
    `offset` is the one added to the codes (8 for nibbles, 128 for bytes: `matvec.pack_matrix`)."""
    assert AMX
    users = xs.shape[0]
    padded = -(-users // TILE_ROWS) * TILE_ROWS
    if padded != users:
        xs = np.concatenate([xs, np.zeros((padded - users, xs.shape[1]), dtype=np.int8)])
    parts = get_num_threads() if parallel else 1
    _KERNELS[parallel](tile_config(group_width), np.ascontiguousarray(xs), corrections, data, multipliers,
                       group_width // QUAD, nibbles, offset, parts, acc, NO_ROWS, NO_ROWS, NO_SCALES, 0)
