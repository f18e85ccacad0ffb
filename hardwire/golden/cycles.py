"""The CPU's cycle counter, read from compiled code: how the blocks of a one-call batched step are
timed in place (`forward.step_batch_compiled`'s `spent`, `bench/batch_blocks.py`).

A step that is one compiled call cannot be timed block by block from Python, and a copy of it
with timers in would drift from the real one. LLVM's `llvm.readcyclecounter` is `rdtsc` on x86
(a constant-rate counter on current CPUs, so cycles map to wall time at one rate the bench
measures) and reads 0 on a target without one.
"""
from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def read_cycles(typingctx):
    """The cycle counter now (int64)."""
    def codegen(context, builder, signature, args):
        counter = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                                 "llvm.readcyclecounter")
        return builder.call(counter, [])
    return types.int64(), codegen


@njit(cache=True, nogil=True)
def cycles_now():
    """`read_cycles` from Python: to relate counted cycles to seconds."""
    return read_cycles()
