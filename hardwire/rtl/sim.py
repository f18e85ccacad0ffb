"""Simulator runners: Icarus Verilog for block unit tests, Verilator for the whole token step.

Icarus runs a generated Verilog testbench that reads input vectors from a hex file and writes the
outputs, one line per vector (about 35 cycles/s on a stories260K-sized design: unit tests only).
Verilator compiles the design with a generated plain C++ testbench (`tb.cpp`, no cocotb) that
speaks a line protocol on stdin/stdout, so one build serves the engine, `hardwire sim` and the
benchmark (see `TESTBENCH_PROTOCOL`).

Builds are cached under `$HARDWIRE_CACHE_DIR` (default `~/.cache/hardwire`) in `rtl/<key>`, the key
hashing the generated Verilog, the testbench and the flags (hardwire.rtl.build.design_key), so a
second `hardwire sim` of the same die starts in well under a second and a changed generator never
reuses a stale build.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from hardwire.errors import HardwireError

VERILATOR_FLAGS = [
    # Measured (docs/rtl.md, measured toolchain facts): Verilator 5.006's DFG optimiser makes wide
    # ROM + MAC designs ~30x slower to simulate; without it the same design runs at ~1.2 M cycles/s.
    "-fno-dfg",
    # Keep loops over lanes as loops: unrolled, the C++ of a stories260K chip is ~35 MB and takes g++
    # tens of minutes; rolled, it is a fraction of that.
    "--unroll-count", "4",
    "-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert",
    "-Wno-fatal",
    # Verilator's makefile compiles the model with OPT_FAST (-Os by default), placed after -CFLAGS, so
    # it overrides CXX_FLAGS' level. At -Os g++ does not inline even VL_MULS_III (the MAC's signed
    # product) into the big clocked functions: measured on stories260K, -O2 runs 14% fewer instructions
    # per simulated token than -Os or -O1 (36.5 M against 42.3 M) for ~30 s more build; -O3 another 6%
    # fewer instructions but no faster in wall time and ~20 s more build.
    "-MAKEFLAGS", "OPT_FAST=-O2",
]
CXX_FLAGS = "-O2"


class SimulatorMissing(HardwireError):
    """A simulator binary (verilator, iverilog, vvp, yosys) is not installed."""


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SimulatorMissing(f"`{tool}` is not installed; on Debian/Ubuntu: apt-get install verilator iverilog yosys")
    return path


def cache_root() -> Path:
    root = os.environ.get("HARDWIRE_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "hardwire"


def build_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


# -- hex vectors ------------------------------------------------------------------------------------

def pack_vector(values, width: int) -> int:
    word = 0
    for i, value in enumerate(values):
        word |= (int(value) & ((1 << width) - 1)) << (i * width)
    return word


def unpack_vector(word: int, width: int, count: int, signed: bool = True) -> list[int]:
    values = []
    for i in range(count):
        v = (word >> (i * width)) & ((1 << width) - 1)
        if signed and v >> (width - 1):
            v -= 1 << width
        values.append(v)
    return values


# -- Icarus: a block, a list of input vectors ---------------------------------------------------------

def run_icarus(modules: dict[str, str], top: str, inputs: list[tuple[str, int]], outputs: list[tuple[str, int]],
               vectors: list[list[int]], sequential: bool = True, workdir: str | Path | None = None,
               timeout_s: float = 600, parameters: str = "", plusargs: tuple[str, ...] = ()) -> list[list[int]]:
    """Simulate `top` once per vector with Icarus and return the raw output words.

    `inputs`/`outputs`: (port, width) pairs; a vector gives one integer (bit pattern) per input
    port. Sequential blocks have clk, rst, start and done: each vector is applied, start pulsed,
    and the outputs read when done rises. Combinational blocks are read 1 ns after the inputs.
    `parameters`: the instance's parameter overrides, e.g. `emit.overrides(...)`. `plusargs`: given to
    the simulation (`+name`), which runs in `workdir` (files a block loads at start go there)."""
    require("iverilog")
    require("vvp")
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="hardwire-icarus-")) if own else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        in_width = sum(w for _, w in inputs)
        out_width = sum(w for _, w in outputs)
        with open(work / "vectors.hex", "w") as f:
            for vector in vectors:
                word = 0
                offset = 0
                for (name, width), value in zip(inputs, vector):
                    word |= (int(value) & ((1 << width) - 1)) << offset
                    offset += width
                f.write(f"{word:x}\n")
        lines = ["`timescale 1ns/1ps", "module tb;"]
        for name, width in inputs:
            lines.append(f"    reg [{width - 1}:0] in_{name};")
        for name, width in outputs:
            lines.append(f"    wire [{width - 1}:0] out_{name};")
        lines.append(f"    reg [{in_width - 1}:0] vectors [0:{len(vectors) - 1}];")
        lines.append("    integer i, f, cycles;")
        connections = [f".{n}(in_{n})" for n, _ in inputs] + [f".{n}(out_{n})" for n, _ in outputs]
        if sequential:
            lines += ["    reg clk = 1'b0, rst = 1'b1, start = 1'b0;", "    wire done;", "    always #5 clk = ~clk;"]
            connections = [".clk(clk)", ".rst(rst)", ".start(start)", ".done(done)"] + connections
        lines.append(f"    {top} {parameters} dut ({', '.join(connections)});")
        unpack = []
        offset = 0
        for name, width in inputs:
            unpack.append(f"in_{name} = vectors[i][{offset + width - 1}:{offset}];")
            offset += width
        out_concat = "{" + ", ".join(f"out_{n}" for n, _ in reversed(outputs)) + "}"
        lines += ["    initial begin", '        $readmemh("vectors.hex", vectors);', '        f = $fopen("results.hex", "w");']
        if sequential:
            lines += ["        repeat (2) @(negedge clk);", "        rst = 1'b0;"]
        lines += [f"        for (i = 0; i < {len(vectors)}; i = i + 1) begin"]
        lines += [f"            {u}" for u in unpack]
        if sequential:
            lines += ["            @(negedge clk) start = 1'b1;", "            @(negedge clk) start = 1'b0;",
                      "            cycles = 1;",
                      "            while (!done) begin @(negedge clk); cycles = cycles + 1; end"]
        else:
            lines += ["            #1;", "            cycles = 0;"]
        lines += [f'            $fwrite(f, "%h %0d\\n", {out_concat}, cycles);', "        end",
                  "        $fclose(f);", "        $finish;", "    end", "endmodule"]
        (work / "tb.v").write_text("\n".join(lines) + "\n")
        sources = []
        for name, text in modules.items():
            (work / f"{name}.v").write_text(text)
            sources.append(f"{name}.v")
        compile_ = subprocess.run(["iverilog", "-g2012", "-o", "sim.vvp", "-s", "tb", "tb.v", *sources], cwd=work,
                                  capture_output=True, text=True, timeout=timeout_s)
        if compile_.returncode:
            raise RuntimeError(f"iverilog failed:\n{compile_.stderr[-4000:]}")
        run = subprocess.run(["vvp", "-n", "sim.vvp", *plusargs], cwd=work, capture_output=True, text=True, timeout=timeout_s)
        if run.returncode:
            raise RuntimeError(f"vvp failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
        results = []
        for line in (work / "results.hex").read_text().split("\n"):
            if not line.strip():
                continue
            word_text, cycles = line.split()
            if "x" in word_text.lower() or "z" in word_text.lower():
                raise RuntimeError(f"simulation produced unknown bits: {word_text}")
            word = int(word_text, 16)
            fields, offset = [], 0
            for _, width in outputs:
                fields.append((word >> offset) & ((1 << width) - 1))
                offset += width
            results.append(fields + [int(cycles)])
        return results
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


# -- Verilator: the whole chip behind a line protocol ---------------------------------------------------

TESTBENCH_PROTOCOL = """\
stdin, one command per line:
  R                  reset (a new sequence: position 0)
  T <id> <logits>    one token step; with logits=1 first prints `L v_0 ... v_{vocab-1}` (int32)
  Q                  quit
