"""`hardwire rtl`, `hardwire sim` and `hardwire synth`."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from hardwire.errors import BadConfig


def open_die_argument(path: Optional[Path]):
    from hardwire.die import is_die, open_die
    if not is_die(path):
        raise BadConfig("expected a die directory (make one with `hardwire freeze MODEL --plan w8 -o NAME.die`)",
                        path=path)
    return open_die(path)


def adapter_design(rank: Optional[int], targets: Optional[str]):
    """--adapter-rank / --adapter-targets: the chip's §11 low-rank blocks (none unless asked for or
    a patch is run; then hardwire.rtl.top.PATCH_ADAPTERS for what is not given)."""
    from hardwire.adapters import MAX_RANK, TARGETS
    from hardwire.datapath import NO_ADAPTERS, AdapterDesign
    from hardwire.rtl.top import PATCH_ADAPTERS
    if rank is None and targets is None:
        return NO_ADAPTERS
    if rank is not None and not 1 <= rank <= MAX_RANK:
        raise BadConfig(f"expected a rank in [1, {MAX_RANK}], got {rank}", field="--adapter-rank")
    shorts = PATCH_ADAPTERS.targets
    if targets is not None:
        shorts = tuple(name.strip() for name in targets.split(",") if name.strip())
        if not shorts or any(name not in TARGETS for name in shorts):
            raise BadConfig(f"expected a comma-separated list of {', '.join(TARGETS)}; got {targets!r}",
                            field="--adapter-targets")
    return AdapterDesign(PATCH_ADAPTERS.rank if rank is None else rank, shorts)


def rtl_options(weights_per_lane: Optional[int], style: str, context: Optional[int], gate_clocks: bool = True,
                adapters=None):
    from hardwire.datapath import NO_ADAPTERS, RTL_POINT, weight_style
    from hardwire.rtl.top import RTL_STYLES, RtlOptions
    if weight_style(style) not in RTL_STYLES:
        raise BadConfig(f"expected one of {', '.join(RTL_STYLES)} (rom is rom_mac), got {style!r}", field="--style")
    if weights_per_lane is None:
        weights_per_lane = RTL_POINT.weights_per_lane
    if weights_per_lane < 1:
        raise BadConfig(f"expected a positive number, got {weights_per_lane}", field="--weights-per-lane")
    if context is not None and context < 1:
        raise BadConfig(f"expected a positive number of positions, got {context}", field="--context")
    return RtlOptions(weights_per_lane=weights_per_lane, style=style, positions=context, gate_clocks=gate_clocks,
                      adapters=adapters or NO_ADAPTERS)


def icarus_generate(die, options, prompt, ids, max_tokens: int, temperature: float):
    """Greedy generation by Icarus in one batch run (the chip's own argmax feeds each token back)."""
    import time

    from hardwire.backend import Generation, decode_continuation, prompt_ids
    from hardwire.golden.engine import GoldenEngine
    from hardwire.rtl.sim import run_icarus_chip
    from hardwire.rtl.top import generate
    if temperature != 0:
        raise BadConfig("--simulator icarus runs greedy decoding only (the chip's argmax); use --temperature 0 "
                        "or --simulator verilator", field="--temperature")
    golden = GoldenEngine(die)
    start = golden.check_ids(prompt_ids(golden, prompt, ids))
    positions = min(options.positions or die.spec.max_context, die.spec.max_context)
    max_tokens = max(0, min(max_tokens, positions - len(start)))
    log("icarus: about 35 simulated cycles per second on a stories260K-sized chip; expect minutes per token")
    began = time.perf_counter()
    steps = run_icarus_chip(generate(die, golden.tables, options), start, max_tokens, die.spec.vocab_size)
    seconds = time.perf_counter() - began
    generated = [token for token, _ in steps[len(start) - 1:]]
    stops, reason = golden.stop_ids(), "length"
    for i, token in enumerate(generated):
        if token in stops:
            generated, reason = generated[:i], "eos"
            break
    cycles = [c for _, c in steps]
    result = Generation(start, generated, decode_continuation(golden.tokenizer, start, generated), reason,
                        {"cycles": int(sum(cycles)), "cycles_per_token": cycles,
                         "mean_cycles_per_token": sum(cycles) / len(cycles) if cycles else 0.0})
    return result, start, seconds


def log(message: str) -> None:
    print(f"hardwire: {message}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    lanes_help = "cycles per matrix-vector product, which sets the MAC lanes (default: ChipConfig's, 256)"
    gating_help = ("each pipeline stage on its own gated clock, running only while it has work (default); "
                   "--no-clock-gating: every stage on clk, e.g. for an FPGA, where gated clocks are avoided")
    rank_help = ("largest rank of the chip's low-rank adapter blocks (§11), each with an SRAM loaded at run time "
                 "(default: none; 16 when --adapter-targets or --patch is given)")
    targets_help = "layer matrices with a low-rank adapter block, e.g. wq,wv (default with --adapter-rank: all seven)"

    @app.command()
    def rtl(die: Path = typer.Argument(..., help="die directory"),
            output: Path = typer.Option(..., "-o", "--output", help="directory for the Verilog"),
            weights_per_lane: Optional[int] = typer.Option(None, "--weights-per-lane", help=lanes_help),
            style: str = typer.Option("rom_mac", "--style",
                                      help="rom_mac (ROM + MAC lanes; also `rom`) | hardwired (constant multipliers)"),
            context: Optional[int] = typer.Option(None, "--context", help="KV-cache positions (default: the model's)"),
            gate_clocks: bool = typer.Option(True, "--clock-gating/--no-clock-gating", help=gating_help),
            adapter_rank: Optional[int] = typer.Option(None, "--adapter-rank", help=rank_help),
            adapter_targets: Optional[str] = typer.Option(None, "--adapter-targets", help=targets_help)):
        """Write the die's Verilog: one file per module, top `hw_chip`, files.f and design.json."""
        from hardwire.rtl.build import write_rtl
        opened = open_die_argument(die)
        design = write_rtl(opened, output, rtl_options(weights_per_lane, style, context, gate_clocks,
                                                       adapter_design(adapter_rank, adapter_targets)))
        print(f"{output}  top {design.top}, {len(design.modules)} modules, "
              f"{sum(len(t) for t in design.modules.values()) / 1e6:.2f} MB of Verilog")

    @app.command()
    def sim(die: Path = typer.Argument(..., help="die directory"),
            ids: Optional[str] = typer.Option(None, "--ids", help="prompt token ids (default: BOS)"),
            prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="prompt text"),
            max_tokens: int = typer.Option(32, "--max-tokens", "-n", min=0),
            temperature: float = typer.Option(0.0, "--temperature", "-t"),
            top_p: float = typer.Option(1.0, "--top-p"),
            seed: int = typer.Option(0, "--seed"),
            simulator: str = typer.Option("verilator", "--simulator", help="verilator | icarus"),
            weights_per_lane: Optional[int] = typer.Option(None, "--weights-per-lane", help=lanes_help),
            context: Optional[int] = typer.Option(None, "--context", help="KV-cache positions (default: the model's)"),
            gate_clocks: bool = typer.Option(True, "--clock-gating/--no-clock-gating", help=gating_help),
            clock_ghz: float = typer.Option(1.0, "--clock-ghz", help="the clock that turns the RTL's cycles into "
                                                                     "chip time (the estimate's default, 1 GHz)"),
            patch: Optional[Path] = typer.Option(None, "--patch", help="a patch (hardwire patch train) loaded into "
                                                                       "the chip's adapter SRAM at simulation start"),
            adapter_rank: Optional[int] = typer.Option(None, "--adapter-rank", help=rank_help),
            adapter_targets: Optional[str] = typer.Option(None, "--adapter-targets", help=targets_help),
            as_json: bool = typer.Option(False, "--json")):
        """Generate tokens by simulating the die's RTL cycle by cycle (the build is cached by die id).
        Reports the chip time of the cycles taken and the datapath's prediction of them. With --patch,
        the patch runs from the adapter SRAM (the same build serves every patch that fits)."""
        import time

        from hardwire.backend import prompt_ids
        from hardwire.chip.estimate import generation_timing
        from hardwire.golden.tables import tables_for
        from hardwire.rtl.engine import RtlEngine, timing_report
        if simulator not in ("verilator", "icarus"):
            raise BadConfig(f"expected verilator or icarus, got {simulator!r}", field="--simulator")
        if not 0 < clock_ghz <= 10:
            raise BadConfig(f"expected a clock in (0, 10] GHz, got {clock_ghz}", field="--clock-ghz")
        opened = open_die_argument(die)
        options = rtl_options(weights_per_lane, "rom_mac", context, gate_clocks,
                              adapter_design(adapter_rank, adapter_targets))
        if simulator == "icarus" and (patch is not None or options.adapters.present):
            raise BadConfig("--simulator icarus does not load adapter SRAMs; use verilator", field="--simulator")
        opened_patch = None
        if simulator == "icarus":
            result, start, seconds = icarus_generate(opened, options, prompt, ids, max_tokens, temperature)
            # the prompt, then the chip's own tokens
            stepped = (list(start) + list(result.ids))[:len(result.extra.get("cycles_per_token", []))]
        else:
            engine = RtlEngine(opened, options=options, log=log, patch=patch)
            options, opened_patch = engine.options, engine.patch
            try:
                start = prompt_ids(engine, prompt, ids)
                began = time.perf_counter()
                result = engine.generate(start, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                         seed=seed)
                seconds = time.perf_counter() - began
                stepped = list(engine.stepped)
            finally:
                engine.close()
        cycles = result.extra.get("cycles_per_token", [])
        steps = len(cycles)
        timing = timing_report(opened, tables_for(opened), options, stepped, cycles, clock_ghz, opened_patch)
        if as_json:
            print(json.dumps({"ids": result.ids, "text": result.text, "prompt_ids": start,
                              "stop_reason": result.stop_reason, "backend": "rtl",
                              "chip": generation_timing(opened.spec, prompt_tokens=len(start),
                                                        generated_tokens=len(result.ids)),
                              "simulator": simulator, "simulated_steps_per_s": steps / seconds if seconds else 0.0,
                              "patch": opened_patch.id if opened_patch is not None else None,
                              "adapters": options.adapters.to_dict(),
                              **result.extra, **timing}))
        else:
            print((prompt or "") + result.text)
            measured, predicted = timing["rtl_chip"], timing["rtl_estimate"]
            print(f"hardwire: {steps} token steps, {result.extra.get('cycles', 0)} cycles "
                  f"({result.extra.get('mean_cycles_per_token', 0):.0f} per token), {steps / seconds:.1f} simulated "
                  f"steps/s", file=sys.stderr)
            print(f"hardwire: chip time {measured['total_ms'] * 1e3:.1f} us at {clock_ghz:g} GHz "
                  f"({measured['tokens_per_s']:,.0f} tokens/s); the datapath predicts {predicted['cycles']} cycles "
                  f"({'exact' if predicted['exact'] else 'differs'})", file=sys.stderr)

    @app.command()
    def synth(die: Path = typer.Argument(..., help="die directory"),
              block: Optional[str] = typer.Option(None, "--block", help="a module to synthesize alone, e.g. hw_layer_0 "
                                                                       "or hw_matvec_layers_0_wq (default: hw_chip)"),
              weights_per_lane: Optional[int] = typer.Option(None, "--weights-per-lane", help=lanes_help),
              style: str = typer.Option("rom_mac", "--style", help="rom_mac (also `rom`) | hardwired"),
              context: Optional[int] = typer.Option(None, "--context", help="KV-cache positions (default: the model's)"),
              gate_clocks: bool = typer.Option(True, "--clock-gating/--no-clock-gating", help=gating_help),
              flat: bool = typer.Option(False, "--flat", help="one flattened Yosys run, not bottom-up by block "
                                                              "(over 30 min for a stories260K layer)"),
              jobs: int = typer.Option(2, "--jobs", min=1, help="Yosys runs at a time (bottom-up); each can take "
                                                                "a few GiB"),
              as_json: bool = typer.Option(False, "--json")):
        """Yosys synthesis (generic cells) of the design or one block: cells by type, flip-flops. A block
        that instantiates others is synthesized bottom-up: each distinct child with its constants, then
        the block's own logic, summed over the instances."""
        from hardwire.rtl.synth import synthesize
        opened = open_die_argument(die)
        report = synthesize(opened, rtl_options(weights_per_lane, style, context, gate_clocks), block=block, log=log, flat=flat,
                            jobs=jobs)
        if as_json:
            print(json.dumps(report))
        else:
            print(f"{report['top']}: {report['cells']:,} cells, {report['flip_flops']:,} flip-flop bits, "
                  f"{report['seconds']:.0f} s, peak {report['peak_rss_mib']:.0f} MiB")
            for b in report.get("blocks", []):
                times = f" x {b['instances']}" if b["instances"] > 1 else ""
                print(f"  {b['module']}{times} ({b['role']}): {b['cells']:,} cells, {b['flip_flops']:,} flip-flop "
                      f"bits, {b['seconds']:.0f} s {b['parameters']}")
            for kind, count in sorted(report["cells_by_type"].items(), key=lambda kv: -kv[1]):
                print(f"  {kind:24s} {count:>12,}")
