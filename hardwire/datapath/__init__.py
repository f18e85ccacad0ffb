"""The datapath: one typed description of the chip's token step, shared by the RTL and the estimate.

    from hardwire.datapath import RTL_POINT, build
    step = build(die, RTL_POINT)              # embed, norms, matvecs (with lanes), rope, attention, ...
    step.cycles(context=16)                   # what the generated RTL takes for a token at position 15

`DesignPoint` (point.py) is the micro-architecture: weight style, widths, per-cycle parallelism,
schedule. `build` (step.py) lists the blocks of a token step in chip order; each block (blocks.py)
has its dimensions and its lanes and cycles from one formula, counted from the generated RTL's
state machines. The RTL generator takes each matvec's lanes from here, and the chip estimate its
stage cycles (docs/chip-model.md, docs/rtl.md).
"""
from hardwire.datapath.adapter import NO_ADAPTERS, AdapterDesign, LowRank
from hardwire.datapath.blocks import (Attention, Block, Embed, LanePlan, Logits, MatVec, Matrix, Norm, Residual, Rope,
                                      SwiGLU, chunk_plan, chunk_width, hadamard_latency, token_quantize_latency)
from hardwire.datapath.point import (POINT_FIELDS, RTL_POINT, SCHEDULES, STYLE_ALIASES, WEIGHT_STYLES, DesignPoint,
                                     weight_style)
from hardwire.datapath.step import Exponents, TokenStep, build, predicted_cycles

__all__ = ["NO_ADAPTERS", "AdapterDesign", "LowRank", "Attention", "Block", "Embed", "LanePlan", "Logits", "MatVec", "Matrix", "Norm", "Residual", "Rope",
           "SwiGLU", "chunk_plan", "chunk_width", "hadamard_latency", "token_quantize_latency", "POINT_FIELDS", "RTL_POINT", "SCHEDULES",
           "STYLE_ALIASES", "WEIGHT_STYLES", "DesignPoint", "weight_style", "Exponents", "TokenStep", "build",
           "predicted_cycles"]
