"""The batch from which AMX tile products beat the vpdpbusd kernel (`hardwire.golden.amx.MIN_USERS`).

    python bench/amx_crossover.py [--rows 4096] [--cols 768] [--users 4 8 12 16 24 32] [--repeats 20]

A random matrix of the 110M shape's gate|up size (4096 x 768) at each plan's packing (4- and
8-bit codes, groups of 32 and per-channel scales, no zero points), and `users` random int8
vectors: the serial kernels alone (inputs prepared once), the two alternating so that both see the
same load, best CPU time of `--repeats` each, with their results compared. Prints each kernel's
multiply-adds per second and the ratio.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PLANS = [(4, 32), (8, 32), (4, None), (8, None)]      # (bits, group columns; None: per-channel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=768)
    parser.add_argument("--users", type=int, nargs="+", default=[4, 8, 12, 16, 24, 32])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    from hardwire.golden import amx
    from hardwire.golden import matvec as kernels
    if not (amx.AMX and kernels.VNNI):
        sys.exit("needs a CPU with AMX-INT8 and AVX-512 VNNI (and an OS that grants the tile data)")
    rng = np.random.default_rng(0)
    print(f"{'plan':8} {'users':>5} {'vpdpbusd GMAC/s':>15} {'AMX GMAC/s':>10} {'AMX / vpdpbusd':>14}")
    for bits, group in PLANS:
        codes = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (args.rows, args.cols)).astype(np.int8)
        groups = args.cols // (group or args.cols)
        matrix = kernels.pack_matrix(codes, None, bits, group, rng.integers(1 << 22, 1 << 23, (args.rows, groups)),
                                     np.full(args.rows, 20))
        for users in args.users:
            xs = rng.integers(-128, 128, (users, args.cols))
            padded, removed, _ = kernels._prepare(xs, matrix.group, matrix.group_width, matrix.groups, matrix.offset,
                                                  matrix.zeros)
            xs8, removed32 = padded.astype(np.int8), removed.astype(np.int32)
            sums = {name: np.empty((users, matrix.row_blocks * kernels.ROW_BLOCK), np.int64) for name in ("v", "a")}
            runs = {
                "v": lambda: kernels._KERNELS["vnni", False](xs8, removed32, matrix.data, matrix.multiplier_bytes,
                                                            matrix.group_width // kernels.QUAD, matrix.nibbles,
                                                            sums["v"]),
                "a": lambda: amx.rows_amx(xs8, removed32, matrix.data, matrix.multiplier_bytes, matrix.group_width,
                                          matrix.nibbles, matrix.offset, sums["a"], parallel=False)}
            best = {name: float("inf") for name in runs}
            for _ in range(args.repeats + 1):
                for name, run in runs.items():
                    started = time.process_time()
                    run()
                    best[name] = min(best[name], time.process_time() - started)
            assert np.array_equal(sums["v"], sums["a"]), "the kernels disagree"
            macs = args.rows * args.cols * users
            plan = f"w{bits}" + (f"g{group}" if group else "")
            print(f"{plan:8} {users:5d} {macs / best['v'] / 1e9:15.1f} {macs / best['a'] / 1e9:10.1f} "
                  f"{best['v'] / best['a']:13.2f}x", flush=True)


if __name__ == "__main__":
    main()
