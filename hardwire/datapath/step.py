"""The token step as an ordered list of typed blocks, in the order the chip runs them.

    embed -> per layer: attn_norm -> qkv -> rope -> attention -> wo -> residual
                        -> ffn_norm -> gate_up -> swiglu -> down -> residual
          -> final_norm -> classifier -> logits (argmax)

which is the order of `hardwire.golden.forward.GoldenTransformer.step` and of the generated RTL's
sequencer (rtl/top.py). Each block knows the layer-pipeline stage it belongs to, so the chip
estimate groups the same blocks into stages (`hardwire.chip.arch.stage_plan`).
"""
from __future__ import annotations

from dataclasses import dataclass

from hardwire.datapath.adapter import NO_ADAPTERS, AdapterDesign, LowRank
from hardwire.datapath.blocks import (Attention, Block, Embed, LanePlan, Logits, MatVec, Matrix, Norm, Residual,
                                      Rope, SwiGLU)
from hardwire.datapath.point import DesignPoint
from hardwire.model.spec import ModelSpec

Exponents = dict[str, int]       # block name -> the token quantizer's exponent e for one token


@dataclass(frozen=True)
class TokenStep:
    """One token through the chip: the blocks of `spec` at design point `point`."""
    spec: ModelSpec
    point: DesignPoint
    blocks: tuple[Block, ...]

    def block_cycles(self, context: int = 1, exponents: Exponents | None = None) -> list[tuple[str, int]]:
        """(block name, cycles) in order, at `context` positions attended; a quantizing block
        absent from `exponents` is charged its worst case."""
        exponents = exponents or {}
        return [(b.name, int(b.cycles(self.point, context, exponents.get(b.name)))) for b in self.blocks]

    def cycles(self, context: int = 1, exponents: Exponents | None = None) -> int:
        """Cycles of the whole step, one block after another (the sequential schedule)."""
        return sum(cycles for _, cycles in self.block_cycles(context, exponents))

    def stages(self) -> list[tuple[str, tuple[Block, ...]]]:
        """The layer-pipeline stages in order, each with its blocks."""
        stages: list[tuple[str, list[Block]]] = []
        for block in self.blocks:
            if not stages or stages[-1][0] != block.stage:
                stages.append((block.stage, []))
            stages[-1][1].append(block)
        return [(name, tuple(blocks)) for name, blocks in stages]

    def matrices(self) -> list[Matrix]:
        return [m for b in self.blocks if isinstance(b, MatVec) for m in b.matrices]

    def low_rank(self) -> list[LowRank]:
        """The §11 low-rank blocks, in chip order."""
        return [r for b in self.blocks if isinstance(b, MatVec) for r in b.low_rank]

    def plan(self, matrix_name: str) -> LanePlan:
        """Lanes and cycles of the product by `matrix_name` (e.g. layers.0.wq)."""
        for m in self.matrices():
            if m.name == matrix_name:
                return m.plan(self.point)
        raise KeyError(matrix_name)