stdout: `N <next token> <cycles>` after each T (cycles from the in_valid transfer to out_valid),
`OK` after R, `E <message>` on a timeout."""

TESTBENCH_CPP = r"""// Generated by hardwire: a plain C++ testbench for hw_chip (protocol in hardwire/rtl/sim.py).
#include "Vhw_chip.h"
#include "verilated.h"
#include <cstdint>
#include <cstdio>
#include <vector>

static Vhw_chip* chip;
static uint64_t cycles = 0;

static void tick() {
    chip->clk = 0;
    chip->eval();
    chip->clk = 1;
    chip->eval();
    cycles++;
}

static void reset() {
    chip->rst = 1;
    chip->in_valid = 0;
    chip->out_ready = 0;
    tick();
    tick();
    chip->rst = 0;
    tick();
}

int main(int argc, char** argv) {
    Verilated::commandArgs(argc, argv);
    chip = new Vhw_chip;
    std::vector<int32_t> logits(VOCAB);
    const uint64_t limit = CYCLE_LIMIT;
    reset();
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        if (line[0] == 'Q') break;
        if (line[0] == 'R') {
            reset();
            printf("OK\n");
        } else if (line[0] == 'T') {
            unsigned id = 0, want = 0;
            if (sscanf(line + 1, "%u %u", &id, &want) < 1) { printf("E bad command\n"); fflush(stdout); continue; }
            while (!chip->in_ready) tick();
            const uint64_t start = cycles;
            chip->in_token = id;
            chip->in_valid = 1;
            tick();
            chip->in_valid = 0;
            bool timeout = false;
            while (!chip->out_valid) {
                tick();
                if (chip->logit_valid) logits[chip->logit_index] = (int32_t)chip->logit;
                if (cycles - start > limit) { timeout = true; break; }
            }
            if (timeout) { printf("E timeout after %llu cycles\n", (unsigned long long)(cycles - start)); fflush(stdout); return 1; }
            const uint64_t used = cycles - start;
            if (want) {
                fputc('L', stdout);
                for (int i = 0; i < VOCAB; i++) printf(" %d", logits[i]);
                fputc('\n', stdout);
            }
            printf("N %u %llu\n", (unsigned)chip->out_token, (unsigned long long)used);
            chip->out_ready = 1;
            tick();
            chip->out_ready = 0;
        }
        fflush(stdout);
    }
    chip->final();
    delete chip;
    return 0;
}
"""


def build_verilator(design, key: str, vocab: int, jobs: int | None = None, cycle_limit: int = 50_000_000,
                    directory: Path | None = None, log=None) -> Path:
    """Compile `design` with the testbench; returns the binary. Reuses a finished build under the key.
    `jobs`: parallel C++ compiles (default: one per CPU; Verilator splits the model into several files)."""
    require("verilator")
    jobs = jobs or os.cpu_count() or 1
    root = directory or cache_root() / "rtl" / key
    binary = root / "obj" / "chip_sim"
    if binary.exists():
        return binary
    partial = root.parent / f".{root.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "src").mkdir(parents=True)
    design.write(partial / "src")
    (partial / "src" / "tb.cpp").write_text(TESTBENCH_CPP)
    sources = [str(partial / "src" / f) for f in design.files()]
    command = ["verilator", "--cc", "--exe", "--build", "-j", str(jobs), "--top-module", design.top,
               "-Mdir", str(partial / "obj"), "-o", "chip_sim", *VERILATOR_FLAGS,
               "-CFLAGS", f"{CXX_FLAGS} -DVOCAB={vocab} -DCYCLE_LIMIT={cycle_limit}ULL",
               str(partial / "src" / "tb.cpp"), *sources]
    if log:
        log(f"verilator: building {design.top} ({len(sources)} modules) in {root}")
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"verilator build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    if root.exists():
        shutil.rmtree(root, ignore_errors=True)
    os.replace(partial, root)
    # Verilator bakes absolute source paths only into debug info; the binary is relocatable.
    return binary


class ChipSimulator:
    """A running simulator binary: `step(token)` -> (int logits or None, next token, cycles).
    `workdir` and `plusargs`: where it runs and its `+name` arguments (files it loads at start,
    such as the adapter SRAM images, are found there)."""

    def __init__(self, binary: Path, vocab: int, workdir: Path | None = None, plusargs: tuple[str, ...] = ()):
        self.vocab = vocab
        self.process = subprocess.Popen([str(binary), *plusargs], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, bufsize=1, cwd=workdir)

    def _send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def _read(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the RTL simulator exited (code {self.process.poll()})")
        if line.startswith("E "):
            raise RuntimeError(f"the RTL simulator reported: {line[2:].strip()}")
        return line

    def reset(self) -> None:
        self._send("R")
        assert self._read().strip() == "OK"

    def step(self, token: int, logits: bool = True):
        self._send(f"T {int(token)} {1 if logits else 0}")
        values = None
        line = self._read()
        if line.startswith("L"):
            values = [int(v) for v in line.split()[1:]]
            if len(values) != self.vocab:
                raise RuntimeError(f"expected {self.vocab} logits from the simulator, got {len(values)}")
            line = self._read()
        _, next_token, cycles = line.split()
        return values, int(next_token), int(cycles)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self._send("Q")
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# -- Icarus: the whole chip, greedy, in batch -------------------------------------------------------------

def icarus_chip_testbench(prompt: list[int], max_tokens: int, token_bits: int) -> str:
    """A Verilog testbench that feeds the prompt, then feeds each greedy next token back for
    `max_tokens` tokens, writing `N <next> <cycles>` per step to results.txt."""
    lines = [
        "`timescale 1ns/1ps",
        "module tb;",
        "    reg clk = 1'b0, rst = 1'b1, in_valid = 1'b0, out_ready = 1'b0;",
        f"    reg [{token_bits - 1}:0] in_token = {token_bits}'d0;",
        "    wire in_ready, logit_valid, out_valid;",
        f"    wire [{token_bits - 1}:0] logit_index, out_token;",
        "    wire signed [31:0] logit;",
        "    hw_chip chip (.clk(clk), .rst(rst), .in_valid(in_valid), .in_ready(in_ready), .in_token(in_token),",
        "        .logit_valid(logit_valid), .logit_index(logit_index), .logit(logit), .out_valid(out_valid),",
        "        .out_ready(out_ready), .out_token(out_token), .position());",
        "    always #5 clk = ~clk;",
        f"    reg [{token_bits - 1}:0] prompt [0:{len(prompt) - 1}];",
        "    integer f, step, cycles;",
        "    initial begin",
        *[f"        prompt[{i}] = {token_bits}'d{t};" for i, t in enumerate(prompt)],
        '        f = $fopen("results.txt", "w");',
        "        repeat (3) @(negedge clk);",
        "        rst = 1'b0;",
        f"        for (step = 0; step < {len(prompt) - 1 + max_tokens}; step = step + 1) begin",
        f"            in_token = step < {len(prompt)} ? prompt[step] : out_token;",
        "            while (!in_ready) @(negedge clk);",
        "            in_valid = 1'b1;",
        "            @(negedge clk) in_valid = 1'b0;",
        "            cycles = 1;",
        "            while (!out_valid) begin @(negedge clk); cycles = cycles + 1; end",
        '            $fwrite(f, "N %0d %0d\\n", out_token, cycles);',
        "            $fflush(f);",
        "            out_ready = 1'b1;",
        "            @(negedge clk) out_ready = 1'b0;",
        "        end",
        "        $fclose(f);",
        "        $finish;",
        "    end",
        "endmodule",
    ]
    return "\n".join(lines) + "\n"


def run_icarus_chip(design, prompt: list[int], max_tokens: int, vocab: int, workdir: Path | None = None,
                    timeout_s: float = 24 * 3600) -> list[tuple[int, int]]:
    """(next token, cycles) per step of greedy generation, simulated by Icarus (slow: minutes per token)."""
    from hardwire.rtl.emit import index_bits
    require("iverilog")
    require("vvp")
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="hardwire-icarus-chip-")) if own else Path(workdir)
    try:
        design.write(work)
        (work / "tb.v").write_text(icarus_chip_testbench(prompt, max_tokens, index_bits(vocab)))
        compile_ = subprocess.run(["iverilog", "-g2012", "-o", "chip.vvp", "-s", "tb", "tb.v", *design.files()],
                                  cwd=work, capture_output=True, text=True)
        if compile_.returncode:
            raise RuntimeError(f"iverilog failed:\n{compile_.stderr[-4000:]}")
        run = subprocess.run(["vvp", "-n", "chip.vvp"], cwd=work, capture_output=True, text=True, timeout=timeout_s)
        if run.returncode:
            raise RuntimeError(f"vvp failed:\n{run.stderr[-2000:]}")
        steps = []
        for line in (work / "results.txt").read_text().splitlines():
            _, token, cycles = line.split()
            steps.append((int(token), int(cycles)))
        return steps
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
