"""`hardwire report`: one self-contained HTML page whose figures are the other commands' figures.

The page is read back as text: every number of the summary carries its exact value in `data-value`,
compared with `hardwire estimate --json` for the same input, the quality table with
`hardwire quality --json`. Self-contained means nothing in it names a resource outside the file.
"""
from __future__ import annotations

import ast
import json
import re
import shutil
import struct
import subprocess
from html import unescape
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TTC_RESULT = ROOT / "docs" / "ttc" / "add-independent.json"
TASK_TEXT = ROOT / "hardwire" / "data" / "task-models" / "task-small" / "calibration.txt"   # what it was trained on
STORIES = 3


def figures(page: str) -> dict:
    """{data-key: value} of every keyed figure on the page."""
    return {key: ast.literal_eval(unescape(value))
            for key, value in re.findall(r'data-key="([^"]+)" data-value="([^"]*)"', page)}


def section(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S)
    assert match, f"no section {anchor}"
    return match.group(1)


def assert_self_contained(page: str) -> None:
    assert not re.search(r"<script|<link|<iframe|<img|<object|<embed|@import|url\((?!#)", page, re.I)
    assert not re.search(r'src\s*=\s*["\']?https?:', page, re.I)
    # links only to places on the page or data inside it (a heatmap's pixels are an embedded PNG;
    # SVG's xmlns names a namespace, nothing is fetched from it)
    hrefs = re.findall(r'href\s*=\s*"([^"]*)"', page)
    assert all(href.startswith(("#", "data:image/png;base64,")) for href in hrefs), {h[:40] for h in hrefs}


def assert_matches_estimate(page: str, estimate: dict) -> None:
    shown = figures(page)
    for key in ("model", "chip", "node", "area_mm2", "transistors", "power_w", "tokens_per_s", "latency_us_per_token",
                "max_users", "aggregate_tokens_per_s", "energy_per_token_j", "die_cost_usd", "cost_per_mtok_usd"):
        assert shown[key] == estimate[key], key


@pytest.fixture(scope="module")
def die_report(task_die, tmp_path_factory) -> Path:
    """The bundled task model's report with the committed time-to-correct result (the command run in
    this process once; the tests below read the page)."""
    from hardwire.cli import main
    out = tmp_path_factory.mktemp("report") / "die.html"
    assert main(["report", task_die, "-o", str(out), "--ttc", str(TTC_RESULT), "--stories", str(STORIES),
                 "--text", str(TASK_TEXT)]) == 0
    return out


@pytest.fixture(scope="module")
def die_page(die_report) -> str:
    return die_report.read_text()


def test_a_die_report_is_one_self_contained_page_with_every_section(die_page):
    assert_self_contained(die_page)
    for anchor in ("summary", "area", "floorplan", "bits", "quality", "context", "rtl", "economics", "ttc",
                   "explore"):
        section(die_page, anchor)
    assert section(die_page, "area").count("<svg") == 1 and section(die_page, "floorplan").count("<svg") == 1
    assert "<svg" in section(die_page, "bits") and "<svg" in section(die_page, "context")
    assert "not given" in section(die_page, "explore")


def test_the_die_report_figures_are_the_estimate_and_quality_figures(die_page, task_die, cli):
    estimate = json.loads(cli("estimate", task_die, "--json").stdout)
    assert_matches_estimate(die_page, estimate)
    quality = json.loads(cli("quality", task_die, "--stories", STORIES, "--text", TASK_TEXT, "--json").stdout)
    shown = figures(die_page)
    for key in ("perplexity", "top1_agreement", "kl_mean"):
        assert shown[key] == quality[key], key


def test_the_bits_map_has_every_layer_and_matrix_of_the_die(die_page, task_die, cli):
    described = json.loads(cli("inspect", task_die, "--json").stdout)
    bits = section(die_page, "bits")
    layers = {int(name.split(".")[1]) for name in described["tensors"] if name.startswith("layers.")}
    matrices = {name.split(".", 2)[2] for name, row in described["tensors"].items()
                if name.startswith("layers.") and row["kind"] == "quantized"}
    header = re.search(r"<thead><tr>(.*?)</tr></thead>", bits).group(1)
    assert set(re.findall(r"<th>([^<]*)</th>", header)) == {"layer"} | matrices
    assert len(re.findall(r"<tr><td>\d+</td>", bits)) == len(layers)
    assert f"{described['totals']['rom_bits']:,}" in bits


def test_ttc_result_draws_a_curve_per_system_with_its_numbers(die_page):
    ttc = section(die_page, "ttc")
    result = json.loads(TTC_RESULT.read_text())
    assert "<svg" in ttc
    for system in result["systems"]:
        assert system["system"] in ttc
    # matplotlib writes one path group per plotted line, labelled in the legend
    assert len(re.findall(r'<g id="line2d_', ttc)) >= len(result["systems"])


def test_a_preset_report_has_what_needs_no_weights_and_says_why_the_rest_is_missing(tmp_path, cli):
    out = tmp_path / "preset.html"
    cli("report", "llama-3.2-1b", "-o", out)
    page = out.read_text()
    assert_self_contained(page)
    assert_matches_estimate(page, json.loads(cli("estimate", "--preset", "llama-3.2-1b", "--json").stdout))
    for anchor in ("bits", "quality"):
        assert "is a preset" in section(page, anchor) and "<svg" not in section(page, anchor)
    assert "<svg" in section(page, "area") and "<svg" in section(page, "context")
    assert "1,024" in section(page, "context") and "131,072" in section(page, "context")


