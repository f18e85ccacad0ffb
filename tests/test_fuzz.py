"""The project fuzzes itself: generated malformed inputs must meet the exit-2 contract.

Hypothesis generates config.json fields, safetensors headers, GGUF and llama2.c headers, die manifests
(edited and re-hashed, so only the consistency checks stand between them and a run), plan, chip and
tokenizer side files and command-line values.
Each example runs `hardwire.cli.main` (or the reader it calls) in this process and must end in
exit 0 or exit 2 with exactly one line naming the file or option; any other exception fails the
test. Where an independent judge exists it decides what must be refused: the reference
`safetensors` reader for byte ranges, the JSON type a config field needs, the option's own range.

Profiles (docs/reliability.md): `quick`, seeded and in the default suite (1,210 examples, about
30 s in all); `long` under the `slow` marker (`make test-slow`), ten times as many.
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from hardwire.errors import HardwireError
from tests.test_malformed import CONFIG, tiny_tensors

PROFILES = {"quick": 1, "long": 10}     # multiplier of each test's base example count
PROFILE_PARAMS = [pytest.param("quick"), pytest.param("long", marks=pytest.mark.slow)]


def profile_settings(profile: str, examples: int):
    return settings(max_examples=examples * PROFILES[profile], derandomize=True, deadline=None,
                    database=None, suppress_health_check=list(HealthCheck))


def exit_contract(capsys, args, names: str | None = None) -> int:
    """Run the command; it must exit 0, or 2 with one line (naming `names` when given)."""
    from hardwire.cli import main

    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code in (0, 2), (args, code, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        if names is not None:
            assert names in lines[0], lines[0]
    return code


# JSON values of every kind, the ones a careless or hostile writer would put anywhere.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["", "false", "true", "8", "1e-5", "null", "NaN", "silu", "llama", "llama3"])
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6)


# -- config.json -----------------------------------------------------------------------------------
POSITIVE_INT_FIELDS = {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                       "vocab_size", "max_position_embeddings"}
BOOL_FIELDS = {"tie_word_embeddings", "attention_bias", "mlp_bias", "use_sliding_window"}
NUMBER_FIELDS = {"rms_norm_eps", "rope_theta"}
CONFIG_KEYS = sorted(POSITIVE_INT_FIELDS | BOOL_FIELDS | NUMBER_FIELDS | set(CONFIG) | {
    "head_dim", "num_key_value_heads", "bos_token_id", "eos_token_id", "hidden_act", "rope_scaling",
    "rope_parameters", "sliding_window", "model_type"})


def must_refuse(key: str, value) -> bool:
    """Whether the JSON type alone makes `value` wrong for `key` (an independent statement of
    what each field needs)."""
    if key in POSITIVE_INT_FIELDS:
        return type(value) is not int or value <= 0
    if key in BOOL_FIELDS:
        return type(value) is not bool
    if key in NUMBER_FIELDS:
        return type(value) not in (int, float) or not math.isfinite(value)
    if key in ("head_dim", "num_key_value_heads", "sliding_window"):
        return value is not None and (type(value) is not int or value <= 0)
    if key in ("bos_token_id", "eos_token_id"):
        ids = value if isinstance(value, list) else [value]
        return not all(i is None or (type(i) is int and i >= 0) for i in ids)
    return False


@pytest.mark.parametrize("profile", PROFILE_PARAMS)
def test_fuzzed_config_fields_are_refused_or_read(profile, tmp_path, capsys):
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file(tiny_tensors(), str(folder / "model.safetensors"))

    @profile_settings(profile, 120)
    @given(edits=st.dictionaries(st.sampled_from(CONFIG_KEYS), json_values, min_size=1, max_size=3))
    def check(edits):
        config = {**CONFIG, **edits}
        (folder / "config.json").write_text(json.dumps(config))
        code = exit_contract(capsys, ["inspect", folder], names="config.json")
        if any(must_refuse(k, v) for k, v in edits.items()):
            assert code == 2, edits
    check()


@pytest.mark.parametrize("profile", PROFILE_PARAMS)
def test_fuzzed_config_bytes_are_refused_or_read(profile, tmp_path, capsys):
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file(tiny_tensors(), str(folder / "model.safetensors"))
    valid = json.dumps(CONFIG).encode()

    @profile_settings(profile, 60)
    @given(st.binary(max_size=200) | st.builds(lambda i, b: valid[:i] + b + valid[i:],
                                               st.integers(0, len(valid)), st.binary(min_size=1, max_size=8))
           | st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth))
    def check(data):
        (folder / "config.json").write_bytes(data)
        exit_contract(capsys, ["inspect", folder], names=str(folder))   # config.json, or the weights it implies
    check()


# -- safetensors headers -----------------------------------------------------------------------------
DTYPE_NAMES = ["F32", "F16", "BF16", "F64", "I32", "U8", "BOOL", "F8_E4M3", "f32", "F33", "", "Q4"]
header_entries = st.fixed_dictionaries({
    "dtype": st.sampled_from(DTYPE_NAMES) | json_values,
    "shape": st.lists(st.integers(-2, 20), max_size=3) | json_values,
    "data_offsets": st.lists(st.integers(-8, 600), min_size=2, max_size=2) | json_values,
})


def reference_accepts(path: Path, entries: dict) -> bool:
    """The reference reader (the `safetensors` package) opens the file (which validates the whole
    header and byte layout) and reads every tensor numpy has a type for (not bfloat16 or fp8)."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="np") as f:
            for key in f.keys():
                if entries[key]["dtype"] not in ("BF16", "F8_E4M3", "F8_E5M2"):
                    f.get_tensor(key)
        return True
    except Exception:
        return False


