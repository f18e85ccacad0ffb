"""The report as one self-contained HTML page: inline CSS, inline SVG, no script, nothing fetched.
Every chart has its numbers in a table beside it; every figure of the summary carries its exact
value in `data-value` (the number `hardwire estimate --json` prints) for tools that read the page."""
from __future__ import annotations

import math
from html import escape

from hardwire.report import charts
from hardwire.report.content import Missing, Report

# The page may fetch nothing: a browser blocks any request (and says so on its console) even if a
# later change slips one in. Inline styles for the CSS and matplotlib's SVG; data: for the heatmap's PNG.
POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1180px;padding:12px;
color:#111;background:#fff;line-height:1.4}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:2px;margin-top:1.6em}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}.row>div{flex:1 1 360px;min-width:0;overflow-x:auto}
svg{max-width:100%;height:auto}table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}td:first-child,th:first-child{text-align:left}
.scroll{overflow-x:auto;max-width:100%}.missing{color:#555;font-style:italic}nav{display:flex;flex-wrap:wrap;gap:.2em .9em}
"""


def number(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return escape(str(value))
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if value != 0 and (abs(value) >= 1e15 or abs(value) < 1e-3):
        return f"{value:.{digits}g}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}g}"


def table(headers: list[str], rows: list[list], caption: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell if isinstance(cell, Cell) else number(cell)}</td>" for cell in row)
                   + "</tr>" for row in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


class Cell(str):
    """Table cell HTML that is already escaped."""


def text(value) -> Cell:
    return Cell(escape(str(value)))


def keyed(key: str, value, shown: str) -> Cell:
    return Cell(f'<span data-key="{escape(key)}" data-value="{escape(repr(value))}">{escape(shown)}</span>')


def missing(part) -> str:
    return f'<p class="missing">{escape(part.reason)}</p>'


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


def side_by_side(chart: str, numbers: str) -> str:
    return f'<div class="row"><div>{chart}</div><div>{numbers}</div></div>'


def summary(e: dict) -> str:
    rows = [
        ("model", "model", e["model"], str(e["model"])),
        ("chip", "chip", e["chip"], f"{e['chip']} ({e['weight_style']}, {e['mean_weight_bits']:.2f}-bit weights, "
                                    f"{e['clock_ghz']:g} GHz)"),
        ("process node", "node", e["node"], e["node"]),
        ("area", "area_mm2", e["area_mm2"], f"{e['area_mm2']:,.2f} mm² on {e['chips']} chip(s)"),
        ("transistors", "transistors", e["transistors"], f"{round(e['transistors']):,}"),
        ("power at load", "power_w", e["power_w"], f"{e['power_w']:,.4g} W ({e['load_users']} users)"),
        ("tokens/s per user", "tokens_per_s", e["tokens_per_s"], f"{e['tokens_per_s']:,.0f} at context "
                                                                 f"{e['context']:,}"),
        ("latency per token", "latency_us_per_token", e["latency_us_per_token"], f"{e['latency_us_per_token']:,.4g} µs"),
        ("maximum users (KV SRAM)", "max_users", e["max_users"], f"{e['max_users']:,}"),
        ("aggregate tokens/s", "aggregate_tokens_per_s", e["aggregate_tokens_per_s"],
         f"{e['aggregate_tokens_per_s']:,.0f}"),
        ("energy per token", "energy_per_token_j", e["energy_per_token_j"], f"{e['energy_per_token_j']:.4g} J"),
        ("die cost / yield", "die_cost_usd", e["die_cost_usd"], f"${e['die_cost_usd']:,.2f} / {e['yield']:.0%}"),
        ("cost per million tokens", "cost_per_mtok_usd", e["cost_per_mtok_usd"], f"${e['cost_per_mtok_usd']:.6g}"),
    ]
    return table(["quantity", "value"], [[text(name), keyed(key, value, shown)] for name, key, value, shown in rows])


def area_part(e: dict) -> str:
    breakdown = e["area_breakdown_mm2"]
    rows = [[text(name), area, 100 * area / e["area_mm2"] if e["area_mm2"] else 0.0] for name, area in breakdown.items()]
    numbers = table(["block", "area, mm²", "share, %"], rows + [[text("total"), e["area_mm2"], 100.0]])
    bars = charts.area_breakdown(breakdown, f"{e['area_mm2']:,.2f} mm² on {e['chips']} chip(s)")
    plan = charts.floorplan(breakdown, e["chips"])
    return (section("area", "Area", side_by_side(bars, numbers))
            + section("floorplan", "Floorplan sketch",
                      "<p>Each block a rectangle with its area to scale, packed into a square of the total area; "
                      "proportions, not placement" + (f" (the model spans {e['chips']} chips)" if e["chips"] > 1
                                                       else "") + ".</p>" + side_by_side(plan, numbers)))


def bits_part(bits) -> str:
    if isinstance(bits, Missing):
        return section("bits", "Bits per tensor", missing(bits))
    chart = charts.bits_heatmap(bits["layers"], bits["tensors"], bits["matrix"]) if bits["layers"] else ""
    grid = table(["layer"] + bits["tensors"], [[layer] + row for layer, row in zip(bits["layers"], bits["matrix"])],
                 "bits per weight, scales included")
    other = table(["tensor", "format", "shape", "bits/weight", "ROM bits"],
                  [[text(o["tensor"]), text(o["format"]), text("×".join(map(str, o["shape"]))), o["bits_per_weight"],
                    o["rom_bits"]] for o in bits["other"]], "outside the layers")
    totals = bits["totals"]
    head = (f"<p>Plan <b>{escape(str(bits['plan'].get('default')))}</b>: {totals['bits_per_weight']:.4f} bits per "
            f"weight in the matrices, {totals['rom_bits']:,} ROM bits in all.</p>")
    return section("bits", "Bits per tensor", head + side_by_side(chart, grid) + other)


def quality_part(quality) -> str:
    if isinstance(quality, Missing):
        return section("quality", "Quality against the float model", missing(quality))
    q = quality
    rows = [["perplexity", q["perplexity"], q["float_perplexity"]],
            ["top-1 agreement with float", q["top1_agreement"], 1.0],
            ["KL divergence from float (mean, nats)", q["kl_mean"], 0.0]]
    rows = [[text(r[0]), keyed(k, r[1], number(r[1], 6)), text(number(r[2], 6))]
            for r, k in zip(rows, ("perplexity", "top1_agreement", "kl_mean"))]
    name = escape(q["text"].rsplit("/", 1)[-1])
    note = (f"<p>{q['tokens']:,} tokens in {q['sequences']} windows of the first {q['stories']} documents of "
            f"{name}, as <code>hardwire quality DIE --stories {q['stories']} --text {name}</code> scores them "
            f"(the report's --stories and --text set how many and which).</p>")
    return section("quality", "Quality against the float model", note + table(["measure", "die", "float"], rows))


def context_part(rows: list[dict]) -> str:
    numbers = table(["context", "latency, µs/token", "tokens/s per user", "max users", "aggregate tokens/s"],
                    [[r["context"], r["latency_us_per_token"], r["tokens_per_s"], r["max_users"],
                      r["aggregate_tokens_per_s"]] for r in rows])
    return section("context", "Latency, speed and users against context",
                   "<p>The same chip decoding with more cached positions per user.</p>"
                   + charts.context_curves(rows) + numbers)


def sim_part(result, kind: str) -> str:
    if kind == "preset":
        return "<p>Golden vs RTL: a preset has no weights, so there is no RTL to simulate.</p>"
    if isinstance(result, Missing):
        return f'<p class="missing">Golden vs RTL: {escape(result.reason)} (the report does not simulate).</p>'
    status = "the same tokens" if result["match"] else "DIFFERENT tokens"
    rows = [[text("prompt ids"), text(" ".join(map(str, result["prompt_ids"])))],
            [text(f"RTL ({result['simulator']})"), text(" ".join(map(str, result["rtl_ids"])))],
            [text("golden model, greedy"), text(" ".join(map(str, result["golden_ids"])))],
            [text("RTL's text"), text(result["text"] if isinstance(result["text"], str) else "–")],
            [text("golden vs RTL"), keyed("golden_matches_rtl", result["match"], status)],
            [text("RTL cycles"), result["rtl_cycles"]],
            [text("datapath's predicted cycles"), result["predicted_cycles"]],
            [text("prediction exact for every token"), text(result["cycles_exact"])]]
    return ("<p>Golden vs RTL, from <code>hardwire sim DIE --json</code>: the golden model generates from the same "
            "prompt greedily (a sim run with --temperature above 0 samples, and may differ).</p>"
            + table(["", "value"], rows))


def rtl_part(synth, sim_result, kind: str) -> str:
    sim = sim_part(sim_result, kind)
    if isinstance(synth, Missing):
        return section("rtl", "RTL and synthesis", sim + missing(synth))
    rows = [[text("cells"), keyed("synth_cells", synth["cells"], f"{synth['cells']:,}")],
            [text("flip-flop bits"), synth["flip_flops"]]]
    if "estimate_cells" in synth:
        rows += [[text("estimate's cells for the layer"), synth["estimate_cells"]],
                 [text("synthesized / estimate"), synth["ratio"]]]
    body = sim + f"<p>Synthesis of <code>{escape(str(synth['top']))}</code> (Yosys, generic cells).</p>"
    body += table(["quantity", "value"], rows)
    if "estimate_note" in synth:
        body += f'<p class="missing">{escape(synth["estimate_note"])}</p>'
    if synth["blocks"]:
        body += table(["block", "role", "instances", "cells", "flip-flop bits"],
                      [[text(b.get("module")), text(b.get("role")), b.get("instances"), b.get("cells"),
                        b.get("flip_flops")] for b in synth["blocks"]], "by block")
    return section("rtl", "RTL and synthesis", body)


def economics_part(econ) -> str:
    if isinstance(econ, Missing):
        return section("economics", "Economics", missing(econ))
    e = econ
    months = e["break_even_months"]
    rows = [[text("units for the load"), e["chips"], e["gpus"]],
            [text("cost per million tokens, $"), e["chip_cost_per_mtok_usd"], e["gpu_cost_per_mtok_usd"]],
            [text("cost over the deployment, $"), e["chip_cost_usd"], e["gpu_cost_usd"]],
            [text("power at load, W"), e["chip_power_w"], e["gpu_power_w"]],
            [text("NRE over the deployment, $"), e["nre_usd"], text("–")],
            [text("chip pays off after"), text("never" if months is None else f"{months:,.1f} months"), text("")]]
    head = (f"<p>{e['load_tokens_per_s']:,.0f} tokens/s for {e['months']:g} months, {e['updates_per_year']:g} model "
            f"updates a year, against {escape(str(e['gpu']))} (`hardwire economics` defaults).</p>")
    return section("economics", "Economics", head + table(["quantity", escape(str(e["chip"])), escape(str(e["gpu"]))],
                                                          rows))


def ttc_part(ttc) -> str:
    if isinstance(ttc, Missing):
        return section("ttc", "Time to correct", missing(ttc))
    numbers = table(["system", "tasks", "solved", "median, s", "p90, s"],
                    [[text(s["system"]), s["tasks"], s["solved"], s["median_s"], s["p90_s"]] for s in ttc["systems"]])
    head = f"<p>Task set {escape(str(ttc['task_set']))}, {escape(str(ttc['mode']))} attempts.</p>"
    return section("ttc", "Time to correct", head + side_by_side(charts.ttc_solved(ttc["systems"]), numbers))


def explore_part(explore) -> str:
    if isinstance(explore, Missing):
        return section("explore", "Design space", missing(explore))
    axes, points, front = explore["axes"], explore["points"], explore["pareto"]
    if len(axes) < 2:
        return section("explore", "Design space", '<p class="missing">the points have fewer than two numeric '
                                                  'keys to plot</p>')
    keys = [k for k in points[0] if k not in axes][:4] if points else []
    numbers = table(keys + axes, [[text(points[i].get(k)) if not isinstance(points[i].get(k), (int, float))
                                   else points[i].get(k) for k in keys + axes] for i in front],
                    f"the Pareto front: {len(front)} of {len(points)} points")
    return section("explore", "Design space", side_by_side(charts.pareto(points, front, axes), numbers))


def render(report: Report) -> str:
    e = report.estimate
    parts = [section("summary", "Chip summary", summary(e)), area_part(e), bits_part(report.bits),
             quality_part(report.quality), context_part(report.contexts), rtl_part(report.synth, report.sim, report.kind),
             economics_part(report.economics), ttc_part(report.ttc), explore_part(report.explore)]
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("summary", "summary"), ("area", "area"), ("floorplan", "floorplan"), ("bits", "bits"), ("quality", "quality"),
        ("context", "context"), ("rtl", "RTL"), ("economics", "economics"), ("ttc", "time to correct"),
        ("explore", "design space")))
    title = f"hardwire report: {report.subject} on {e['chip']}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{escape(title)}</h1><nav>{nav}</nav>{''.join(parts)}</body></html>\n")
