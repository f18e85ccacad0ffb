"""What AMX tile products reach on this machine with nothing else in the way: the ceiling the
golden tile kernel (`hardwire/golden/amx.py`) is measured against.

    python bench/amx_peak.py [--steps 200000]

One thread, the kernel's tile layout (2 A tiles of 16 users, 2 B tiles of code quads, 4 C tiles).
Each loop step runs 4 tdpbssd; the modes add, in turn:
- `registers`: nothing (K = 64; the tile unit's own rate);
- `codes from L2` / `codes from memory`: the two B tiles loaded each step from a 256 KiB / 32 MiB
  buffer, walked in order (K = 64);
- `groups of 32, codes in place`: a group's step as the kernel runs it at K = 32: B loaded from
  memory, the 4 C tiles zeroed before and stored after;
- `groups of 32, unpacked just before`: the same with each B tile first made with vector stores
  (the top bit of each byte flipped, as the kernel makes signed codes) and loaded right after;
- `groups of 32, unpacked a step ahead`: the tiles of the next step made into a second buffer, the
  ones made a step earlier loaded (a tile load waits for the stores before it to retire).
Printed: ns a step and GMAC/s (16 x 16 x K x 4 multiply-adds a step). Needs AMX.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

KIB = 1024


def build(mode: str, k: int):
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    from hardwire.golden.amx import _byte_ptr, _declare, _i8, _i64, _load_tile_config, _release_tiles
    tile_bytes = k // 4 * 64                          # a B tile: k / 4 quads of 64 bytes

    @intrinsic
    def steps(typingctx, count, codes, span, out, staging):
        def codegen(context, builder, signature, args):
            product = _declare(builder, "llvm.x86.tdpbssd", [_i8, _i8, _i8])
            zero = _declare(builder, "llvm.x86.tilezero", [_i8])
            load = _declare(builder, "llvm.x86.tileloadd64", [_i8, _byte_ptr, _i64])
            store = _declare(builder, "llvm.x86.tilestored64", [_i8, _byte_ptr, _i64])
            codes_ptr, out_ptr, staging_ptr = (
                builder.bitcast(context.make_array(signature.args[i])(context, builder, args[i]).data, _byte_ptr)
                for i in (1, 3, 4))
            tile = lambda number: ir.Constant(_i8, number)    # noqa: E731
            bytes64 = ir.VectorType(_i8, 64)
            flip = ir.Constant(bytes64, [-128] * 64)

            def source(step):
                return builder.gep(codes_ptr, [builder.mul(builder.urem(step, args[2]), _i64(2 * tile_bytes))])

            def unpack(step, slot):
                for row in range(2 * tile_bytes // 64):
                    value = builder.load(builder.bitcast(builder.gep(source(step), [_i64(64 * row)]),
                                                         ir.PointerType(bytes64)))
                    value.align = 1                  # numpy gives no 64-byte alignment
                    target = builder.gep(staging_ptr, [builder.add(builder.mul(slot, _i64(2 * tile_bytes)),
                                                                   _i64(64 * row))])
                    builder.store(builder.xor(value, flip), builder.bitcast(target, ir.PointerType(bytes64))).align = 1

            for number in range(4):
                builder.call(load, [tile(number), codes_ptr, _i64(64)])
            for number in range(4, 8):
                builder.call(zero, [tile(number)])
            if mode == "ahead":
                unpack(_i64(0), _i64(0))
            with cgutils.for_range(builder, args[0]) as loop:
                step = loop.index
                if mode in ("grouped", "unpacked", "ahead"):
                    for number in range(4, 8):
                        builder.call(zero, [tile(number)])
                if mode == "ahead":
                    unpack(builder.add(step, _i64(1)), builder.urem(builder.add(step, _i64(1)), _i64(2)))
                    b_ptr = builder.gep(staging_ptr, [builder.mul(builder.urem(step, _i64(2)), _i64(2 * tile_bytes))])
                elif mode == "unpacked":
                    unpack(step, _i64(0))
                    b_ptr = staging_ptr
                else:
                    b_ptr = source(step)
                if mode != "registers":
                    builder.call(load, [tile(0), b_ptr, _i64(64)])
                    builder.call(load, [tile(1), builder.gep(b_ptr, [_i64(tile_bytes)]), _i64(64)])
                if mode in ("grouped", "unpacked", "ahead"):
                    builder.call(load, [tile(2), out_ptr, _i64(k)])
                    builder.call(load, [tile(3), builder.gep(out_ptr, [_i64(16 * k)]), _i64(k)])
                for c, (a, b) in zip(range(4, 8), [(2, 0), (2, 1), (3, 0), (3, 1)]):
                    builder.call(product, [tile(c), tile(a), tile(b)])
                if mode in ("grouped", "unpacked", "ahead"):
                    for index, number in enumerate(range(4, 8)):
                        builder.call(store, [tile(number), builder.gep(out_ptr, [_i64(4 * KIB * (index + 1))]),
                                             _i64(64)])
            builder.call(store, [tile(4), out_ptr, _i64(64)])
            return context.get_dummy_value()
        return types.void(count, codes, span, out, staging), codegen

    @njit
    def run(cfg, count, codes, span, out, staging):
        _load_tile_config(cfg)
        steps(count, codes, span, out, staging)
        _release_tiles()
    return run


def config(k: int) -> np.ndarray:
    cfg = np.zeros(64, np.uint8)
    cfg[0] = 1
    widths, rows = cfg[16:48].view(np.uint16), cfg[48:]
    for number in (0, 1):
        rows[number], widths[number] = k // 4, 64
    for number in (2, 3):
        rows[number], widths[number] = 16, k
    for number in range(4, 8):
        rows[number], widths[number] = 16, 64
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200_000)
    args = parser.parse_args()
    from numba import set_num_threads

    from hardwire.golden import amx
    if not amx.AMX:
        sys.exit("needs a CPU with AMX-INT8 and an OS that grants the tile data")
    set_num_threads(1)
    out, staging = np.zeros(24 * KIB, np.uint8), np.zeros(8 * KIB, np.uint8)
    cases = [("registers", "registers", 64, 256 * KIB), ("codes from L2", "memory", 64, 256 * KIB),
             ("codes from memory", "memory", 64, 32 * KIB * KIB), ("groups of 32, codes in place", "grouped", 32,
                                                                   32 * KIB * KIB),
             ("groups of 32, unpacked just before", "unpacked", 32, 32 * KIB * KIB),
             ("groups of 32, unpacked a step ahead", "ahead", 32, 32 * KIB * KIB)]
    print(f"{'mode':38} {'ns a step':>9} {'GMAC/s':>8}")
    for label, mode, k, buffer_bytes in cases:
        step_bytes = 2 * (k // 4 * 64)
        codes = np.ones(buffer_bytes + 2 * step_bytes, np.uint8)
        span = np.int64(buffer_bytes // step_bytes)
        run = build(mode, k)
        run(config(k), 10, codes, span, out, staging)
        started = time.perf_counter()
        run(config(k), args.steps, codes, span, out, staging)
        seconds = time.perf_counter() - started
        print(f"{label:38} {seconds / args.steps * 1e9:9.1f} {args.steps * 4 * 16 * 16 * k / seconds / 1e9:8.0f}",
              flush=True)


if __name__ == "__main__":
    main()
