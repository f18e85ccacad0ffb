"""§3 matvec: weight codes times an integer activation vector, exact, then requantized.

For speed on a CPU the die's codes are repacked once at load into the layout the kernel streams.
Rows go in blocks of R = ROW_BLOCK (16 with AVX-512: one 32-bit lane per row of a 512-bit vector;
8 otherwise, 256-bit); each row is cut into its scale groups (one group per row for per-channel
scales), each group zero-padded to a width W that is a multiple of 16. Codes are stored unsigned,
u = c + offset (offset 8 for codes of <= 4 bits, 128 for wider ones), so that they are the unsigned
operand of a u8 x s8 dot product: within a block, 4R bytes hold 4 consecutive columns ("a quad")
of each of the R rows, byte 4r + k = row r, column k of the quad. 4-bit codes put two quads in one
chunk of 4R bytes (the even quad in the low nibbles, the next one in the high nibbles).

One `vpdpbusd` then adds, for each of the R rows, the 4 products of a quad with the 4 broadcast
activations: a row block's per-group partial sums P_ig stay in int32 vector lanes, one per row,
with no horizontal sum, and the group's multiplier is applied once per group to R rows at a time
(a 32 x 32 -> 64-bit multiply into int64 lanes); multipliers are stored in 3 bytes each (§1.3: at
most 2^23), a quarter less to stream than int32. The offset and any zero point are removed
exactly, once per group, through the group's activation sum: P_ig = sum u x - (offset + z_ig) sum x.
Several users' vectors (`matvec_batch`) pass over each block while its codes are in L1, four at a
time sharing every loaded and unpacked code vector.

That path needs int8 activations (|x| <= 128) and a CPU with AVX-512 VNNI or AVX-VNNI (numba
reaches the instruction through an LLVM intrinsic; its auto-vectoriser does not emit it); anything
else (int16 activations, another CPU) runs the same layout through a portable int64 kernel. Both
give the same integers (docs/arithmetic.md §3.1 for the bounds). The packing is a software detail;
the arithmetic (docs/arithmetic.md §3) is the die's codes.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import FunctionType

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import config, get_num_threads, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from hardwire.arithmetic import TOKEN_GUARD_BITS, TOKEN_MANTISSA_BITS, TOKEN_PRODUCT_LIMIT_BITS, rshift_round, saturate
from hardwire.golden import amx
from hardwire.golden import multipliers as packed_multipliers
from hardwire.golden.builds import serial_and_parallel
from hardwire.golden.multipliers import MULTIPLIER_BYTES


def _cpu_features() -> dict:
    """The features of the CPU numba compiles for; none when it targets another (or a generic)
    CPU, which keeps the portable kernel."""
    return {} if config.CPU_NAME is not None else dict(llvm_binding.get_host_cpu_features())


_FEATURES = _cpu_features()
# u8 x s8 dot products (vpdpbusd) on 512-bit vectors, or at least on 256-bit ones
_ZMM = bool(_FEATURES.get("avx512vnni") and _FEATURES.get("avx512bw"))
VNNI = bool(_ZMM or (_FEATURES.get("avx512vnni") and _FEATURES.get("avx512vl")) or _FEATURES.get("avxvnni"))

ROW_BLOCK = 16 if _ZMM else 8   # rows per block: one int32 lane each in a 512-bit (256-bit) vector
PARTIALS = (4, 2)            # independent partial sums per user: one user alone, or in a tile of users
QUAD = 4                     # columns one 32-bit lane sums per u8 x s8 instruction
CHUNK_BYTES = ROW_BLOCK * QUAD
GROUP_ALIGN = 16             # W is padded to this: the kernel steps 4 quads at a time
NIBBLE_OFFSET = 8
BYTE_OFFSET = 128
# The kernels ask for the codes this many bytes ahead of those they read (and for the multipliers
# as far ahead in their own stream): one thread's hardware prefetch alone kept the 49 kernels of a
# w4g32 token step at ~9 GB/s; with these requests ~12 (docs/benchmarks.md, golden decode, "Batch 1").
PREFETCH_BYTES = 2048
CACHE_LINE = 64
PARALLEL_MIN_WEIGHTS = 1 << 18   # smaller matrices run on one thread: a parallel launch costs more
# P_ig = sum over W columns of u (< 2^8) times x (|x| <= 2^7) must fit an int32 lane.
FAST_MAX_GROUP_WIDTH = (1 << 31) // (255 * 128) // GROUP_ALIGN * GROUP_ALIGN


@dataclass
class PackedMatrix:
    """A weight matrix ready for `matvec` (rows may be several matrices stacked, e.g. q|k|v)."""

    rows: int
    cols: int
    group: int               # the die's group width (cols for per-channel scales)
    group_width: int         # W, a multiple of GROUP_ALIGN; columns of x the kernel reads = groups * W
    groups: int
    nibbles: bool
    data: np.ndarray         # uint8 [row blocks, groups * W * R (/ 2 for nibbles)], the layout above
    offset: int              # added to every code to make it unsigned: 8 for nibbles, else 128
    zeros: np.ndarray        # int32 [row blocks, groups, R] zero points ([0, 0, R] when symmetric)
    multiplier_bytes: np.ndarray  # uint8 [row blocks, groups, 3R]: §3 m_{i,g} in 3 bytes (`multipliers.pack`)
    shifts: np.ndarray       # int64 [rows]                    (§3 k_i)
    bias: np.ndarray         # int64 [rows], in the output's integer scale (0 without bias)

    @property
    def padded_cols(self) -> int:
        return self.groups * self.group_width

    @property
    def row_blocks(self) -> int:
        return self.data.shape[0]

    @property
    def fast(self) -> bool:
        """Whether the vpdpbusd kernels can take it (given int8 activations)."""
        return VNNI and self.group_width <= FAST_MAX_GROUP_WIDTH

    @property
    def large(self) -> bool:
        """Whether it is worth splitting over threads."""
        return self.rows * self.padded_cols >= PARALLEL_MIN_WEIGHTS

    @property
    def bytes(self) -> int:
        """Bytes a matvec streams: codes, multipliers, zero points."""
        return int(self.data.nbytes + self.multiplier_bytes.nbytes + self.zeros.nbytes)


def _blocked(values: np.ndarray, blocks: int) -> np.ndarray:
    """[rows, groups] -> int32 [row blocks, groups, R], padding rows with zeros."""
    rows, groups = values.shape
    padded = np.zeros((blocks * ROW_BLOCK, groups), dtype=np.int32)
    padded[:rows] = values
    return np.ascontiguousarray(padded.reshape(blocks, ROW_BLOCK, groups).transpose(0, 2, 1))


def pack_matrix(codes: np.ndarray, zeros: np.ndarray | None, bits: int, group: int | None,
                multipliers: np.ndarray, shifts: np.ndarray, bias: np.ndarray | None = None) -> PackedMatrix:
    """Repack signed codes [rows, cols] (and zero points [rows, groups]) for `matvec`."""
    rows, cols = codes.shape
    group_cols = cols if group is None else group
    groups = -(-cols // group_cols)
    width = -(-group_cols // GROUP_ALIGN) * GROUP_ALIGN
    blocks = -(-rows // ROW_BLOCK)
    nibbles = bits <= 4
    offset = NIBBLE_OFFSET if nibbles else BYTE_OFFSET
    # unsigned codes [row blocks, rows of a block, groups, W]; padding holds u = 0 (x is 0 there too)
    unsigned = np.zeros((blocks * ROW_BLOCK, groups, width), dtype=np.uint8)
    for g in range(groups):
        part = codes[:, g * group_cols:(g + 1) * group_cols].astype(np.int16) + offset
        unsigned[:rows, g, :part.shape[1]] = part
    # -> [block, group, quad, row, column of the quad]
    quads = unsigned.reshape(blocks, ROW_BLOCK, groups, width // QUAD, QUAD).transpose(0, 2, 3, 1, 4)
    if nibbles:
        data = quads[:, :, 0::2] | (quads[:, :, 1::2] << 4)
    else:
        data = quads
    zero_points = (np.zeros((0, 0, ROW_BLOCK), dtype=np.int32) if zeros is None
                   else _blocked(np.asarray(zeros, dtype=np.int32), blocks))
    bias = np.zeros(rows, dtype=np.int64) if bias is None else np.asarray(bias, dtype=np.int64)
    multipliers = np.asarray(multipliers, dtype=np.int64)
    if multipliers.size and (multipliers.min() < 0 or multipliers.max() >= 1 << (8 * MULTIPLIER_BYTES)):
        raise ValueError(f"a multiplier outside [0, 2^{8 * MULTIPLIER_BYTES}): §1.3 multipliers are at most 2^23")
    return PackedMatrix(rows, cols, group_cols, width, groups, nibbles,
                        np.ascontiguousarray(data.reshape(blocks, -1)), offset, zero_points,
                        packed_multipliers.pack(_blocked(multipliers, blocks)),
                        np.ascontiguousarray(shifts, dtype=np.int64), bias)


def stack(matrices: list[PackedMatrix]) -> PackedMatrix:
    """One matrix whose rows are those of `matrices` (same input, same packing)."""
    first = matrices[0]
    assert can_stack(matrices)
    return PackedMatrix(sum(m.rows for m in matrices), first.cols, first.group, first.group_width, first.groups,
                        first.nibbles, np.concatenate([m.data for m in matrices]), first.offset,
                        np.concatenate([m.zeros for m in matrices]),
                        np.concatenate([m.multiplier_bytes for m in matrices]),
                        np.concatenate([m.shifts for m in matrices]), np.concatenate([m.bias for m in matrices]))


def can_stack(matrices: list[PackedMatrix]) -> bool:
    """Same input layout, and every matrix but the last fills its row blocks."""
    first = matrices[0]
    return (all((m.cols, m.group_width, m.groups, m.nibbles, m.zeros.shape[0] > 0) ==
                (first.cols, first.group_width, first.groups, first.nibbles, first.zeros.shape[0] > 0)
                for m in matrices)
            and all(m.rows % ROW_BLOCK == 0 for m in matrices[:-1]))


# -- the row-block kernels ------------------------------------------------------------------------

USER_TILE = 4                # users whose sums share each loaded (and unpacked) code vector


def _block_sums_vnni(nibbles: bool, users: int, prefetch: int = PREFETCH_BYTES):
    """An intrinsic: for `users` consecutive users u from `first` and one row block,
    acc[u, R block + r] = sum_g m[g, r] * (P_ugr - corr[u, g, r]), each P summed by vpdpbusd in
    int32 lanes (one per row of the block). Every code vector is loaded (and unpacked) once for
    all the users; each user keeps PARTIALS independent partial sums per group so that the
    instruction's latency overlaps. Arguments: (codes of the block, xs [users, W * groups] int8,
    mults [groups, R], corr [users, groups, R or 1] int32 (1: the same correction for every
    row), acc [users, rows], first, block, groups, quads per group)."""

    @intrinsic
    def block_sums(typingctx, codes, xs, mults, corr, acc, first, block, groups, quads):
        def codegen(context, builder, signature, args):
            arrays = [context.make_array(t)(context, builder, v) for t, v in zip(signature.args[:5], args[:5])]
            first_user, block_index, groups_value, quads_value = args[5:]
            i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
            rows, partial_count = ROW_BLOCK, PARTIALS[0] if users == 1 else PARTIALS[1]
            lanes32, bytes32 = ir.VectorType(i32, rows), ir.VectorType(i8, 4 * rows)
            lanes64 = ir.VectorType(i64, rows)
            dpbusd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(lanes32, [lanes32] * 3),
                                                    f"llvm.x86.avx512.vpdpbusd.{32 * rows}")
            byte_ptr = ir.PointerType(i8)
            prefetch_fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]), "llvm.prefetch.p0")

            def prefetch_lines(ptr, offset, count):   # a read, kept in every cache level, of data
                for line in range(count if prefetch else 0):
                    builder.call(prefetch_fn, [builder.gep(ptr, [builder.add(offset, i64(CACHE_LINE * line))]),
                                               i32(0), i32(3), i32(1)])

            def row_start(array, index):            # byte address of array[index] (C-contiguous rows)
                stride = cgutils.unpack_tuple(builder, array.strides)[0]
                return builder.gep(builder.bitcast(array.data, byte_ptr), [builder.mul(index, stride)])

            def load(ptr, offset, typ, align=1):
                value = builder.load(builder.bitcast(builder.gep(ptr, [offset]), ir.PointerType(typ)))
                value.align = align
                return value

            codes_ptr = builder.bitcast(arrays[0].data, byte_ptr)
            mult_ptr = builder.bitcast(arrays[2].data, byte_ptr)
            user_index = [builder.add(first_user, i64(u)) for u in range(users)]
            x_ptrs = [row_start(arrays[1], u) for u in user_index]
            corr_ptrs = [row_start(arrays[3], u) for u in user_index]
            corr_group_stride = cgutils.unpack_tuple(builder, arrays[3].strides)[1]
            corr_lanes = cgutils.unpack_tuple(builder, arrays[3].shape)[2]
            corr_shared = builder.icmp_unsigned("==", corr_lanes, i64(1))
            acc_bytes = i64(ROW_BLOCK * 8)             # one row block of int64 accumulators
            acc_ptrs = [builder.gep(row_start(arrays[4], u), [builder.mul(block_index, acc_bytes)]) for u in user_index]

            def broadcast(word):                        # one i32 in every lane
                return builder.shuffle_vector(builder.insert_element(ir.Constant(lanes32, None), word, i32(0)),
                                              ir.Constant(lanes32, None), ir.Constant(lanes32, [0] * rows))

            def broadcast_quad(x_ptr, quad_index):      # x[4q:4q+4] as one i32
                return broadcast(load(x_ptr, builder.mul(quad_index, i64(QUAD)), i32))

            totals = [cgutils.alloca_once_value(builder, ir.Constant(lanes64, [0] * rows)) for _ in range(users)]
            partials = [[cgutils.alloca_once(builder, lanes32) for _ in range(partial_count)] for _ in range(users)]
            low_mask = ir.Constant(bytes32, [15] * (4 * rows))
            with cgutils.for_range(builder, groups_value) as group_loop:
                g = group_loop.index
                for user_partials in partials:
                    for p in user_partials:
                        builder.store(ir.Constant(lanes32, [0] * rows), p)
                first_quad = builder.mul(g, quads_value)
                with cgutils.for_range(builder, builder.udiv(quads_value, i64(4))) as quad_loop:
                    quad = builder.add(first_quad, builder.mul(quad_loop.index, i64(4)))
                    step_bytes = (2 if nibbles else 4) * CHUNK_BYTES    # codes this iteration reads
                    read_at = builder.mul(builder.udiv(quad, i64(2 if nibbles else 1)), i64(CHUNK_BYTES))
                    prefetch_lines(codes_ptr, builder.add(read_at, i64(prefetch)), max(1, step_bytes // CACHE_LINE))
                    if nibbles:                         # two chunks, each a low and a high quad
                        vectors = []
                        for c in range(2):
                            chunk = builder.add(builder.udiv(quad, i64(2)), i64(c))
                            packed = load(codes_ptr, builder.mul(chunk, i64(CHUNK_BYTES)), bytes32)
                            vectors.append(builder.bitcast(builder.and_(packed, low_mask), lanes32))
                            high = builder.lshr(packed, ir.Constant(bytes32, [4] * (4 * rows)))
                            vectors.append(builder.bitcast(builder.and_(high, low_mask), lanes32))
                    else:
                        vectors = [load(codes_ptr, builder.mul(builder.add(quad, i64(t)), i64(CHUNK_BYTES)), lanes32)
                                   for t in range(4)]
                    for t, values in enumerate(vectors):
                        q = builder.add(quad, i64(t))
                        for u in range(users):
                            p = partials[u][t % partial_count]
                            builder.store(builder.call(dpbusd, [builder.load(p), values,
                                                                broadcast_quad(x_ptrs[u], q)]), p)
                mult_at = builder.mul(g, i64(ROW_BLOCK * MULTIPLIER_BYTES))
                # as far ahead as the codes: a group has 3 bytes of multiplier a row for W (W / 2) of codes
                row_code_bytes = builder.mul(quads_value, i64(QUAD // 2 if nibbles else QUAD))
                prefetch_lines(mult_ptr, builder.add(mult_at, builder.udiv(i64(prefetch * MULTIPLIER_BYTES),
                                                                           row_code_bytes)), 1)
                mult = builder.zext(packed_multipliers.spread(builder, builder.gep(mult_ptr, [mult_at]), rows), lanes64)
                corr_at = builder.mul(g, corr_group_stride)
                for u in range(users):
                    p = partials[u]
                    sums = builder.load(p[0])
                    for more in p[1:]:
                        sums = builder.add(sums, builder.load(more))
                    with builder.if_else(corr_shared) as (one_for_all_rows, one_per_row):
                        with one_for_all_rows:
                            shared_value = broadcast(load(corr_ptrs[u], corr_at, i32, 4))
                            shared_block = builder.basic_block
                        with one_per_row:
                            row_values = load(corr_ptrs[u], corr_at, lanes32, 4)
                            row_block = builder.basic_block
                    corr_value = builder.phi(lanes32)
                    corr_value.add_incoming(shared_value, shared_block)
                    corr_value.add_incoming(row_values, row_block)
                    exact = builder.sub(sums, corr_value)
                    builder.store(builder.add(builder.load(totals[u]), builder.mul(mult, builder.sext(exact, lanes64))),
                                  totals[u])
            for u in range(users):
                builder.store(builder.load(totals[u]), builder.bitcast(acc_ptrs[u], ir.PointerType(lanes64))).align = 8
            return context.get_dummy_value()

        return types.void(codes, xs, mults, corr, acc, first, block, groups, quads), codegen

    return block_sums


@njit(cache=True, nogil=True, inline="always")
def _block_sums_portable(codes, x, mults, corr, acc, groups, quads, nibbles):
    """The same sums as the vpdpbusd kernel for one user, in int64 (any activation width, any CPU)."""
    partial = np.zeros(ROW_BLOCK, dtype=np.int64)
    total = np.zeros(ROW_BLOCK, dtype=np.int64)
    for g in range(groups):
        partial[:] = 0
        for q in range(g * quads, (g + 1) * quads):
            base = (q // 2 if nibbles else q) * CHUNK_BYTES
            shift = 4 * (q % 2) if nibbles else 0
            for r in range(ROW_BLOCK):
                for k in range(QUAD):
                    u = np.int64(codes[base + r * QUAD + k])
                    if nibbles:
                        u = (u >> shift) & 15
                    partial[r] += u * np.int64(x[q * QUAD + k])
        for r in range(ROW_BLOCK):
            mult = np.int64(0)
            for k in range(MULTIPLIER_BYTES):
                mult |= np.int64(mults[g, ROW_BLOCK * k + r]) << (8 * k)     # `multipliers.pack`
            total[r] += mult * (partial[r] - corr[g, r if corr.shape[1] > 1 else 0])
    for r in range(ROW_BLOCK):
        acc[r] = total[r]


_vnni_bytes, _vnni_nibbles = _block_sums_vnni(False, 1), _block_sums_vnni(True, 1)
_vnni_bytes_tile, _vnni_nibbles_tile = _block_sums_vnni(False, USER_TILE), _block_sums_vnni(True, USER_TILE)


# Every user's vector through every row block: a block's codes (a few KiB) are read from memory
# once and stay in L1 while each user's x passes over them, as the chip's pipeline reads its ROM
# once per token of each user. corrections [1 or row blocks, users, groups, R or 1]: one block's
# worth shared by all blocks when there are no zero points (`_prepare`).
def _rows_vnni(xs, corrections, data, multipliers, quads, nibbles, acc):
    shared = corrections.shape[0] == 1
    users, groups = xs.shape[0], multipliers.shape[1]
    tiled = users - users % USER_TILE
    for block in prange(data.shape[0]):
        c = np.int64(0) if shared else np.int64(block)   # one integer type: a prange index may be unsigned
        for first in range(0, tiled, USER_TILE):
            if nibbles:
                _vnni_nibbles_tile(data[block], xs, multipliers[block], corrections[c], acc, first, block, groups,
                                   quads)
            else:
                _vnni_bytes_tile(data[block], xs, multipliers[block], corrections[c], acc, first, block, groups,
                                 quads)
        for user in range(tiled, users):
            if nibbles:
                _vnni_nibbles(data[block], xs, multipliers[block], corrections[c], acc, user, block, groups, quads)
            else:
                _vnni_bytes(data[block], xs, multipliers[block], corrections[c], acc, user, block, groups, quads)


def _rows_portable(xs, corrections, data, multipliers, quads, nibbles, acc):
    shared = corrections.shape[0] == 1
    for block in prange(data.shape[0]):
        c = np.int64(0) if shared else np.int64(block)   # one integer type: a prange index may be unsigned
        for b in range(xs.shape[0]):
            _block_sums_portable(data[block], xs[b], multipliers[block], corrections[c, b],
                                 acc[b, block * ROW_BLOCK:(block + 1) * ROW_BLOCK], multipliers.shape[1], quads,
                                 nibbles)


_KERNELS = {}
for _name, _body in (("vnni", _rows_vnni), ("portable", _rows_portable)):
    if _name == "vnni" and not VNNI:
        continue
    _KERNELS[_name, False], _KERNELS[_name, True] = serial_and_parallel(_body)


@njit(cache=True, nogil=True, inline="always")
def _requantize(acc, shift, mantissa, exponent, bias, out_bits):
    guarded = saturate(rshift_round(acc, shift + exponent - TOKEN_GUARD_BITS), TOKEN_PRODUCT_LIMIT_BITS)
    return saturate(rshift_round(guarded * mantissa, TOKEN_GUARD_BITS + TOKEN_MANTISSA_BITS) + bias, out_bits)


@njit(cache=True, nogil=True, inline="always")
def _corrections_shape(zeros, users, groups):
    """[1, users, groups, 1] without zero points (one offset for every row), else
    [row blocks, users, groups, R]."""
    if zeros.shape[0] == 0:
        return (1, users, groups, 1)
    return (zeros.shape[0], users, groups, ROW_BLOCK)


@njit(cache=True, nogil=True)
def _fill_corrections(sums, offset, zeros, corrections):
    """corrections[block, b, g, r] = (offset + z_gr) * sum_{j in g} x_bj, in the array's own type."""
    for block in range(corrections.shape[0]):
        for b in range(corrections.shape[1]):
            for g in range(corrections.shape[2]):
                for r in range(corrections.shape[3]):
                    zero = np.int64(0) if zeros.shape[0] == 0 else np.int64(zeros[block, g, r])
                    corrections[block, b, g, r] = (offset + zero) * sums[b, g]