def layer_blocks(spec: ModelSpec, index: int, adapters: AdapterDesign = NO_ADAPTERS,
                 point_weights_per_lane: int = 1, hadamard_block: int = 1) -> list[Block]:
    """One layer, in the sequencer's order (rtl/top.py layer_module): every block's start is
    registered by the sequencer a cycle after the previous done (handoff 1), except that the
    residual add takes the cycle after wo's and w_down's done, in which ffn_norm starts and the
    layer is done. `adapters`: the matrices with a §11 low-rank block before them (sized for the
    design point's `weights_per_lane` when the adapter design leaves that open). `hadamard_block`:
    the block of the die's online transform of the w_down input (§12; 1: none)."""
    p, L = f"layers.{index}.", f"L{index}."
    dim, q_dim, kv_dim, ffn = spec.hidden_dim, spec.q_dim, spec.kv_dim, spec.ffn_dim

    def projection(*, matrices: tuple[Matrix, ...], **fields) -> MatVec:
        """The products reading one vector, with a low-rank block before each matrix that has one."""
        low_rank = tuple(adapters.block(m.name, m.rows, m.cols, point_weights_per_lane) for m in matrices
                         if adapters.covers(m.name.rsplit(".", 1)[-1]))
        return MatVec(matrices=matrices, low_rank=low_rank, **fields)

    return [
        Norm(name=p + "attn_norm", stage=L + "qkv", layer=index, handoff=1, dim=dim),
        projection(name=p + "qkv", stage=L + "qkv", layer=index, handoff=1,
                   matrices=(Matrix(p + "wq", q_dim, dim), Matrix(p + "wk", kv_dim, dim), Matrix(p + "wv", kv_dim, dim))),
        Rope(name=p + "rope", stage=L + "qkv", layer=index, handoff=1, heads=spec.heads + spec.kv_heads,
             head_dim=spec.head_dim),
        Attention(name=p + "attention", stage=L + "attention", layer=index, handoff=1, heads=spec.heads,
                  kv_heads=spec.kv_heads, head_dim=spec.head_dim, window=spec.sliding_window),
        projection(name=p + "wo", stage=L + "wo", layer=index, handoff=1, matrices=(Matrix(p + "wo", dim, q_dim),)),
        Residual(name=p + "attention_residual", stage=L + "wo", layer=index, dim=dim),
        Norm(name=p + "ffn_norm", stage=L + "gate_up", layer=index, dim=dim),
        projection(name=p + "gate_up", stage=L + "gate_up", layer=index, handoff=1,
                   matrices=(Matrix(p + "w_gate", ffn, dim), Matrix(p + "w_up", ffn, dim))),
        SwiGLU(name=p + "swiglu", stage=L + "gate_up", layer=index, handoff=1, ffn_dim=ffn,
               hadamard_block=hadamard_block),
        projection(name=p + "w_down", stage=L + "down", layer=index, handoff=1,
                   matrices=(Matrix(p + "w_down", dim, ffn),)),
        Residual(name=p + "ffn_residual", stage=L + "down", layer=index, dim=dim),
    ]


def build(source, point: DesignPoint, adapters: AdapterDesign = NO_ADAPTERS) -> TokenStep:
    """The token step of `source` (a ModelSpec, a model or a die) at `point`, with the §11 low-rank
    blocks of `adapters`. A die adds what its formats decide: the embedding's scale group width
    (which bounds the embedding's chunk), and what its manifest records: the online transform of
    the w_down input (§12), a block inside SwiGLU."""
    from hardwire.die import FrozenWeights, online_hadamard_block
    spec = source if isinstance(source, ModelSpec) else source.spec
    group, hadamard = spec.hidden_dim, 1
    if isinstance(source, FrozenWeights):
        group = source.quantized("embed").format.group_width(spec.hidden_dim)
        hadamard = online_hadamard_block(source.manifest)
    blocks: list[Block] = [
        # handoff 1: the chip's host interface registers the token (the in_valid transfer cycle)
        Embed(name="embed", stage="embed", handoff=1, vocab=spec.vocab_size, dim=spec.hidden_dim, group=group)]
    for index in range(spec.layers):
        blocks += layer_blocks(spec, index, adapters, point.weights_per_lane, hadamard)
    blocks += [
        Norm(name="final_norm", stage="head", dim=spec.hidden_dim),
        MatVec(name="classifier", stage="head", matrices=(Matrix(spec.classifier, spec.vocab_size, spec.hidden_dim),)),
        Logits(name="logits", stage="head", vocab=spec.vocab_size),
    ]
    return TokenStep(spec, point, tuple(blocks))


def predicted_cycles(step: TokenStep, exponents: list[Exponents], first_position: int = 0) -> list[int]:
    """Cycles per token of a sequence stepped one token after another from `first_position`, as the
    sequential chip takes them (token t attends to first_position + t + 1 positions)."""
    return [step.cycles(first_position + t + 1, e) for t, e in enumerate(exponents)]
