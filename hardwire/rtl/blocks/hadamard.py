"""§12 online Walsh–Hadamard transform (docs/arithmetic.md): the clamped wide values SwiGLU hands
its token quantizer, transformed by H_n per block of n, between the two.

    v = H_n w  per block       log2 n stages of butterflies (a + b, a - b), one bit wider each
    out = clamp(v, ±2^(bits+9))  the quantizer's own clamp (exact: §2.2), back to its input width

Golden: `hardwire.golden.hadamard.hadamard_transform` (its input clamp is SwiGLU's `clamp_wide`).
One block a cycle: the block is picked from the input vector by a multiplexer, goes through a
combinational network of (n/2) log2 n butterflies (named wires per stage, widths from
`hadamard_output_bits`), and is written to the output vector at the clock edge.
Cycles: count / n + 1 (`hardwire.datapath.hadamard_latency`).
"""
from __future__ import annotations

from hardwire import arithmetic as ar
from hardwire.rtl.blocks.token_scale import wide_bits
from hardwire.rtl.emit import Port, index_bits, last_value, module, stepped_always, word_case, word_write


def hadamard_name(count: int, bits: int, block: int) -> str:
    return f"hw_hadamard_{count}x{bits}_n{block}"


def butterfly_network(block: int, in_bits: int) -> list[str]:
    """Wires s{k}_{i}: value i of the block after k stages (k = 0: the input word `block_now`).
    Stage k + 1 pairs values `half` = 2^k apart: s_i + s_{i+half} at i, s_i - s_{i+half} at i + half;
    all operands signed, so each sum is sign-extended to its one-bit-wider wire."""
    lines = [f"    wire signed [{in_bits - 1}:0] s0_{i} = block_now[{i * in_bits} +: {in_bits}];" for i in range(block)]
    stage, half = 0, 1
    while half < block:
        width = in_bits + stage + 1
        lines.append(f"    // stage {stage + 1}: pairs {half} apart, {width} bits")
        for start in range(0, block, 2 * half):
            for i in range(start, start + half):
                a, b = f"s{stage}_{i}", f"s{stage}_{i + half}"
                lines.append(f"    wire signed [{width - 1}:0] s{stage + 1}_{i} = {a} + {b};")
                lines.append(f"    wire signed [{width - 1}:0] s{stage + 1}_{i + half} = {a} - {b};")
        stage, half = stage + 1, half * 2
    return lines


def hadamard_module(count: int, bits: int, block: int) -> tuple[str, str]:
    """(name, text) of the transform of `count` wide values of a `bits`-bit activation (each
    `wide_bits(bits)` wide, in and out) in blocks of `block` (a power of two dividing count)."""
    if block < 2 or block & (block - 1) or count % block or block > ar.HADAMARD_MAX_BLOCK:
        raise ValueError(f"a Hadamard block must be a power of two in [2, {ar.HADAMARD_MAX_BLOCK}] dividing "
                         f"{count}, got {block}")
    name = hadamard_name(count, bits, block)
    wb = wide_bits(bits)
    grown = ar.hadamard_output_bits(bits, block)
    stages = block.bit_length() - 1
    blocks = count // block
    index_width = index_bits(blocks)
    clamp = 1 << (bits + ar.TOKEN_CLAMP_BITS)
    block_bits = block * wb
    outputs = ", ".join(f"clamp_out(s{stages}_{i})" for i in reversed(range(block)))
    body = [
        f"    // {count} values, {blocks} blocks of {block}: {blocks + 1} cycles; {block // 2 * stages} butterflies.",
        last_value("LAST_BLOCK", blocks - 1, index_width),
        "    reg running;",
        f"    reg [{index_width - 1}:0] index;",
        f"    reg [{block_bits - 1}:0] block_now;",
        "    // the block being transformed: a multiplexer over the input vector",
        "    always @(*) begin",
        *word_case("index", blocks, index_width, "        ",
                   lambda k: f"block_now = wide_in[{k * block_bits} +: {block_bits}];", f"block_now = {block_bits}'d0;"),
        "    end",
        *butterfly_network(block, wb),
        f"    // §2.2 the quantizer's clamp at +-2^{bits + ar.TOKEN_CLAMP_BITS}, back to {wb} bits",
        f"    function [{wb - 1}:0] clamp_out;",
        f"        input signed [{grown - 1}:0] value;",
        f"        clamp_out = value > {grown}'sd{clamp} ? {wb}'sd{clamp} : value < -{grown}'sd{clamp} ? -{wb}'sd{clamp}"
        f" : value[{wb - 1}:0];",
        "    endfunction",
        f"    wire [{block_bits - 1}:0] block_out = {{{outputs}}};",
        "    // `wide_out` is written with blocking assignments (as SwiGLU writes its wide buffer); only the",
        "    // quantizer reads it, after `done`.",
        "    /* verilator lint_off BLKSEQ */",
        *stepped_always("index", index_width, "LAST_BLOCK", "done",
                        word_write("wide_out", blocks, block_bits, "index", "block_out", "            ", index_width)),
        "    /* verilator lint_on BLKSEQ */",
    ]
    ports = [Port("input", "clk"), Port("input", "rst"), Port("input", "start"), Port("input", "wide_in", count * wb),
             Port("output", "done", reg=True), Port("output", "wide_out", count * wb, reg=True)]
    return name, module(name, ports, "/*verilator no_inline_module*/\n" + "\n".join(body),
                        "§12 online Walsh–Hadamard transform (docs/arithmetic.md), one instance per layer.")