@njit(cache=True, nogil=True)
def _prepare(xs, group, width, groups, offset, zeros):
    """The kernel's inputs for users' vectors xs [users, cols]: each x with each group of `group`
    columns zero-padded to `width` (int64 [users, groups * W]); the corrections
    (offset + z_ig) * sum_{j in g} x_bj, the code offset and zero points removed exactly
    ([row blocks, users, groups, R], or [1, users, groups, 1] without zero points: one value for all
    rows); and whether every x fits int8 (the vpdpbusd path's signed operand)."""
    users, cols = xs.shape
    padded = np.zeros((users, groups * width), dtype=np.int64)
    sums = np.zeros((users, groups), dtype=np.int64)
    small = True
    for b in range(users):
        for g in range(groups):
            first = g * group
            for j in range(min(group, cols - first)):
                v = xs[b, first + j]
                padded[b, g * width + j] = v
                sums[b, g] += v
                small = small and -128 <= v <= 127
    corrections = np.empty(_corrections_shape(zeros, users, groups), dtype=np.int64)
    _fill_corrections(sums, offset, zeros, corrections)
    return padded, corrections, small


def _rows_to_int8(xs, padded, outside):
    """padded[b, :cols] = xs[b] as int8, and outside[b] whether some value of it does not fit int8
    (then that row of padded is not its values); one branch-free pass a row, which vectorises."""
    for b in prange(xs.shape[0]):
        source, target = xs[b], padded[b]
        low, high = np.int64(0), np.int64(0)
        for j in range(source.size):
            value = source[j]
            low, high = min(low, value), max(high, value)
            target[j] = value
        outside[b] = low < -128 or high > 127