@pytest.mark.parametrize("profile", PROFILE_PARAMS)
def test_fuzzed_safetensors_headers_are_refused_unless_the_reference_reads_them(profile, tmp_path, capsys):
    from hardwire.model.safetensors_file import SafetensorsFile

    path = tmp_path / "fuzz.safetensors"

    @profile_settings(profile, 150)
    @given(entries=st.dictionaries(st.sampled_from(["a", "b", "c", "__metadata__"]), header_entries, max_size=3),
           data_bytes=st.integers(0, 600), length_delta=st.sampled_from([0, 0, 0, -1, 1, 7, -100, 1 << 40]))
    def check(entries, data_bytes, length_delta):
        blob = json.dumps(entries).encode()
        path.write_bytes(struct.pack("<Q", max(0, len(blob) + length_delta)) + blob + b"\0" * data_bytes)
        try:
            opened = SafetensorsFile(path)
        except HardwireError as e:
            assert str(path) in str(e)
            return
        try:
            for name, (dtype, *_rest) in opened.entries.items():
                if dtype in ("F32", "F16", "BF16", "F64"):
                    opened.read(name)
        finally:
            opened.close()
        assert reference_accepts(path, entries), entries      # we accepted: so must the reference reader
    check()


# -- GGUF headers ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory) -> bytes:
    from hardwire.model.gguf_format import write_gguf
    from hardwire.model.load import load

    folder = tmp_path_factory.mktemp("gguf-src") / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    save_file(tiny_tensors(), str(folder / "model.safetensors"))
    with load(folder) as model:
        path = write_gguf(model, folder.parent / "tiny.gguf")
    return path.read_bytes()


@pytest.mark.parametrize("profile", PROFILE_PARAMS)
def test_fuzzed_gguf_headers_are_refused_or_read(profile, gguf_bytes, tmp_path, capsys):
    """Bytes of the header overwritten (counts, lengths, types, dimensions, offsets), or the file
    cut: every case exits 0 or 2 quickly; one that opens must read all its tensors."""
    from hardwire.model.load import load

    path = tmp_path / "fuzz.gguf"
    header_end = min(len(gguf_bytes), 4096)

    @profile_settings(profile, 120)
    @given(edits=st.lists(st.tuples(st.integers(0, header_end - 1),
                                    st.sampled_from(["byte", "u32", "u64"]), st.integers(0, 2**64 - 1)),
                          min_size=1, max_size=3),
           cut=st.none() | st.integers(0, len(gguf_bytes)))
    def check(edits, cut):
        data = bytearray(gguf_bytes)
        for position, width, value in edits:
            size = {"byte": 1, "u32": 4, "u64": 8}[width]
            data[position:position + size] = (value % (1 << (8 * size))).to_bytes(size, "little")[
                :len(data) - position]
        path.write_bytes(bytes(data[:cut]))
        if exit_contract(capsys, ["inspect", path], names="fuzz.gguf") == 0:
            with load(path) as model:
                for name in model.spec.tensor_shapes():
                    try:
                        values = model.tensor(name)
                    except HardwireError as e:          # e.g. a flipped exponent made a NaN
                        assert "fuzz.gguf" in str(e)
                        break
                    assert values.shape == model.spec.tensor_shapes()[name]
    check()


