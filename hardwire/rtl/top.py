"""The whole token step as Verilog: the layer sequence of `hardwire.golden.forward.GoldenTransformer.step`.

One module per transformer layer (`hw_layer_<i>`, a pipeline stage with its own weight ROMs, MAC
lanes and KV-cache slice), in the golden step's order:

    attn_norm -> wq | wk | wv (in parallel) -> rope(q, k) -> attention (KV write, softmax, V sum)
    -> wo -> residual -> ffn_norm -> w_gate | w_up (in parallel) -> swiglu -> w_down -> residual

and the top `hw_chip`: embedding lookup, the layers in turn, final norm, classifier, and a logit
stream whose first largest entry (§9.1 argmax) is the next token. Host interface (ready/valid):

    in_valid/in_ready/in_token      a token id at the next position (one transfer per token)
    logit_valid/logit_index/logit   the vocab int32 logits of that token, one per cycle
    out_valid/out_ready/out_token   the next token id (greedy); after out_ready the chip takes a new token
    rst                             clears the position (a new sequence)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardwire.adapters import TARGETS
from hardwire.arithmetic import INTERNAL_BITS, RESIDUAL_BITS
from hardwire.datapath import NO_ADAPTERS, RTL_POINT, AdapterDesign, DesignPoint, build, chunk_plan
from hardwire.die import online_hadamard_block
from hardwire.errors import BadConfig
from hardwire.rtl.blocks.adapter import adapter_module, adapter_name, term_bits
from hardwire.rtl.blocks.attention import (OUT_MULT_BITS, SCORE_MULT_BITS, attention_module, attention_name,
                                           kv_sram_module, reciprocal_table_module)
from hardwire.rtl.blocks.embed import embed_module
from hardwire.rtl.blocks.matvec import IntMatrix, matvec_modules, module_name
from hardwire.rtl.blocks.rmsnorm import MULT_BITS, rmsnorm_module, rmsnorm_name, rmsnorm_rom, rsqrt_table_module
from hardwire.rtl.blocks.rope import rope_module, rope_table_module
from hardwire.rtl.blocks.swiglu import swiglu_module, swiglu_name
from hardwire.rtl.emit import (Design, Fsm, Port, Stage, clear_pulses, index_bits, last_value, module, overrides,
                               sequencer_arms)

LAYER_MATRICES = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
# The layer's sequencer: each stage starts when the one before is done (the order hardwire.datapath.step
# counts); q, k, v and gate, up are products in parallel.
LAYER_STAGES = [Stage("ATTN_NORM", "go_attn_norm", ("attn_norm_done",)),
                Stage("QKV", "go_qkv", ("q_done", "k_done", "v_done")),
                Stage("ROPE", "go_rope", ("rope_done",)),
                Stage("ATTENTION", "go_attention", ("attention_done",)),
                Stage("WO", "go_wo", ("wo_done",)),
                Stage("FFN_NORM", "go_ffn_norm", ("ffn_norm_done",)),
                Stage("GATE_UP", "go_gate_up", ("gate_done", "up_done")),
                Stage("SWIGLU", "go_swiglu", ("swiglu_done",)),
                Stage("DOWN", "go_down", ("down_done",))]


# What the generator builds of a DesignPoint: the fields below must have these values (the RTL has
# one RoPE head, one KV position, one normalised head and one logit per cycle, lanes that walk whole
# rows, one block after another); weight_style is rom_mac or hardwired.
RTL_FIXED = {"split_rows": False, "rope_heads_per_cycle": 1, "attention_positions_per_cycle": 1,
             "attention_heads_per_cycle": 1, "logits_per_cycle": 1, "schedule": "sequential"}
RTL_STYLES = ("rom_mac", "hardwired")
# The adapter hardware a chip is generated with to run a patch when none is asked for: a low-rank
# block on every projection of every layer, rank 16 (twice `hardwire patch train`'s default rank; a
# patch of any lower rank and any targets loads into it, the rest of the SRAM stays zero). A design
# option, like the ROMs fixed before any patch exists: the Verilog never depends on the patch loaded.
PATCH_ADAPTERS = AdapterDesign(rank=16, targets=TARGETS)


def default_adapters(patch) -> AdapterDesign:
    """PATCH_ADAPTERS, or for a patch of a higher rank the same blocks at that rank rounded up to a
    power of two (one build then serves every patch of that rank class)."""
    rank = max(adapter.rank for adapter in patch.adapters.values())
    if rank <= PATCH_ADAPTERS.rank:
        return PATCH_ADAPTERS
    return AdapterDesign(1 << (rank - 1).bit_length(), PATCH_ADAPTERS.targets)


@dataclass(frozen=True, init=False)
class RtlOptions:
    """Generator knobs: the design point (`point`: weight style, weights per lane, which sets each
    matvec's lanes through hardwire.datapath, norm and embedding elements per cycle), the KV-cache
    capacity `positions` (default: the model's context), clock gating and the §11 adapter hardware
    (`adapters`: its rank and the matrices with a low-rank block; none by default). The point's
    fields may be given by name (`RtlOptions(weights_per_lane=1024)`; `style` is weight_style, `rom`
    its old name for rom_mac)."""

    point: DesignPoint
    positions: int | None
    gate_clocks: bool                  # each stage on its own gated clock (off: one clock, e.g. for an FPGA)
    adapters: AdapterDesign            # low-rank blocks and their SRAM (rtl/blocks/adapter.py)

    def __init__(self, point: DesignPoint = RTL_POINT, positions: int | None = None, gate_clocks: bool = True,
                 adapters: AdapterDesign = NO_ADAPTERS, **point_fields):
        if "style" in point_fields:
            point_fields["weight_style"] = point_fields.pop("style")
        point = point.replace(**point_fields) if point_fields else point
        if point.weight_style not in RTL_STYLES:
            raise BadConfig(f"the RTL generator builds {' or '.join(RTL_STYLES)}, not {point.weight_style!r}",
                            field="weight_style")
        for field, value in RTL_FIXED.items():
            if getattr(point, field) != value:
                raise BadConfig(f"the RTL generator builds {value!r} only, not {getattr(point, field)!r}",
                                field=field)
        object.__setattr__(self, "point", point)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "gate_clocks", gate_clocks)
        if adapters.per_cycle != 1:
            raise BadConfig(f"the RTL's low-rank blocks take one element per cycle, not {adapters.per_cycle!r}",
                            field="adapter_per_cycle")
        object.__setattr__(self, "adapters", adapters)

    def to_dict(self) -> dict:
        return {"point": self.point.to_dict(), "positions": self.positions, "gate_clocks": self.gate_clocks,
                "adapters": self.adapters.to_dict()}

    def with_adapters(self, adapters: AdapterDesign) -> "RtlOptions":
        return RtlOptions(self.point, self.positions, self.gate_clocks, adapters)

    def for_patch(self, patch) -> "RtlOptions":
        """These options with adapter hardware that holds `patch` (`default_adapters` when none was
        asked for); a patch the hardware asked for cannot hold is refused, naming what to change."""
        options = self if self.adapters.present else self.with_adapters(default_adapters(patch))
        hardware = options.adapters
        for target, adapter in patch.adapters.items():
            short = target.rsplit(".", 1)[-1]
            if not hardware.covers(short):
                raise BadConfig(f"the patch adapts {target}, but the generated chip has low-rank blocks only on "
                                f"{', '.join(hardware.targets)}", field="--adapter-targets")
            if adapter.rank > hardware.rank:
                raise BadConfig(f"the patch's {target} has rank {adapter.rank}; the generated chip's low-rank "
                                f"blocks hold rank {hardware.rank} at most", field="--adapter-rank")
        return options

    def design_point(self, die, tables: dict) -> DesignPoint:
        """The design point of the chip generated for `die`: this one at the die's activation and KV
        widths, its widest weight format (each matrix's codes sit at their own width in one ROM word,
        so no weight takes a second slice) and a KV SRAM of the generated positions."""
        spec = die.spec
        kv_bits = _scalar(tables, "kv_bits")
        positions = min(self.positions or spec.max_context, spec.max_context)
        step = build(spec, self.point, self.adapters)
        bits = [die.quantized(m.name).format.bits for m in step.matrices()]
        kv_sram_bits = 2 * spec.layers * spec.kv_dim * kv_bits * positions
        adapter_sram_bits = sum(r.sram_bits() for r in step.low_rank())
        return self.point.replace(activation_bits=_scalar(tables, "activation_bits"), kv_bits=kv_bits,
                                  weight_bits=max(bits), high_precision_bits=0, high_precision_fraction=0.0,
                                  kv_sram_mib=kv_sram_bits / (8 * 2**20),
                                  lora_sram_mib=adapter_sram_bits / (8 * 2**20))


def int_matrix(die, tables: dict, name: str) -> IntMatrix:
    """The §3 constants of matrix `name`: the die's codes and zero points, golden's multipliers."""
    q = die.quantized(name)
    bias = tables.get(name + ".bias")
    return IntMatrix(name, np.asarray(q.codes), None if q.zeros is None else np.asarray(q.zeros), q.format.group,
                     np.asarray(tables[name + ".mult"]), np.asarray(tables[name + ".shift"]),
                     None if bias is None else np.asarray(bias))


def _scalar(tables, key) -> int:
    return int(np.asarray(tables[key]).reshape(-1)[0])


def _pair(tables, key) -> tuple[int, int]:
    m, k = np.asarray(tables[key]).reshape(-1)
    return int(m), int(k)


def norm_instance(instance: str, rom: str, shared: str, per: int, chunk_bits: int, shift: int, start: str,
                  h: str, x: str, mu: str, e: str, clock: str = "clk") -> list[str]:
    """A norm: its own multiplier ROM feeding the shared `hw_rmsnorm_*` block."""
    return [
        f"    wire [{chunk_bits - 1}:0] {instance}_addr;",
        f"    wire [{per * MULT_BITS - 1}:0] {instance}_word;",
        f"    {rom} {instance}_rom (.addr({instance}_addr), .data({instance}_word));",
        f"    {shared} {overrides(shift=(shift, 8))} {instance} (.clk({clock}), .rst(rst), .start({start}), .h({h}),",
        f"        .mult_addr({instance}_addr), .mult_word({instance}_word), .done({instance}_done), .x({x}),"
        f" .mu({mu}), .e({e}));",
    ]


def matvec_instance(index: int, short: str, go: str, x: str, mu: str, e: str, done: str, y: str,
                    low_rank: dict[str, int]) -> list[str]:
    """Layer `index`'s product by `short` started by `go`. A matrix with a §11 low-rank block
    (`low_rank`: short name -> width of its term vector) is preceded by it: the block starts on
    `go`, reads the same x, and its `done` starts the product, which adds its terms."""
    matrix = f"layers.{index}.{short}"
    start, term = go, ""
    lines = []
    if short in low_rank:
        lines = [f"    wire {short}_low_rank_done;",
                 f"    wire [{low_rank[short] - 1}:0] {short}_term;",
                 f"    {adapter_name(matrix)} {short}_low_rank (.clk(clk), .rst(rst), .start({go}), .x({x}), "
                 f".done({short}_low_rank_done), .term({short}_term));"]
        start, term = f"{short}_low_rank_done", f", .term({short}_term)"
    return lines + [f"    {module_name(matrix)} {short} (.clk(clk), .rst(rst), .start({start}), .x({x}), .mu({mu}), "
                    f".e({e}){term}, .done({done}), .y({y}));"]


def layer_module(index: int, spec, act_bits: int, positions: int, constants: dict) -> str:
    p = f"layers_{index}"
    dim, q_dim, kv_dim, ffn = spec.hidden_dim, spec.q_dim, spec.kv_dim, spec.ffn_dim
    pos_bits = index_bits(positions)
    w, r, a = INTERNAL_BITS, RESIDUAL_BITS, act_bits
    low_rank = constants.get("low_rank", {})

    def product(short, go, x, mu, e, done, y):
        return matvec_instance(index, short, go, x, mu, e, done, y, low_rank)
    attention_constants = overrides(score_mult=(constants["score_mult"], SCORE_MULT_BITS),
                                    score_shift=(constants["score_shift"], 8),
                                    out_mult=(constants["out_mult"], OUT_MULT_BITS), out_shift=(constants["out_shift"], 8))
    swiglu_constants = overrides(index_mult=(constants["index_mult"], 64), index_shift=(constants["index_shift"], 8),
                                 mult=(constants["glu_mult"], 64), shift=(constants["glu_shift"], 8))
    fsm = Fsm(("IDLE", *(stage.state for stage in LAYER_STAGES)))
    gos = [stage.go for stage in LAYER_STAGES]
    body = [
        *fsm.localparams(per_line=6),
        fsm.declaration(),
        f"    reg [{dim * r - 1}:0] h;                // the residual stream",
        "    assign h_out = h;",
        f"    reg {', '.join(gos)};",
        f"    reg [{max(len(stage.done) for stage in LAYER_STAGES) - 1}:0] finished;"
        "                  // parallel matvecs seen done (q, k, v or gate, up)",
        "    wire attn_norm_done, q_done, k_done, v_done, rope_done, attention_done, wo_done;",
        "    wire ffn_norm_done, gate_done, up_done, swiglu_done, down_done;",
        "    // §2.2 token scale (mu, e) of each matmul input, from the block that produced it",
        "    wire [3:0] attn_norm_mu, attn_norm_e, attended_mu, attended_e, ffn_norm_mu, ffn_norm_e, gated_mu, gated_e;",
        f"    wire [{dim * a - 1}:0] attn_normed;",
        f"    wire [{dim * a - 1}:0] ffn_normed;",
        f"    wire [{q_dim * w - 1}:0] q;",
        f"    wire [{kv_dim * w - 1}:0] k;",
        f"    wire [{kv_dim * w - 1}:0] v;",
        f"    wire [{(q_dim + kv_dim) * w - 1}:0] qk_rotated;",
        f"    wire [{q_dim * a - 1}:0] attended;",
        f"    wire [{dim * r - 1}:0] wo_y;",
        f"    wire [{ffn * w - 1}:0] gate;",
        f"    wire [{ffn * w - 1}:0] up;",
        f"    wire [{ffn * a - 1}:0] gated;",
        f"    wire [{dim * r - 1}:0] down_y;",
        "",
        *norm_instance("attn_norm", f"hw_rmsnorm_{p}_attn_norm_mult", constants["norm"], constants["norm_per"],
                       constants["norm_chunk_bits"], constants["attn_norm_shift"], "go_attn_norm", "h", "attn_normed",
                       "attn_norm_mu", "attn_norm_e"),
        *product("wq", "go_qkv", "attn_normed", "attn_norm_mu", "attn_norm_e", "q_done", "q"),
        *product("wk", "go_qkv", "attn_normed", "attn_norm_mu", "attn_norm_e", "k_done", "k"),
        *product("wv", "go_qkv", "attn_normed", "attn_norm_mu", "attn_norm_e", "v_done", "v"),
        "    hw_rope rope (.clk(clk), .rst(rst), .start(go_rope), .pos(pos), .x({k, q}), .done(rope_done), "
        ".y(qk_rotated));",
        f"    {constants['attention']} {attention_constants}",
        "        attention (.clk(clk), .rst(rst), .start(go_attention), .pos(pos), .first(first),",
        f"        .q(qk_rotated[{q_dim * w - 1}:0]), .k(qk_rotated[{(q_dim + kv_dim) * w - 1}:{q_dim * w}]), .v(v),",
        "        .done(attention_done), .out(attended), .mu(attended_mu), .e(attended_e));",
        *product("wo", "go_wo", "attended", "attended_mu", "attended_e", "wo_done", "wo_y"),
        *norm_instance("ffn_norm", f"hw_rmsnorm_{p}_ffn_norm_mult", constants["norm"], constants["norm_per"],
                       constants["norm_chunk_bits"], constants["ffn_norm_shift"], "go_ffn_norm", "h", "ffn_normed",
                       "ffn_norm_mu", "ffn_norm_e"),
        *product("w_gate", "go_gate_up", "ffn_normed", "ffn_norm_mu", "ffn_norm_e", "gate_done", "gate"),
        *product("w_up", "go_gate_up", "ffn_normed", "ffn_norm_mu", "ffn_norm_e", "up_done", "up"),
        f"    {constants['swiglu']} {swiglu_constants}",
        "        swiglu (.clk(clk), .rst(rst), .start(go_swiglu), .gate(gate), .up(up), .done(swiglu_done), .x(gated),",
        "        .mu(gated_mu), .e(gated_e));",
        *product("w_down", "go_down", "gated", "gated_mu", "gated_e", "down_done", "down_y"),
        "",
        "    // §8.2 residual: h = sat32(h + y), in the cycle the wo or w_down product is done",
        "    // (element by element: a function of whole vectors makes Verilator clear its wide temporaries",
        "    // in every cycle)",
        f"    function [{r - 1}:0] residual_add;",
        f"        input [{r - 1}:0] stream;",
        f"        input [{r - 1}:0] y;",
        f"        reg signed [{r}:0] sum;",
        f"        reg signed [{r}:0] limit;",
        "        begin",
        f"            limit = {r + 1}'sh{(1 << (r - 1)) - 1:x};",
        f"            sum = $signed({{stream[{r - 1}], stream}}) + $signed({{y[{r - 1}], y}});",
        f"            residual_add = sum > limit ? limit[{r - 1}:0] : sum < -limit ? -limit[{r - 1}:0] : sum[{r - 1}:0];",
        "        end",
        "    endfunction",
        "    integer i;",
        "",
        "    // h is written with blocking assignments (a non-blocking write to part of a wide vector makes",
        "    // verilated code copy all of it twice in every cycle); each element is read before its write,",
        "    // and the norms and the next layer read h only in later cycles.",
        "    /* verilator lint_off BLKSEQ */",
        "    always @(posedge clk) begin",
        f"        {clear_pulses(*gos)}",
        f"        {clear_pulses('done')}",
        *fsm.clocked(sequencer_arms(fsm, LAYER_STAGES, on_start=["h = h_in;"]), before_case=[
            "// one residual adder array, shared by the wo and the w_down sums",
            "if ((state == WO && wo_done) || (state == DOWN && down_done))",
            f"    for (i = 0; i < {dim}; i = i + 1)",
            f"        h[i * {r} +: {r}] = residual_add(h[i * {r} +: {r}], state == WO ? wo_y[i * {r} +: {r}] : "
            f"down_y[i * {r} +: {r}]);"]),
        "    end",
        "    /* verilator lint_on BLKSEQ */",
    ]
    ports = [Port("input", "clk"), Port("input", "rst"), Port("input", "start"), Port("input", "pos", pos_bits),
             Port("input", "first", pos_bits), Port("input", "h_in", dim * r), Port("output", "done", reg=True),
             Port("output", "h_out", dim * r)]
    return module(f"hw_layer_{index}", ports, "\n".join(body),
                  f"Layer {index}: one pipeline stage of the token step (hardwire.golden.forward.GoldenTransformer.step).")


def clock_gate_module() -> tuple[str, str]:
    """`hw_clock_gate`: the clock of one pipeline stage, running only while the stage has work.

    The enable is sampled on the falling edge, so the gated clock only ever passes whole high phases
    of `clk` (no glitch; the enable logic has half a cycle to settle, as with a flop-based ICG cell).
    A gated stage costs a real chip no clock power while it waits, and costs Verilator nothing: the
    always blocks of a stage whose clock does not rise are not evaluated at all."""
    body = "\n".join([
        "    reg enabled;",
        "    always @(negedge clk) enabled <= enable;",
        "    assign gclk = clk & enabled;",
    ])
    ports = [Port("input", "clk"), Port("input", "enable"), Port("output", "gclk")]
    return "hw_clock_gate", module("hw_clock_gate", ports, body, clock_gate_module.__doc__.splitlines()[0])


def gated_stage(name: str, start: str, done: str, gate: bool) -> list[str]:
    """Declarations for stage `name`'s clock `{name}_clk`. Gated, it runs from the cycle its `start`
    pulse is seen until the cycle after its `done` pulse (which clears the pulse), and in reset;
    ungated, it is `clk`."""
    if not gate:
        return [f"    wire {name}_clk = clk;"]
    return [
        f"    wire {name}_clk;",
        f"    reg {name}_busy;",
        f"    hw_clock_gate {name}_gate (.clk(clk), .enable(rst | {start} | {name}_busy), .gclk({name}_clk));",
        f"    always @(posedge clk) {name}_busy <= !rst && ({start} || ({name}_busy && !{done}));",
    ]


def chip_module(spec, act_bits: int, positions: int, classifier: str, constants: dict, gate_clocks: bool = True) -> str:
    dim, vocab, layers = spec.hidden_dim, spec.vocab_size, spec.layers
    pos_bits = index_bits(positions)
    token_bits = index_bits(vocab)
    r = RESIDUAL_BITS
    window = spec.sliding_window
    fsm = Fsm(("IDLE", "BUSY", "STREAM", "OUT"))
    body = [
        *fsm.localparams(),
        last_value("LAST_TOKEN", vocab - 1, token_bits),
        fsm.declaration(),
        f"    reg [{pos_bits - 1}:0] pos;",
        f"    reg [{pos_bits - 1}:0] first;         // the first position attended (sliding window)",
        f"    reg [{token_bits - 1}:0] token;",
        "    reg go_embed;",
        "    wire embed_done, final_norm_done, classify_done;",
        "    wire [3:0] final_mu, final_e;",
        f"    wire [{layers - 1}:0] layer_done;     // each stage's done starts the next",
        f"    wire [{(layers + 1) * dim * r - 1}:0] stream;   // h between stages: embed, layer 0, ..., layer {layers - 1}",
        f"    wire [{dim * act_bits - 1}:0] final_normed;",
        f"    wire [{vocab * r - 1}:0] logits;",
        f"    reg [{token_bits - 1}:0] best;",
        f"    reg signed [{r - 1}:0] best_logit;",
        "    assign position = pos;",
        "    assign in_ready = state == IDLE;",
        "    assign out_valid = state == OUT;",
        "    assign out_token = best;",
        "    assign logit_valid = state == STREAM;",
        f"    assign logit = logits[logit_index * {r} +: {r}];",
        "",
        "    // Each stage (embedding, every layer, final norm + classifier) runs on its own gated clock,",
        "    // only while it has work: one stage is busy at a time.",
        *gated_stage("embed", "go_embed", "embed_done", gate_clocks),
        "    hw_embed_lookup embed (.clk(embed_clk), .rst(rst), .start(go_embed), .token(token), .done(embed_done), "
        f".h(stream[{dim * r - 1}:0]));",
    ]
    for i in range(layers):
        start = "embed_done" if i == 0 else f"layer_done[{i - 1}]"
        body += gated_stage(f"layer_{i}", start, f"layer_done[{i}]", gate_clocks)
        body.append(f"    hw_layer_{i} layer_{i} (.clk(layer_{i}_clk), .rst(rst), .start({start}), .pos(pos), "
                    f".first(first), .h_in(stream[{i * dim * r} +: {dim * r}]), .done(layer_done[{i}]), "
                    f".h_out(stream[{(i + 1) * dim * r} +: {dim * r}]));")
    final_norm = norm_instance("final_norm", "hw_rmsnorm_final_norm_mult", constants["norm"], constants["norm_per"],
                               constants["norm_chunk_bits"], constants["final_norm_shift"], f"layer_done[{layers - 1}]",
                               f"stream[{layers * dim * r} +: {dim * r}]", "final_normed", "final_mu", "final_e",
                               clock="head_clk")
    body += [
        *gated_stage("head", f"layer_done[{layers - 1}]", "classify_done", gate_clocks),
        *final_norm,
        f"    {module_name(classifier)} classifier (.clk(head_clk), .rst(rst), .start(final_norm_done), "
        ".x(final_normed), .mu(final_mu), .e(final_e), .done(classify_done), .y(logits));",
        "",
    ]
    if window is None:
        first = f"{pos_bits}'d0"
    else:
        first = f"pos >= {pos_bits}'d{window} ? pos - {pos_bits}'d{window - 1} : {pos_bits}'d0"
    # the host protocol: take a token, run the stages (each stage's done starts the next), stream the logits
    arms = [
        *fsm.arm("IDLE", ["token <= in_token;", "go_embed <= 1'b1;", f"first <= {first};", fsm.goto("BUSY")],
                 when="in_valid"),
        *fsm.arm("BUSY", [f"logit_index <= {token_bits}'d0;", f"best <= {token_bits}'d0;",
                          f"best_logit <= logits[{r - 1}:0];", fsm.goto("STREAM")], when="classify_done"),
        *fsm.arm("STREAM", ["if (logit > best_logit) begin", "    best <= logit_index;", "    best_logit <= logit;",
                            "end", f"logit_index <= logit_index + {token_bits}'d1;",
                            f"if (logit_index == LAST_TOKEN) {fsm.goto('OUT')}"],
                 comment="§9.1 argmax: the first index of the largest logit"),
        *fsm.arm("OUT", [f"pos <= pos + {pos_bits}'d1;", fsm.goto("IDLE")], when="out_ready"),
    ]
    body += [
        "    always @(posedge clk) begin",
        f"        {clear_pulses('go_embed')}",
        *fsm.clocked(arms, on_reset=[f"pos <= {pos_bits}'d0;"]),
        "    end",
    ]
    ports = [Port("input", "clk"), Port("input", "rst"),
             Port("input", "in_valid"), Port("output", "in_ready"), Port("input", "in_token", token_bits),
             Port("output", "logit_valid"), Port("output", "logit_index", token_bits, reg=True),
             Port("output", "logit", r, signed=True),
             Port("output", "out_valid"), Port("input", "out_ready"), Port("output", "out_token", token_bits),
             Port("output", "position", pos_bits)]
    return module("hw_chip", ports, "\n".join(body),
                  "The chip: one token step per in_valid/in_ready transfer (hardwire.golden.forward "
                  "GoldenTransformer.step),\nits logits streamed, the greedy next token offered on out_valid.")


def generate(die, tables: dict | None = None, options: RtlOptions | None = None) -> Design:
    """The Verilog design of `die`: every block, the layers and the top `hw_chip`."""
    from hardwire.golden.tables import tables_for
    options = options or RtlOptions()
    tables = tables if tables is not None else tables_for(die)
    spec = die.spec
    point = options.point
    adapters = options.adapters
    step = build(die, point, adapters)  # each matvec's lanes and cycles, the low-rank blocks (hardwire.datapath)
    act_bits = _scalar(tables, "activation_bits")
    kv_bits = _scalar(tables, "kv_bits")
    positions = min(options.positions or spec.max_context, spec.max_context)
    design = Design(top="hw_chip")
    if options.gate_clocks:
        design.add(*clock_gate_module())
    notes = {"options": options.to_dict(), "positions": positions, "activation_bits": act_bits, "kv_bits": kv_bits,
             "matvec": {}, "low_rank": {}}

    def add_all(modules: dict[str, str]) -> None:
        for name, text in modules.items():
            design.add(name, text)

    design.add(*rsqrt_table_module(tables["rsqrt_table"]))
    design.add(*reciprocal_table_module(tables["reciprocal_table"]))
    design.add(*rope_table_module(tables["rope_cos"], tables["rope_sin"], positions))
    design.add(*kv_sram_module(positions, spec.kv_dim * kv_bits))
    add_all(rope_module(spec.heads + spec.kv_heads, spec.head_dim, positions))

    embed = die.quantized("embed")
    add_all(embed_module(np.asarray(embed.codes), None if embed.zeros is None else np.asarray(embed.zeros),
                         embed.format.group, np.asarray(tables["embed.lookup_mult"]),
                         np.asarray(tables["embed.lookup_shift"]), point.embed_per_cycle))

    eps = _scalar(tables, "norm_eps")
    add_all(rmsnorm_module(spec.hidden_dim, act_bits, eps, point.norm_per_cycle))
    add_all(attention_module(spec.heads, spec.kv_heads, spec.head_dim, positions, kv_bits, act_bits,
                             np.asarray(tables["exp2_table"])))
    hadamard = online_hadamard_block(die.manifest)       # §12: 1 unless the die records the transform
    add_all(swiglu_module(spec.ffn_dim, act_bits, tables["sigmoid_table"], point.norm_per_cycle, hadamard))
    norm_per, norm_chunks = chunk_plan(spec.hidden_dim, point.norm_per_cycle)
    shared = {"norm": rmsnorm_name(spec.hidden_dim, act_bits, point.norm_per_cycle), "norm_per": norm_per,
              "norm_chunk_bits": index_bits(norm_chunks),
              "attention": attention_name(spec.heads, spec.kv_heads, spec.head_dim),
              "swiglu": swiglu_name(spec.ffn_dim, act_bits, point.norm_per_cycle, hadamard)}

    def add_matvec(name: str, out_bits: int, low_rank: int = 0) -> int:
        """The product's modules, and its §11 low-rank block with `low_rank` lanes (0: none); returns
        the width of the block's term vector (0: none)."""
        matrix = int_matrix(die, tables, name)
        plan = step.plan(name)
        bits = term_bits(matrix.cols, low_rank, act_bits) if low_rank else 0
        add_all(matvec_modules(matrix, act_bits, out_bits, point.weight_style, plan.lanes, bits))
        notes["matvec"][name] = {"rows": matrix.rows, "cols": matrix.cols, "lanes": plan.lanes, "cycles": plan.cycles}
        if low_rank:
            add_all(adapter_module(name, matrix.rows, matrix.cols, low_rank, act_bits))
            notes["low_rank"][name] = {"rows": matrix.rows, "cols": matrix.cols, "rank": low_rank}
        return matrix.rows * bits

    for i in range(spec.layers):
        p = f"layers.{i}."
        low_rank = {}
        for short in LAYER_MATRICES:
            width = add_matvec(p + short, RESIDUAL_BITS if short in ("wo", "w_down") else INTERNAL_BITS,
                               adapters.rank if adapters.covers(short) else 0)
            if width:
                low_rank[short] = width
        for norm in ("attn_norm", "ffn_norm"):
            add_all(rmsnorm_rom(p + norm, np.asarray(tables[p + norm + ".mult"]), spec.hidden_dim,
                                point.norm_per_cycle))
        score_m, score_k = _pair(tables, p + "score_mult")
        out_m, out_k = _pair(tables, p + "attention_out_mult")
        index_m, index_k = _pair(tables, p + "sigmoid_index_mult")
        glu_m, glu_k = _pair(tables, p + "swiglu_mult")
        constants = {**shared, "attn_norm_shift": _scalar(tables, p + "attn_norm.shift"),
                     "ffn_norm_shift": _scalar(tables, p + "ffn_norm.shift"), "score_mult": score_m,
                     "score_shift": score_k, "out_mult": out_m, "out_shift": out_k, "index_mult": index_m,
                     "index_shift": index_k, "glu_mult": glu_m, "glu_shift": glu_k, "low_rank": low_rank}
        design.add(f"hw_layer_{i}", layer_module(i, spec, act_bits, positions, constants))
    add_all(rmsnorm_rom("final_norm", np.asarray(tables["final_norm.mult"]), spec.hidden_dim, point.norm_per_cycle))
    head = spec.classifier
    add_matvec(head, RESIDUAL_BITS)
    design.add("hw_chip", chip_module(spec, act_bits, positions, head,
                                      {**shared, "final_norm_shift": _scalar(tables, "final_norm.shift")},
                                      options.gate_clocks))
    design.notes = notes
    return design
