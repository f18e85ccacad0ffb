"""The report's charts as inline SVG text: matplotlib (`format="svg"`, glyphs drawn as paths so no
font is fetched) for plots, hand-written rectangles for the floorplan sketch. Colours from tab10
and viridis, which stay apart for the common colour-vision deficiencies."""
from __future__ import annotations

import io
import math
from html import escape

TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
         "#17becf")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"svg.fonttype": "path", "svg.hashsalt": "hardwire-report", "font.size": 9})
    return plt


def svg_of(fig) -> str:
    """The figure as an <svg> element (no XML prolog, no date: the same input gives the same page)."""
    plt = _pyplot()
    buffer = io.StringIO()
    try:
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    finally:
        plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def area_breakdown(breakdown: dict[str, float], title: str) -> str:
    plt = _pyplot()
    names = list(breakdown)
    fig, ax = plt.subplots(figsize=(6.4, 0.35 * len(names) + 1.0))
    ax.barh(names, [breakdown[n] for n in names], color=[TAB10[i % 10] for i in range(len(names))])
    ax.invert_yaxis()
    ax.set_xlabel("area, mm²")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return svg_of(fig)


def floorplan(breakdown: dict[str, float], chips: int, width_px: int = 420) -> str:
    """The blocks as rectangles whose areas are to scale with each other, laid out in strips across a
    square die (slice-and-dice, largest first); not a placement, a picture of proportions."""
    items = sorted(((name, area) for name, area in breakdown.items() if area > 0), key=lambda kv: -kv[1])
    total = sum(area for _, area in items)
    if not total:
        return ""
    side_mm = math.sqrt(total)
    scale = width_px / side_mm
    colours = {name: TAB10[i % 10] for i, name in enumerate(breakdown)}
    shapes = []
    x, y, strip_h, strip = 0.0, 0.0, 0.0, []

    def place(strip_items, y0):
        strip_area = sum(a for _, a in strip_items)
        height = strip_area / side_mm
        x0 = 0.0
        for name, area in strip_items:
            w = area / height if height else 0
            shapes.append((name, area, x0, y0, w, height))
            x0 += w
        return height

    # greedy strips: keep adding blocks to a strip while its worst aspect ratio improves
    def worst(strip_items):
        strip_area = sum(a for _, a in strip_items)
        height = strip_area / side_mm
        return max(max(height / (a / height), (a / height) / height) for _, a in strip_items)

    for item in items:
        if strip and worst(strip + [item]) > worst(strip):
            y += place(strip, y)
            strip = []
        strip.append(item)
    if strip:
        place(strip, y)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width_px} {width_px}" '
             f'width="{width_px}" height="{width_px}" role="img" aria-label="floorplan sketch">',
             f'<rect x="0" y="0" width="{width_px}" height="{width_px}" fill="#fff" stroke="#000"/>']
    for name, area, x0, y0, w, h in shapes:
        px, py, pw, ph = x0 * scale, y0 * scale, w * scale, h * scale
        parts.append(f'<rect x="{px:.2f}" y="{py:.2f}" width="{pw:.2f}" height="{ph:.2f}" fill="{colours[name]}" '
                     f'fill-opacity="0.85" stroke="#fff" stroke-width="1"><title>{escape(name)}: {area:,.2f} mm²'
                     f'</title></rect>')
        if pw > 60 and ph > 14:
            parts.append(f'<text x="{px + 4:.2f}" y="{py + 12:.2f}" font-size="11" font-family="sans-serif" '
                         f'fill="#000">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bits_heatmap(layers: list[int], tensors: list[str], matrix: list[list[float | None]]) -> str:
    import numpy as np
    plt = _pyplot()
    values = np.array([[math.nan if v is None else v for v in row] for row in matrix], dtype=float)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(tensors) + 1.8), max(2.2, 0.28 * len(layers) + 1.4)))
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(tensors)), tensors, rotation=30, ha="right")
    ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    ax.set_ylabel("layer")
    if len(layers) * len(tensors) <= 160:
        low, high = np.nanmin(values), np.nanmax(values)
        for i in range(len(layers)):
            for j in range(len(tensors)):
                if not math.isnan(values[i, j]):
                    dark = high == low or (values[i, j] - low) / (high - low) < 0.6
                    ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if dark else "black")
    fig.colorbar(image, ax=ax, label="bits per weight (scales included)")
    fig.tight_layout()
    return svg_of(fig)


def context_curves(rows: list[dict]) -> str:
    plt = _pyplot()
    contexts = [r["context"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.2))
    for ax, key, label, colour in zip(axes, ("latency_us_per_token", "tokens_per_s", "max_users"),
                                      ("latency per token, µs", "tokens/s per user", "maximum users (KV SRAM)"),
                                      TAB10):
        ax.plot(contexts, [r[key] for r in rows], marker="o", color=colour)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context (positions)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return svg_of(fig)


def ttc_solved(systems: list[dict]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    styles = ("-", "--", ":", "-.")
    for i, system in enumerate(systems):
        if system["times_s"]:
            ax.step(system["times_s"], system["fractions"], where="post", color=TAB10[i % 10],
                    linestyle=styles[(i // 10) % 4], label=system["system"])
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("time, s")
    ax.set_ylabel("fraction of tasks solved")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return svg_of(fig)


def pareto(points: list[dict], front: list[int], axes: list[str]) -> str:
    plt = _pyplot()
    x_key, y_key = axes
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    usable = [p for p in points if isinstance(p.get(x_key), (int, float)) and isinstance(p.get(y_key), (int, float))]
    ax.scatter([p[x_key] for p in usable], [p[y_key] for p in usable], color=TAB10[7], alpha=0.6, label="points")
    ringed = sorted((points[i][x_key], points[i][y_key]) for i in front
                    if isinstance(points[i].get(x_key), (int, float)) and isinstance(points[i].get(y_key), (int, float)))
    if ringed:
        ax.plot([p[0] for p in ringed], [p[1] for p in ringed], marker="o", color=TAB10[1],
                label=f"Pareto front ({len(ringed)})")
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return svg_of(fig)