# -- die manifests, edited and re-hashed -----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_die(tmp_path_factory) -> Path:
    from hardwire.freeze.freezer import Calibration, freeze
    from hardwire.freeze.plan import parse_plan
    from hardwire.model.load import load

    folder = tmp_path_factory.mktemp("die-src") / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    save_file(tiny_tensors(), str(folder / "model.safetensors"))
    with load(folder) as model:
        calibration = Calibration([[1, 2, 3, 4, 5, 6, 7, 8]] * 2, {"source": "fixed ids"})
        return freeze(model, parse_plan("w4g16a"), folder.parent / "tiny.die", calibration).path


def json_paths(value, prefix=()):
    """Every path (tuple of keys and indexes) into a JSON document."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from json_paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from json_paths(child, prefix + (index,))


@pytest.mark.parametrize("profile", PROFILE_PARAMS)
def test_fuzzed_rehashed_manifests_are_refused_or_run(profile, tiny_die, tmp_path, capsys):
    """A manifest with one value replaced and its id recomputed: refused with exit 2 naming the
    manifest, or (when the edit is harmless, e.g. calibration notes) the die still runs."""
    import shutil

    from hardwire.die import canonical_json, die_id
    from hardwire.runtime.engine import make_engine

    original = json.loads((tiny_die / "manifest.json").read_text())
    paths = [p for p in json_paths(original) if p and p[0] != "id"]
    copy = tmp_path / "fuzz.die"
    shutil.copytree(tiny_die, copy)

    @profile_settings(profile, 100)
    @given(where=st.sampled_from(paths), value=json_values)
    def check(where, value):
        manifest = json.loads(json.dumps(original))
        target = manifest
        for key in where[:-1]:
            target = target[key]
        target[where[-1]] = value
        try:
            manifest["id"] = die_id(manifest)
            data = canonical_json(manifest)
        except ValueError:              # NaN or infinity: no canonical manifest holds one
            return
        (copy / "manifest.json").write_bytes(data)
        if exit_contract(capsys, ["inspect", copy, "--json"]) == 0:
            capsys.readouterr()
            try:
                make_engine(str(copy)).logits([1, 2, 3])
            except HardwireError:
                pass
    check()


# -- command-line values ---------------------------------------------------------------------------
@pytest.fixture
def inert_commands(monkeypatch):
    """The real command tree with each command's body replaced by a recorder: only parsing and the
    value checks run. Returns the list of (command, parameters) accepted."""
    import hardwire.cli

    build = hardwire.cli.command
    accepted = []

    def inert():
        group = build()
        for name, cmd in group.commands.items():
            cmd.callback = lambda name=name, **params: accepted.append((name, params))
        return group
    monkeypatch.setattr(hardwire.cli, "command", inert)
    return accepted


def option_names():
    from hardwire.cli import command

    result = []
    for name, cmd in sorted(command().commands.items()):
        for param in cmd.params:
            if param.param_type_name == "option" and not param.is_flag:
                result.append((name, next(o for o in param.opts if o.startswith("--")), param.name))
    return result


OPTION_NAMES = option_names()
cli_texts = (st.sampled_from(["", " ", "0", "-0", "-1", "1", "0.5", "1e-310", "1e-308", "nan", "inf", "-inf",
                              "1e400", "18446744073709551616", "1,2", ",", "1,,x", "x", "/", ".", "\udcff"])
             | st.text(max_size=10) | st.integers(-10**20, 10**20).map(str)
             | st.floats(allow_nan=True, allow_infinity=True).map(repr))


def accepted_value_is_sound(option: str, value) -> bool:
    """What an accepted value must be, stated independently of hardwire/options.py."""
    if option == "--temperature":
        return math.isfinite(value) and (value == 0 or value >= 2.2250738585072014e-308)
    if option == "--top-p":
        return math.isfinite(value) and 0 < value <= 1
    if option == "--seed":
        return 0 <= value < 2**64
    if option in ("--calib-tokens", "--context", "--attempts", "--stories", "--users", "--jobs", "--workers"):
        return value >= 1
    if option == "--max-tokens":
        return value >= 0
    if option == "--ids":
        return all(part.strip().isdigit() for part in value.split(",") if part.strip()) and value.strip(" ,")
    if isinstance(value, float):
        return math.isfinite(value)
    return True


# What each command needs besides the fuzzed option (which comes last, so it wins when repeated).
REQUIRED = {"freeze": ["--plan", "w8", "-o", "x.die"], "logits": ["--ids", "1", "-o", "x.npy"],
            "ttc": ["--system", "x"], "rtl": ["x.die", "-o", "out"], "sim": ["x.die"], "synth": ["x.die"],
            "explore": ["sweep.toml"], "report": ["llama-3.2-1b", "-o", "x.html"]}


@pytest.mark.parametrize("profile", PROFILE_PARAMS)
def test_fuzzed_option_values_exit_2_or_are_sound(profile, inert_commands, capsys):
    @profile_settings(profile, 300)
    @given(choice=st.sampled_from(OPTION_NAMES), text=cli_texts)
    def check(choice, text):
        command, option, param = choice
        inert_commands.clear()
        args = [command, *REQUIRED.get(command, []), f"{option}={text}"]
        if exit_contract(capsys, args, names=option) == 0 and inert_commands:
            _, params = inert_commands[-1]
            assert accepted_value_is_sound(option, params[param]), (command, option, text, params[param])
    check()


@pytest.mark.parametrize("profile", PROFILE_PARAMS)
def test_fuzzed_argument_lists_exit_0_or_2(profile, inert_commands, capsys):
    """Whole argument lists of commands, options and junk: never anything but exit 0 or 2 — the
    contract that broke when typer's own click raised exceptions the CLI did not catch."""
    words = st.sampled_from(sorted({c for c, _, _ in OPTION_NAMES} | {o for _, o, _ in OPTION_NAMES}
                                   | {"-h", "--help", "--version", "--json", "--", "-", "-n", "-t", "-o"}))

    @profile_settings(profile, 150)
    @given(st.lists(words | cli_texts, max_size=6))
    def check(args):
        exit_contract(capsys, args)
        capsys.readouterr()
    check()