_rows_to_int8, _rows_to_int8_parallel = serial_and_parallel(_rows_to_int8)


@njit(cache=True, nogil=True)
def _prepare_int8(xs, group, width, groups, offset, zeros, padded_users, corrected, split):
    """`_prepare` for the vpdpbusd and AMX kernels, in their types: xs int8 [padded_users, groups * W]
    (users past xs's rows are zero: an AMX user tile is 16 users) and the corrections in int32, or
    fits = False (and empty arrays) when some x does not fit int8. One pass, no int64 copy.
    `corrected` false: the kernel reads no corrections (AMX without zero points multiplies the signed
    codes), and they are [1, 0, 0, 1], not summed (the group sums were half of this function's time).
    `split`: the users' rows are converted on all threads (`_rows_to_int8`'s parallel build)."""
    users, cols = xs.shape
    padded = np.zeros((padded_users, groups * width), dtype=np.int8)
    outside = np.zeros(users, dtype=np.bool_)
    if width == group:
        if split:
            _rows_to_int8_parallel(xs, padded, outside)
        else:
            _rows_to_int8(xs, padded, outside)
    else:                       # groups of fewer than W columns (padded): copied group by group below
        for b in range(users):
            low, high = np.int64(0), np.int64(0)
            for j in range(cols):
                low, high = min(low, xs[b, j]), max(high, xs[b, j])
            outside[b] = low < -128 or high > 127
    if outside.any():
        return np.empty((0, 0), dtype=np.int8), np.empty((0, 0, 0, 0), dtype=np.int32), False
    if width != group:
        for b in range(users):
            source, target = xs[b], padded[b]
            for g in range(groups):
                first = g * group
                for j in range(first, min(first + group, cols)):
                    target[g * width + j - first] = source[j]
    if not corrected:
        return padded, np.empty((1, 0, 0, 1), dtype=np.int32), True
    sums = np.zeros((users, groups), dtype=np.int64)
    for b in range(users):
        source = xs[b]
        for g in range(groups):
            total = np.int64(0)
            for j in range(g * group, min(g * group + group, cols)):
                total += source[j]
            sums[b, g] = total
    corrections = np.empty(_corrections_shape(zeros, users, groups), dtype=np.int32)
    _fill_corrections(sums, offset, zeros, corrections)
    return padded, corrections, True


