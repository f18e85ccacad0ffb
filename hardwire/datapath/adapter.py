"""§11 the patch's low-rank path as datapath blocks: which matrices have adapter hardware, its
rank lanes, and the cycles it adds to a token.

The adapter hardware is a design option of the chip, fixed at tape-out like the ROMs: a maximum rank
R and the layer matrices (targets) that get a low-rank block with its SRAM. A patch of rank r <= R on
a subset of those targets loads into the SRAMs; the rest stays zero, which adds exactly nothing
(docs/arithmetic.md §11: zero codes give t = 0, t' = 0, u = 0, T = 0). So the hardware, its cycles
and its area depend on the design, never on the patch loaded.

The low-rank block (rtl/blocks/adapter.py) runs before the matrix it patches, on the same input x,
and hands its terms T_i to that matrix's requantizers: it is not hidden under the matvec's walk
(the matvec's first rows are requantized after one block of columns, long before T is ready), so a
patched matrix takes the low-rank block's cycles plus its own.
"""
from __future__ import annotations

from dataclasses import dataclass

from hardwire.adapters import (ADAPTER_A_MULT_BITS, ADAPTER_B_MULT_BITS, ADAPTER_CODE_BITS, ADAPTER_SHIFT_BITS,
                               MAX_RANK, TARGETS)
from hardwire.errors import BadConfig


@dataclass(frozen=True)
class AdapterDesign:
    """Adapter hardware: rank lanes `rank` (the largest rank a patch may have on this chip) on every
    layer's `targets` (short names, e.g. ("wq", "wv")). rank 0 or no targets: no adapter hardware.

    `per_cycle`: elements of x the A pass takes, and rows the B pass forms, per cycle (the block has
    rank x per_cycle multipliers). The generated RTL has 1. None: as many as keep each pass within
    the design point's `weights_per_lane` cycles, like the matvec walk it precedes (the estimate's
    chips, whose rows are thousands of columns long)."""

    rank: int = 0
    targets: tuple[str, ...] = ()
    per_cycle: int | None = 1

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(t for t in TARGETS if t in tuple(self.targets)))
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or not 0 <= self.rank <= MAX_RANK:
            raise BadConfig(f"expected an adapter rank in [0, {MAX_RANK}], got {self.rank!r}", field="adapter_rank")
        if self.per_cycle is not None and (not isinstance(self.per_cycle, int) or self.per_cycle < 1):
            raise BadConfig(f"expected a positive number of elements per cycle, got {self.per_cycle!r}",
                            field="adapter_per_cycle")

    @property
    def present(self) -> bool:
        return self.rank > 0 and bool(self.targets)

    def covers(self, short: str) -> bool:
        """Whether matrix `short` (wq, ..., w_down) of every layer has a low-rank block."""
        return self.present and short in self.targets

    def to_dict(self) -> dict:
        return {"rank": self.rank, "targets": list(self.targets), "per_cycle": self.per_cycle}

    @classmethod
    def for_patch(cls, patch, per_cycle: int | None = 1) -> "AdapterDesign":
        """The smallest hardware that runs `patch`: its largest rank, its matrices in every layer."""
        shorts = {target.rsplit(".", 1)[-1] for target in patch.adapters}
        return cls(max(a.rank for a in patch.adapters.values()), tuple(shorts), per_cycle)

    def block(self, name: str, rows: int, cols: int, weights_per_lane: int) -> "LowRank":
        """The low-rank block of matrix `name` (rows x cols) at a design point's weights per lane."""
        per_cycle = self.per_cycle or max(1, -(-max(rows, cols) // weights_per_lane))
        return LowRank(name, rows, cols, self.rank, per_cycle)


NO_ADAPTERS = AdapterDesign()


@dataclass(frozen=True)
class LowRank:
    """The low-rank block beside one matrix W (rows x cols) with `rank` lanes (rtl/blocks/adapter.py
    at per_cycle 1): the A pass (the rank lanes walk x, `per_cycle` columns a cycle: t = A x), the
    inner pass (one t'_j a cycle through one 16-bit multiplier), the B pass (`per_cycle` rows a
    cycle, rank products summed for each, a 23-bit multiplier per row for b_mult), then `done`:

        cycles = ceil(cols / per_cycle) + rank + ceil(rows / per_cycle) + 3

    (the A and B SRAMs are read a cycle ahead of their use, and one cycle each pass ends in)."""

    name: str              # the matrix patched, e.g. layers.0.wq
    rows: int
    cols: int
    rank: int
    per_cycle: int = 1

    @property
    def cycles(self) -> int:
        return -(-self.cols // self.per_cycle) + self.rank + -(-self.rows // self.per_cycle) + 3

    @property
    def lanes(self) -> int:
        """8 x 16-bit multiply-accumulate lanes (rank x per_cycle, shared by the A and B passes)."""
        return self.rank * self.per_cycle

    @property
    def macs(self) -> int:
        """Multiply-accumulates per token: the lanes' A and B products (at full rank)."""
        return self.rank * (self.cols + self.rows)

    @property
    def scale_products(self) -> int:
        """The wider products per token: one a_mult per rank row (16 x 38 bits at most), one b_mult per
        row (23 x 30 bits at most)."""
        return self.rank + self.rows

    @property
    def scale_multipliers(self) -> tuple[int, int]:
        """(a_mult multipliers, b_mult multipliers) the block has: one, and one per row a cycle."""
        return 1, self.per_cycle

    def sram_bits(self) -> int:
        """The block's SRAM: A and B codes (8 bits), a_mult (16), b_mult (23) and the two 6-bit shifts
        at full rank (hardwire.adapters.Adapter.sram_bits at rank = the hardware's)."""
        return (ADAPTER_CODE_BITS * self.rank * (self.cols + self.rows) + ADAPTER_A_MULT_BITS * self.rank
                + ADAPTER_B_MULT_BITS * self.rows + 2 * ADAPTER_SHIFT_BITS)