# -- llama2.c headers ------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", PROFILE_PARAMS)
def test_fuzzed_llama2c_headers_are_refused_or_read(profile, tmp_path, capsys):
    """The bundled stories260K.bin with header fields overwritten (any int32, or the versioned
    header's magic and version) or the file cut: exit 0 or 2, never an allocation the header claims."""
    from hardwire.model.load import bundled_model_path

    original = bundled_model_path().read_bytes()
    path = tmp_path / "fuzz.bin"

    @profile_settings(profile, 40)
    @given(edits=st.lists(st.tuples(st.integers(0, 7), st.integers(-2**31, 2**31 - 1)), min_size=1, max_size=3),
           cut=st.none() | st.integers(0, 4096))
    def check(edits, cut):
        data = bytearray(original)
        for field, value in edits:
            data[4 * field:4 * field + 4] = struct.pack("<i", value)
        path.write_bytes(bytes(data if cut is None else data[:cut]))
        exit_contract(capsys, ["inspect", path], names="fuzz.bin")
    check()


# -- plan and chip files ---------------------------------------------------------------------------
def toml_value(value) -> str:
    """A TOML literal for a scalar or a list of them (nan and inf are TOML's own words)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


toml_values = (st.booleans() | st.integers(-2**63, 2**63 - 1) | st.sampled_from([0, -1, 1, 2**40, 0.0, 1e-300, 1e300])
               | st.floats() | st.text(alphabet="abcgwmx0123456789_:,.=* ", max_size=12)
               | st.lists(st.integers(-2, 3), max_size=2))


@pytest.mark.parametrize("profile", PROFILE_PARAMS)
def test_fuzzed_plan_files_are_refused_or_parsed(profile, tmp_path):
    """A plan file (TOML or JSON) of any keys and values parses to a plan or raises BadPlan naming it."""
    from hardwire.errors import BadPlan
    from hardwire.freeze.plan import parse_plan

    plan_values = st.sampled_from(["w8", "w4g32", "w3g32a", "w4g32:gptq", "mix:3g32,6g32,avg=3.5", "w9", "",
                                   "int8", "int16"]) | toml_values

    @profile_settings(profile, 60)
    @given(data=st.dictionaries(st.sampled_from(["default", "activations", "overrides", "other"]),
                                plan_values | st.dictionaries(st.sampled_from(["embed", "layers.*.wq", "*"]),
                                                              plan_values, max_size=2), max_size=3),
           as_toml=st.booleans())
    def check(data, as_toml):
        path = tmp_path / ("plan.toml" if as_toml else "plan.json")
        if as_toml:
            lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
            for key, table in ((k, v) for k, v in data.items() if isinstance(v, dict)):
                lines += [f"[{key}]"] + [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items()]
            path.write_text("\n".join(lines))
        else:
            path.write_text(json.dumps(data))
        try:
            parse_plan(str(path))
        except BadPlan as e:
            assert path.name in str(e) or "plan" in str(e).lower(), str(e)
    check()


@pytest.mark.parametrize("profile", PROFILE_PARAMS)
def test_fuzzed_chip_files_are_refused_or_estimated(profile, tmp_path, capsys):
    """The bundled hc1.toml with one or two fields set to any TOML value: `estimate` exits 0, or 2
    with one line naming the chip file."""
    import tomllib

    from hardwire.chip.arch import CHIPS_DIR

    base = tomllib.loads((CHIPS_DIR / "hc1.toml").read_text())
    path = tmp_path / "fuzz-chip.toml"

    @profile_settings(profile, 60)
    @given(edits=st.dictionaries(st.sampled_from(sorted(base) + ["unknown_field"]), toml_values,
                                 min_size=1, max_size=2))
    def check(edits):
        path.write_text("\n".join(f"{k} = {toml_value(v)}" for k, v in {**base, **edits}.items()))
        exit_contract(capsys, ["estimate", "--preset", "stories260k", "--chip", path, "--json"])
        capsys.readouterr()
    check()


# -- tokenizer side files ----------------------------------------------------------------------------
@pytest.mark.parametrize("profile", PROFILE_PARAMS)
def test_fuzzed_tokenizer_configs_are_refused_or_read(profile, tmp_path, capsys):
    """task-small's tokenizer_config.json (or a special_tokens_map.json beside it) with fields set
    to any JSON value: exit 0 or 2; a non-boolean add_bos_token is always refused."""
    import shutil

    from hardwire.model.load import resolve_model_path

    folder = tmp_path / "task"
    shutil.copytree(resolve_model_path("task-small"), folder)
    base = json.loads((folder / "tokenizer_config.json").read_text())
    keys = sorted(base) + ["add_eos_token", "model_max_length"]

    @profile_settings(profile, 50)
    @given(edits=st.dictionaries(st.sampled_from(keys), json_values | st.sampled_from(["<s>", "</s>", "nope", ""]),
                                 min_size=1, max_size=2),
           target=st.sampled_from(["tokenizer_config.json", "special_tokens_map.json"]))
    def check(edits, target):
        (folder / "tokenizer_config.json").write_text(json.dumps(base))
        (folder / "special_tokens_map.json").unlink(missing_ok=True)
        (folder / target).write_text(json.dumps({**base, **edits} if target == "tokenizer_config.json" else edits))
        code = exit_contract(capsys, ["inspect", folder])
        capsys.readouterr()
        if target == "tokenizer_config.json" and "add_bos_token" in edits \
                and type(edits["add_bos_token"]) is not bool:
            assert code == 2, edits
    check()
