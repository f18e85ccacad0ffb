"""The command line contracts (README, docs) for import and run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hardwire.runtime.engine import make_engine


def test_logits_command_writes_teacher_forced_float32(cli, tmp_path):
    out = tmp_path / "logits.npy"
    cli("logits", "--ids", "1,403,407,261", "-o", out)
    saved = np.load(out)
    assert saved.dtype == np.float32 and saved.shape == (4, 512)
    np.testing.assert_array_equal(saved, make_engine().logits([1, 403, 407, 261]))


def test_inspect_json_describes_bundled_model(cli):
    info = json.loads(cli("inspect", "--json").stdout)
    spec = info["spec"]
    assert (spec["hidden_dim"], spec["layers"], spec["heads"], spec["kv_heads"], spec["vocab_size"]) == (64, 5, 8, 4, 512)
    assert spec["tied_embeddings"] is True
    assert info["parameters"] == 260_032      # stories260K's published size from its header
    assert info["tokenizer"]["kind"] == "sentencepiece"   # tok512.model, beside the checkpoint


def test_prompt_is_tokenized_and_continued(cli):
    payload = json.loads(cli("run", "--prompt", "Once upon a time", "--max-tokens", "8", "--json").stdout)
    assert payload["prompt_ids"][0] == 1 and len(payload["prompt_ids"]) > 1
    assert len(payload["ids"]) == 8 and payload["text"].strip()


def test_sampling_is_seeded(cli):
    def sample(seed):
        return json.loads(cli("run", "--ids", "1", "-n", "30", "-t", "1.0", "--top-p", "0.9", "--seed", seed,
                              "--json").stdout)["ids"]
    assert sample(3) == sample(3)
    assert sample(3) != sample(4)


def test_bad_options_exit_2_with_one_line(cli):
    for args in (("run", "--ids", "1,x"), ("run", "--top-p", "0"), ("run", "--backend", "gpu"),
                 ("logits", "--ids", "1,600", "-o", "/tmp/never.npy")):
        proc = cli(*args, expect=2)
        assert "Traceback" not in proc.stderr and proc.stderr.strip()


def test_usage_errors_exit_2_with_one_line_naming_the_option(cli):
    """Whatever click the installed typer carries, a usage error is one line and exit code 2."""
    cases = {("run", "-n", "abc"): "--max-tokens", ("run", "--temperature", "abc"): "--temperature",
             ("serve", "--port", "70000"): "--port", ("run", "--bogus"): "--bogus", ("nosuch",): "nosuch",
             ("estimate", "--context", "x"): "--context", ("ttc", "--attempts", "many"): "--attempts"}
    for args, named in cases.items():
        proc = cli(*args, expect=2)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0] and "Traceback" not in proc.stderr, (args, proc.stderr)


def test_an_error_quoting_line_break_characters_stays_one_line(capsys):
    """A message that quotes user text holding a character str.splitlines() breaks at (a fuzzed
    manifest key of U+0085 once reached a spec error) is printed on one line, the character escaped."""
    from hardwire.cli import say
    say("hardwire: error: key '\x85' and '\u2028', then\na newline")
    err = capsys.readouterr().err
    assert err.splitlines() == ["hardwire: error: key '\\x85' and '\\u2028', then\\na newline"]


def test_a_manifest_spec_with_unknown_rope_scaling_fields_is_refused_by_name():
    from hardwire.errors import HardwireError
    from hardwire.model.spec import ModelSpec
    fields = dict(family="llama", hidden_dim=8, layers=1, heads=1, kv_heads=1, head_dim=8, ffn_dim=8, vocab_size=8,
                  max_context=8)
    for scaling in ({"\x85": None}, {"factor": 8.0}, [1, 2]):
        with pytest.raises(HardwireError, match="rope_scaling: expected an object of exactly"):
            ModelSpec.from_dict(dict(fields, rope_scaling=scaling))
    scaling = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position=8192)
    assert ModelSpec.from_dict(dict(fields, rope_scaling=scaling)).rope_scaling.factor == 8.0


def run_piped(*args, columns: int = 30):
    """The command with stdout a pipe and a terminal width that would force truncation."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": str(columns)}
    proc = subprocess.run([sys.executable, "-m", "hardwire.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_tables_keep_their_numbers_when_piped():
    out = run_piped("estimate", "--preset", "stories260k")
    assert "…" not in out
    assert "tokens/s per user" in out
    listed = run_piped("estimate", "--list")
    assert "…" not in listed and "8,030,261,248" in listed and "hc1" in listed and "stories260k" in listed


def test_estimate_list_json_names_presets_and_chips(cli):
    listed = json.loads(cli("estimate", "--list", "--json").stdout)
    assert {"llama-3.1-8b", "stories260k"} <= set(listed["presets"]) and {"hc1", "rtl"} <= set(listed["chips"])
    assert listed["presets"]["stories260k"]["parameters"] == 260_032


def test_a_newcomers_first_commands(cli):
    """--version and -h exit 0 with output; a bad value and an unknown command: one line, exit 2."""
    assert cli("--version").stdout.startswith("hardwire ")
    assert "Usage: hardwire" in cli("-h").stdout
    for args in (("run", "--temperature", "hot"), ("frobnicate",)):
        lines = cli(*args, expect=2).stderr.strip().splitlines()
        assert len(lines) == 1 and args[-1] in lines[0]


def test_run_with_timing_prints_the_chip_time_after_the_text(cli):
    lines = cli("run", "--ids", "1", "-n", "8", "--timing").stdout.strip().splitlines()
    assert lines[-1].startswith("[chip hc1") and "8 tokens after a 1-token prompt" in lines[-1]
