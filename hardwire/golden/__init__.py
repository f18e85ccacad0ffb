"""The golden model: the exact integer function a die's chip computes (docs/arithmetic.md).

The widths, fixed-point primitives and lookup tables it uses (§1–§7) are `hardwire.arithmetic`,
shared with the table builder and the RTL generator.

    tables.py      every integer constant, built once from the die (freeze time)
    matvec.py      packed weight codes times an integer vector, requantized (§3)
    amx.py         the same sums for many users at once as AMX tile products (§3.1)
    forward.py     the token step, block by block, with an integer KV cache
    sample.py      argmax and integer sampling with SplitMix64 (§9)
    engine.py      `--backend golden`
"""