def test_the_chip_option_is_the_estimates(tmp_path, cli):
    out = tmp_path / "n3.html"
    cli("report", "llama-3.2-1b", "--chip", "hc1", "-o", out)
    estimate = json.loads(cli("estimate", "--preset", "llama-3.2-1b", "--chip", "hc1", "--json").stdout)
    assert_matches_estimate(out.read_text(), estimate)


def test_explore_and_synth_results_are_shown_with_their_numbers(tmp_path, task_die, cli):
    explore = tmp_path / "explore.json"
    points = [{"model": "m", "plan": p, "area_mm2": a, "perplexity": q} for p, a, q in
              (("w8", 2.0, 10.0), ("w4", 1.0, 12.0), ("w6", 1.6, 13.0))]
    explore.write_text(json.dumps({"points": points, "pareto": [0, 1], "objectives": ["area_mm2:min",
                                                                                      "perplexity:min"]}))
    synth = tmp_path / "synth.json"
    synth.write_text(json.dumps({"top": "hw_layer_0", "cells": 123456, "flip_flops": 789, "cells_by_type": {},
                                 "blocks": [{"module": "hw_matvec", "role": "matvec", "instances": 7,
                                             "cells": 1000, "flip_flops": 10}]}))
    out = tmp_path / "both.html"
    cli("report", task_die, "-o", out, "--explore", explore, "--synth", synth, "--stories", 1)
    page = out.read_text()
    front = section(page, "explore")
    assert "<svg" in front and "2 of 3 points" in front and "w8" in front and "w6" not in front
    rtl = section(page, "rtl")
    assert figures(page)["synth_cells"] == 123456 and "hw_matvec" in rtl
    assert "synthesized / estimate" in rtl


def test_a_sim_result_is_compared_with_the_golden_models_tokens(tmp_path, task_die, cli):
    """The golden tokens come from `hardwire run --backend golden`; a sim result that agrees is shown
    as the same tokens, one with a token changed as different."""
    golden = json.loads(cli("run", task_die, "--backend", "golden", "--ids", "1", "-n", "6", "--json").stdout)["ids"]
    for ids, status in ((golden, "the same tokens"), ([(golden[0] + 1) % 50] + golden[1:], "DIFFERENT tokens")):
        sim = tmp_path / "sim.json"
        sim.write_text(json.dumps({"ids": ids, "prompt_ids": [1], "simulator": "verilator", "cycles": 100,
                                   "rtl_estimate": {"cycles": 100, "exact": True}}))
        out = tmp_path / "sim.html"
        cli("report", task_die, "-o", out, "--sim", sim, "--stories", 1)
        page = out.read_text()
        assert status in section(page, "rtl")
        assert figures(page)["golden_matches_rtl"] is (status == "the same tokens")


@pytest.mark.parametrize("args, needle", [
    (["no-such-model"], "neither a die nor a model preset"),
    (["llama-3.2-1b", "--ttc", "{missing}"], "--ttc"),
    (["llama-3.2-1b", "--ttc", "{not_json}"], "not valid"),
    (["llama-3.2-1b", "--ttc", "{no_systems}"], "systems"),
    (["llama-3.2-1b", "--explore", "{no_systems}"], "points"),
    (["llama-3.2-1b", "--synth", "{no_systems}"], "cells"),
    (["llama-3.2-1b", "--sim", "{no_systems}"], "ids"),
    (["llama-3.2-1b", "--sim", "{sim}"], "give the die"),
    (["llama-3.2-1b", "--stories", "0"], "--stories"),
    (["llama-3.2-1b", "--chip", "no-such-chip"], "no-such-chip"),
])
def test_bad_input_is_one_line_and_exit_2_and_writes_nothing(tmp_path, cli, args, needle):
    files = {"missing": tmp_path / "absent.json", "not_json": tmp_path / "bad.json",
             "no_systems": tmp_path / "other.json"}
    files["not_json"].write_text("{not json")
    files["no_systems"].write_text(json.dumps({"tasks": 3}))
    files["sim"] = tmp_path / "sim.json"
    files["sim"].write_text(json.dumps({"ids": [5], "prompt_ids": [1]}))
    out = tmp_path / "out.html"
    proc = cli("report", *[a.format(**files) for a in args], "-o", out, expect=2)
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()


def test_an_output_in_a_missing_folder_is_refused(tmp_path, cli):
    proc = cli("report", "llama-3.2-1b", "-o", tmp_path / "no" / "page.html", expect=2)
    assert "--output" in proc.stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", *args], capture_output=True, text=True, timeout=120)


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_a_browser_loads_the_page_with_no_console_message_and_reads_the_estimate_back(die_report, task_die, cli,
                                                                                     tmp_path):
    """The page's Content-Security-Policy blocks any request and the browser logs each one it blocks on
    the console, so a silent console is a page that asked for nothing; the figures are read from the
    DOM the browser built, not from the file."""
    url = die_report.resolve().as_uri()
    loaded = chromium("--dump-dom", url)
    assert loaded.returncode == 0, loaded.stderr
    assert "CONSOLE" not in loaded.stderr, [line for line in loaded.stderr.splitlines() if "CONSOLE" in line]
    assert_matches_estimate(loaded.stdout, json.loads(cli("estimate", task_die, "--json").stdout))
    quality = json.loads(cli("quality", task_die, "--stories", STORIES, "--text", TASK_TEXT, "--json").stdout)
    assert figures(loaded.stdout)["top1_agreement"] == quality["top1_agreement"]
    for width, height in ((1280, 800), (390, 844)):
        shot = tmp_path / f"report-{width}.png"
        taken = chromium(f"--window-size={width},{height}", f"--screenshot={shot}", url)
        assert taken.returncode == 0 and "CONSOLE" not in taken.stderr, taken.stderr
        assert png_size(shot) == (width, height)