@njit(cache=True, nogil=True)
def _prepare_batch(xs, group, width, groups, offset, zeros, tiles, split):
    """`_prepare_int8` for the kernel a batch goes to: tile products (`tiles`) take users in 16s
    and, where the codes have no zero points, multiply them signed and read no corrections."""
    users = xs.shape[0]
    padded_users = -(-users // amx.TILE_ROWS) * amx.TILE_ROWS if tiles else users
    return _prepare_int8(xs, group, width, groups, offset, zeros, padded_users, not (tiles and zeros.shape[0] == 0),
                         split)


def threads_now() -> int:
    """numba's thread count for the calling thread. Asking costs a few microseconds (a lock and
    a thread-local read), so a token step asks once and hands the answer to its 49 products
    (`threads=`); a process started with one thread never asks."""
    return get_num_threads() if config.NUMBA_NUM_THREADS > 1 else 1


def _splits_over_threads(matrix: PackedMatrix, threads: int | None) -> bool:
    """Whether `matrix` is large enough to split over the threads, and there are several."""
    return matrix.large and (threads_now() if threads is None else threads) > 1


def _sums(matrix: PackedMatrix, xs: list[np.ndarray] | np.ndarray, threads: int | None = None) -> np.ndarray:
    """int64 [users, row blocks * R]: each user's accumulators (`accumulate`)."""
    stacked = np.asarray(xs[0], dtype=np.int64).reshape(1, -1) if len(xs) == 1 else np.asarray(xs, dtype=np.int64)
    users = stacked.shape[0]
    width = matrix.row_blocks * ROW_BLOCK
    acc = np.empty((users, width), dtype=np.int64)
    parallel = _splits_over_threads(matrix, threads)
    quads = matrix.group_width // QUAD
    fits_int8 = tiles = False
    if matrix.fast:
        tiles = amx.pays(users, ROW_BLOCK)
        small, removed, fits_int8 = _prepare_batch(stacked, matrix.group, matrix.group_width, matrix.groups,
                                                   matrix.offset, matrix.zeros, tiles, parallel)
    if fits_int8 and tiles:     # the same sums as tile products, for many users at once
        amx.rows_amx(small, removed, matrix.data, matrix.multiplier_bytes, matrix.group_width, matrix.nibbles,
                     matrix.offset, acc, parallel)
    elif fits_int8:
        _KERNELS["vnni", parallel](small, removed, matrix.data, matrix.multiplier_bytes, quads, matrix.nibbles, acc)
    else:
        padded, removed, _ = _prepare(stacked, matrix.group, matrix.group_width, matrix.groups, matrix.offset,
                                      matrix.zeros)
        _KERNELS["portable", parallel](padded, removed, matrix.data, matrix.multiplier_bytes, quads, matrix.nibbles,
                                       acc)
    return acc


def accumulate(matrix: PackedMatrix, xs: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """int64 [users, rows]: A_i = sum_g m_ig * sum_{j in g} (c_ij - z_ig) x_j for each user's x (§3)."""
    return _sums(matrix, xs)[:, :matrix.rows]


@njit(cache=True, nogil=True)
def _finish(acc, extras, shifts, scales, bias, out_bits):
    """Each user's sums, plus extras[b] (extras [users, rows], or [0, 0]: none), requantized with
    its token scale (mu, e) = scales[b] (§3), into a new int64 [users, rows]."""
    out = np.empty((acc.shape[0], shifts.size), dtype=np.int64)
    _requantize_users(acc, extras, shifts, scales, bias, out_bits, out)
    return out


@njit(cache=True, nogil=True, parallel=True)
def _requantize_users(acc, extras, shifts, scales, bias, out_bits, out):
    """`_finish` into `out` [users, rows], which may be acc itself (each value is read before its
    own slot is written); users split over the threads."""
    for b in prange(acc.shape[0]):
        mantissa, exponent = scales[b, 0], scales[b, 1]
        if extras.shape[0]:
            for i in range(shifts.size):
                out[b, i] = _requantize(acc[b, i] + extras[b, i], shifts[i], mantissa, exponent, bias[i], out_bits)
        else:
            for i in range(shifts.size):
                out[b, i] = _requantize(acc[b, i], shifts[i], mantissa, exponent, bias[i], out_bits)


_NO_EXTRAS = np.zeros((0, 0), dtype=np.int64)


def matvec_batch(matrix: PackedMatrix, xs: list[np.ndarray] | np.ndarray, scales: list[tuple[int, int]] | np.ndarray,
                 out_bits: int, extras: list | np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """`matvec` of several users' vectors (a list, or the rows of one array), each with its own
    token scale: every row block's codes are read once for all of them. The sums are integers, so
    each result is exactly `matvec`'s. `extras[u]`, when given and not None, is added to user u's
    accumulators (`matvec`). `threads`: `threads_now()` when the caller already asked. Returns
    int64 [users, rows], row b user b's result."""
    if extras is None:
        added = _NO_EXTRAS
    elif isinstance(extras, np.ndarray):
        added = np.ascontiguousarray(extras, dtype=np.int64)
    else:
        added = np.zeros((len(xs), matrix.rows), dtype=np.int64)
        for row, extra in zip(added, extras):
            if extra is not None:
                row += extra
    scales = np.ascontiguousarray(np.asarray(scales, dtype=np.int64).reshape(len(xs), 2))
    return _finish(_sums(matrix, xs, threads), added, matrix.shifts, scales, matrix.bias, out_bits)


# One user's matvec in one compiled call: preparing x, the row-block kernel and requantizing run
# without returning to Python in between (a token step makes 49 of them; each round trip cost tens
# of microseconds). `fast` picks the vpdpbusd kernel when x fits int8 as well; otherwise the
# portable one. Built twice like the kernels, on the serial and on the parallel kernels.
def _matvec_one(x, mantissa, exponent, extra, data, multipliers, zeros, shifts, bias, group, width, offset,
                nibbles, fast, out_bits):
    acc = np.empty((1, data.shape[0] * ROW_BLOCK), dtype=np.int64)
    fits_int8 = False
    if fast:
        small, removed_small, fits_int8 = _prepare_int8(x.reshape(1, -1), group, width, multipliers.shape[1], offset,
                                                        zeros, 1, True, False)
        if fits_int8:
            _rows_fast(small, removed_small, data, multipliers, width // QUAD, nibbles, acc)
    if not fits_int8:
        padded, removed, _ = _prepare(x.reshape(1, -1), group, width, multipliers.shape[1], offset, zeros)
        _rows_portable_kernel(padded, removed, data, multipliers, width // QUAD, nibbles, acc)
    out = np.empty(shifts.size, dtype=np.int64)
    for i in range(shifts.size):
        total = acc[0, i] + (extra[i] if extra.size else 0)
        out[i] = _requantize(total, shifts[i], mantissa, exponent, bias[i], out_bits)
    return out


_ONE_USER = {}
for _parallel in (False, True):
    _scope = dict(globals(), _rows_fast=_KERNELS["vnni" if VNNI else "portable", _parallel],
                  _rows_portable_kernel=_KERNELS["portable", _parallel])
    _twin = FunctionType(_matvec_one.__code__, _scope, _matvec_one.__name__)
    # the twin on the parallel kernels needs no parallel=True of its own (it has no loop to split);
    # it is cached under its own name, as numba names a cache entry by function, not by build
    # (hardwire/golden/builds.py)
    if _parallel:
        _twin.__qualname__ = _matvec_one.__qualname__ + "_parallel"
    _ONE_USER[_parallel] = njit(nogil=True, cache=True)(_twin)
_NO_EXTRA = np.zeros(0, dtype=np.int64)
_one_user_serial, _one_user_parallel = _ONE_USER[False], _ONE_USER[True]


@njit(nogil=True)
def _no_tile_kernel(cfg, xs, corrections, data, multipliers, quads, nibbles, offset, parts, acc, shifts, bias, scales,
                    out_bits):
    """Where the tile kernel is not built (no AMX): never called, `_TILES` being false."""
    raise RuntimeError("no AMX tile kernel on this machine")


_TILES = amx.AMX and ROW_BLOCK == amx.TILE_ROWS     # the tile kernel can run (enough users: `amx.pays`)


# Several users' matvec (`matvec_batch`, no adapter terms) in one compiled call, for a batched
# step that is one compiled call itself (`forward.step_batch_compiled`): preparing the inputs, the
# kernel that `_sums` would pick and requantizing, with no return to Python. Built twice like
# `_matvec_one`, on the serial and on the parallel kernels.
def _matvec_many(xs, scales, data, multipliers, zeros, shifts, bias, group, width, offset, nibbles, fast, cfg, parts,
                 out_bits):
    users = xs.shape[0]
    acc = np.empty((users, data.shape[0] * ROW_BLOCK), dtype=np.int64)
    whole_blocks = acc.shape[1] == shifts.size     # then the outputs can take the sums' place
    fits_int8 = False
    if fast:
        tiles = _TILES and users >= amx.MIN_USERS      # `amx.pays`, AMX as found at import
        small, removed, fits_int8 = _prepare_batch(xs, group, width, multipliers.shape[1], offset, zeros, tiles,
                                                   parts > 1)
        if fits_int8 and tiles and whole_blocks:
            # the kernel requantizes each pass's sums while they are in L1 (rows filling whole blocks)
            _rows_tiles(cfg, small, removed, data, multipliers, width // QUAD, nibbles, offset, parts, acc, shifts,
                        bias, scales, out_bits)
            return acc
        if fits_int8 and tiles:
            _rows_tiles(cfg, small, removed, data, multipliers, width // QUAD, nibbles, offset, parts, acc, amx.NO_ROWS,
                        amx.NO_ROWS, amx.NO_SCALES, out_bits)
        elif fits_int8:
            _rows_fast(small, removed, data, multipliers, width // QUAD, nibbles, acc)
    if not fits_int8:
        padded, removed, _ = _prepare(xs, group, width, multipliers.shape[1], offset, zeros)
        _rows_portable_kernel(padded, removed, data, multipliers, width // QUAD, nibbles, acc)
    if not whole_blocks:
        return _finish(acc, _NO_EXTRAS, shifts, scales, bias, out_bits)
    # in place: a second [users, rows] int64 array is as large as the sums (8 MB for 32 users'
    # logits), and writing into lines the kernel just filled saves streaming a new one
    _requantize_users(acc, _NO_EXTRAS, shifts, scales, bias, out_bits, acc)
    return acc


_MANY_USERS = {}
for _parallel in (False, True):
    _scope = dict(globals(), _rows_fast=_KERNELS["vnni" if VNNI else "portable", _parallel],
                  _rows_portable_kernel=_KERNELS["portable", _parallel],
                  _rows_tiles=amx._KERNELS[_parallel] if amx.AMX else _no_tile_kernel)
    _twin = FunctionType(_matvec_many.__code__, _scope, _matvec_many.__name__)
    if _parallel:           # its own cache entry (see `_ONE_USER`)
        _twin.__qualname__ = _matvec_many.__qualname__ + "_parallel"
    _MANY_USERS[_parallel] = njit(nogil=True, cache=True)(_twin)
_many_users_serial, _many_users_parallel = _MANY_USERS[False], _MANY_USERS[True]


def compiled_fields(matrix: PackedMatrix) -> tuple:
    """`matrix` as compiled code takes it (`matvec_compiled`, `matvec_batch_compiled`): its
    arrays, its packing, whether it is large enough to split over threads and its tile
    configuration (zeros without AMX). Every matrix gives the same tuple type, so a layer's four
    fit one typed list with the other layers'."""
    tile_config = (np.array(amx.tile_config(matrix.group_width)) if _TILES and matrix.fast
                   else np.zeros(64, dtype=np.uint8))      # a writable copy: one array type for all
    return (matrix.data, matrix.multiplier_bytes, matrix.zeros, matrix.shifts, matrix.bias, np.int64(matrix.group),
            np.int64(matrix.group_width), np.int64(matrix.offset), bool(matrix.nibbles),
            bool(matrix.fast), bool(matrix.large), tile_config)


@njit(cache=True, nogil=True)
def matvec_compiled(fields, x, mantissa, exponent, threads, out_bits):
    """`matvec` from compiled code: `fields` = `compiled_fields(matrix)`, no adapter terms, split
    over the threads when `threads` > 1 and the matrix is large."""
    data, multipliers, zeros, shifts, bias, group, width, offset, nibbles, fast, large, _ = fields
    if large and threads > 1:
        return _one_user_parallel(x, mantissa, exponent, _NO_EXTRA, data, multipliers, zeros, shifts, bias, group,
                                  width, offset, nibbles, fast, out_bits)
    return _one_user_serial(x, mantissa, exponent, _NO_EXTRA, data, multipliers, zeros, shifts, bias, group, width,
                            offset, nibbles, fast, out_bits)


@njit(cache=True, nogil=True)
def matvec_batch_compiled(fields, xs, scales, threads, out_bits):
    """`matvec_batch` from compiled code: xs int64 [users, cols], scales [users, (mu, e)], no
    adapter terms, split over the threads when `threads` > 1 and the matrix is large."""
    data, multipliers, zeros, shifts, bias, group, width, offset, nibbles, fast, large, cfg = fields
    if large and threads > 1:
        return _many_users_parallel(xs, scales, data, multipliers, zeros, shifts, bias, group, width, offset, nibbles,
                                    fast, cfg, threads, out_bits)
    return _many_users_serial(xs, scales, data, multipliers, zeros, shifts, bias, group, width, offset, nibbles, fast,
                              cfg, 1, out_bits)


def matvec(matrix: PackedMatrix, x: np.ndarray, scale: tuple[int, int], out_bits: int,
           extra: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """§3: acc_i = sum_g m_ig * sum_{j in g} (c_ij - z_ig) x_j;
    a_i = sat59(round(acc_i * 2^-(k_i + e - 7))); y_i = sat_out(round(a_i * mu * 2^-10) + b_i).

    x: integer vector of length `matrix.cols` with token scale (mu, e) (§2.2). `extra` (int64
    [rows]), when given, is added to acc before requantizing: a patch's adapter terms (§11).
    `threads`: `threads_now()` when the caller already asked. Returns int64 [rows]; the same
    integers as `matvec_batch` of x alone."""
    mantissa, exponent = scale
    one_user = _ONE_USER[_splits_over_threads(matrix, threads)]
    return one_user(np.ascontiguousarray(x, dtype=np.int64), np.int64(mantissa), np.int64(exponent),
                    _NO_EXTRA if extra is None else np.ascontiguousarray(extra, dtype=np.int64),
                    matrix.data, matrix.multiplier_bytes, matrix.zeros, matrix.shifts, matrix.bias,
                    matrix.group, matrix.group_width, matrix.offset, matrix.nibbles,
                    matrix.fast, out_bits)
