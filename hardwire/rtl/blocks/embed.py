"""§8.1 embedding lookup (docs/arithmetic.md): h_i = sat32(round((c_vi - z_vg) * m_vg * 2^-k_v)).

Golden: `hardwire.golden.forward.embed_lookup`. The token's row is read from a `case` ROM a chunk at a
time; a chunk never straddles a scale group, so one multiplier (and the row's shift) serves the whole
chunk. Cycles: ceil(dim / per_cycle) + 2.
"""
from __future__ import annotations

import numpy as np

from hardwire.arithmetic import RESIDUAL_BITS
from hardwire.datapath import chunk_width
from hardwire.formats import expand_groups
from hardwire.rtl.emit import (RSHIFT_ROUND, SATURATE, Port, case_rom, clear_pulses, index_bits, last_value, module,
                               pack_fields, signed_bits)


def embed_module(codes: np.ndarray, zeros: np.ndarray | None, group: int | None, mult: np.ndarray,
                 shift: np.ndarray, per_cycle: int = 16) -> dict[str, str]:
    name = "hw_embed_lookup"
    vocab, dim = codes.shape
    gw = dim if group is None else group
    per = chunk_width(gw, per_cycle)
    chunks = -(-dim // per)
    weights = codes.astype(np.int64)
    if zeros is not None:
        weights = weights - expand_groups(zeros.astype(np.int64), gw, dim)
    code_bits = signed_bits(min(int(weights.min()), -1), max(int(weights.max()), 1))
    mult_bits = signed_bits(0, max(1, int(mult.max())))
    code_words, scale_words = [], []
    for v in range(vocab):
        for c in range(chunks):
            cols = range(c * per, min(dim, (c + 1) * per))
            code_words.append(pack_fields([weights[v, j] for j in cols], code_bits))
            g = (c * per) // gw
            scale_words.append((int(mult[v, g]) << 8) | (int(shift[v]) & 255))
    modules = {
        f"{name}_codes": case_rom(f"{name}_codes", code_words, per * code_bits,
                                  f"§8.1 embedding codes c - z, {per} per word, word = token * {chunks} + chunk."),
        f"{name}_scales": case_rom(f"{name}_scales", scale_words, mult_bits + 8,
                                   "§8.1 embedding {multiplier, shift} of each chunk's group."),
    }
    addr_bits = index_bits(vocab * chunks)
    chunk_bits = index_bits(chunks)
    token_bits = index_bits(vocab)
    last = dim - (chunks - 1) * per
    token_wide = "token" if addr_bits == token_bits else f"{{{addr_bits - token_bits}'h0, token}}"
    r = RESIDUAL_BITS
    body = [
        f"    // {vocab} x {dim}, {per} elements per cycle: {chunks + 2} cycles.",
        last_value("LAST_CHUNK", chunks - 1, chunk_bits),
        "    reg running;",
        "    reg writing;",
        f"    reg [{chunk_bits - 1}:0] chunk;",
        f"    reg [{chunk_bits - 1}:0] write_chunk;",
        f"    reg [{addr_bits - 1}:0] addr;",
        f"    wire [{per * code_bits - 1}:0] code_word;",
        f"    wire [{mult_bits + 7}:0] scale_word;",
        f"    reg [{per * code_bits - 1}:0] code_held;",
        f"    reg [{mult_bits + 7}:0] scale_held;",
        f"    {name}_codes codes (.addr(addr), .data(code_word));",
        f"    {name}_scales scales (.addr(addr), .data(scale_word));",
        RSHIFT_ROUND, SATURATE,
        f"    wire signed [63:0] multiplier = {{{64 - mult_bits}'h0, scale_held[{mult_bits + 7}:8]}};",
        "    wire signed [7:0] shift = scale_held[7:0];",
        "    always @(posedge clk) begin",
        f"        {clear_pulses('done')}",
        "        if (rst) begin",
        "            running <= 1'b0;",
        "            writing <= 1'b0;",
        "        end else begin",
        "            writing <= running;",
        "            write_chunk <= chunk;",
        "            code_held <= code_word;",
        "            scale_held <= scale_word;",
        "            if (writing && !running) done <= 1'b1;",
        "            if (start) begin",
        "                running <= 1'b1;",
        f"                chunk <= {chunk_bits}'d0;",
        f"                addr <= {token_wide} * {addr_bits}'d{chunks};",
        "            end else if (running) begin",
        f"                addr <= addr + {addr_bits}'d1;",
        f"                chunk <= chunk + {chunk_bits}'d1;",
        "                if (chunk == LAST_CHUNK) running <= 1'b0;",
        "            end",
        "        end",
        "    end",
        "    // one chunk of h (a function, so a simulator evaluates it only in the cycles it is used)",
        f"    function [{per * r - 1}:0] lookup;",
        f"        input [{per * code_bits - 1}:0] code_chunk;",
        "        input signed [63:0] multiplier_in;",
        "        input signed [7:0] shift_in;",
        "        integer i;",
        "        reg signed [63:0] weight;",
        "        /* verilator lint_off UNUSEDSIGNAL */  // saturated to 32 bits: the upper bits copy the sign",
        "        reg signed [63:0] value;",
        "        /* verilator lint_on UNUSEDSIGNAL */",
        "        begin",
        f"            for (i = 0; i < {per}; i = i + 1) begin",
        f"                weight = $signed({{{{{64 - code_bits}{{code_chunk[i * {code_bits} + {code_bits - 1}]}}}}, code_chunk[i * {code_bits} +: {code_bits}]}});",
        f"                value = saturate(rshift_round(weight * multiplier_in, shift_in), 7'd{r});",
        f"                lookup[i * {r} +: {r}] = value[{r - 1}:0];",
        "            end",
        "        end",
        "    endfunction",
    ]
    if last == per:
        body += ["    always @(posedge clk)",
                 f"        if (writing) h[write_chunk * {per * r} +: {per * r}] <= lookup(code_held, multiplier, shift);"]
    else:   # the last chunk is partial (a partial last scale group): write element by element
        body += ["    genvar i;",
                 "    generate",
                 f"        for (i = 0; i < {per}; i = i + 1) begin : lane",
                 f"            wire [{per * r - 1}:0] chunk = lookup(code_held, multiplier, shift);",
                 "            always @(posedge clk)",
                 f"                if (writing && (i < {last} || write_chunk != LAST_CHUNK))",
                 f"                    h[(write_chunk * {per} + i) * {r} +: {r}] <= chunk[i * {r} +: {r}];",
                 "        end",
                 "    endgenerate"]
    if token_bits > addr_bits:
        raise ValueError("embedding address narrower than the token id")
    ports = [Port("input", "clk"), Port("input", "rst"), Port("input", "start"),
             Port("input", "token", token_bits), Port("output", "done", reg=True),
             Port("output", "h", dim * r, reg=True)]
    modules[name] = module(name, ports, "\n".join(body), "§8.1 embedding lookup (docs/arithmetic.md).")
    return modules
