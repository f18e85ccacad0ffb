"""The Die: exact round trip, tamper evidence, atomic writing."""
from __future__ import annotations

import os

# These models are tiny: BLAS threads only contend with each other (set before numpy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import hardwire  # noqa: E402
from hardwire.die import open_die  # noqa: E402
from hardwire.errors import BadDie  # noqa: E402
from hardwire.freeze import freezer  # noqa: E402
from hardwire.freeze.freezer import Calibration, freeze  # noqa: E402
from hardwire.freeze.plan import parse_plan  # noqa: E402
from hardwire.freeze.quantize import quantize_rtn  # noqa: E402
from hardwire.model.load import bundled_text_path  # noqa: E402
from hardwire.model.text import read_sequences  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return hardwire.load()


@pytest.fixture(scope="module")
def calibration(model):
    return Calibration(read_sequences(bundled_text_path(), model.tokenizer, limit=3, from_end=True, window=512),
                       {"source": "bundled, last 3"})


@pytest.fixture(scope="module")
def die_path(model, calibration, tmp_path_factory):
    return freeze(model, parse_plan("w4g32a"), tmp_path_factory.mktemp("dies") / "w4.die", calibration).path


def test_die_holds_exactly_the_quantized_weights(model, die_path):
    die = open_die(die_path)
    assert die.spec == model.spec and len(die.id) == 64
    reference = quantize_rtn(model.tensor("layers.2.w_down"), parse_plan("w4g32a").default.format)
    stored = die.quantized("layers.2.w_down")
    np.testing.assert_array_equal(stored.codes, reference.codes)
    np.testing.assert_array_equal(stored.zeros, reference.zeros)
    np.testing.assert_array_equal(die.tensor("layers.2.w_down"), reference.dequantize())
    np.testing.assert_array_equal(die.tensor("final_norm"), model.tensor("final_norm"))
    assert die.tokenizer.encode("Once upon a time", bos=True) == model.tokenizer.encode("Once upon a time", bos=True)
    scales = die.activation_scales()
    assert set(scales) == {n for n, s in model.spec.tensor_shapes().items() if len(s) == 2}
    assert all(s > 0 for s in scales.values())


def test_freezing_is_deterministic_so_the_id_names_the_content(model, calibration, die_path, tmp_path):
    again = freeze(model, parse_plan("w4g32a"), tmp_path / "again.die", calibration)
    assert again.id == open_die(die_path).id
    other = freeze(model, parse_plan("w4g32"), tmp_path / "other.die", calibration)
    assert other.id != again.id


def flipped_copy(die_path, tmp_path, relative, offset):
    copy = tmp_path / f"flip-{relative.replace('/', '_')}-{offset}.die"
    shutil.copytree(die_path, copy)
    target = copy / relative
    data = bytearray(target.read_bytes())
    data[offset % len(data)] ^= 0x01 if offset % 2 else 0x20
    target.write_bytes(bytes(data))
    return copy


def test_one_changed_byte_anywhere_is_refused_naming_the_file(die_path, tmp_path):
    files = ["manifest.json"] + sorted(json.loads((die_path / "manifest.json").read_text())["files"])
    assert any(f.startswith("tokenizer/") for f in files) and "activations.safetensors" in files
    rng = np.random.default_rng(0)
    for relative in files:
        size = (die_path / relative).stat().st_size
        for offset in {0, size - 1, *rng.integers(0, size, 3).tolist()}:
            copy = flipped_copy(die_path, tmp_path, relative, int(offset))
            with pytest.raises(BadDie) as error:
                open_die(copy)
            assert relative.split("/")[-1] in str(error.value), (relative, offset, str(error.value))
            shutil.rmtree(copy)


def test_added_or_missing_files_are_refused(die_path, tmp_path):
    copy = tmp_path / "extra.die"
    shutil.copytree(die_path, copy)
    (copy / "weights" / "notes.txt").write_text("hello")
    with pytest.raises(BadDie, match="notes.txt.*not listed"):
        open_die(copy)
    (copy / "weights" / "notes.txt").unlink()
    (copy / "activations.safetensors").unlink()
    with pytest.raises(BadDie, match="activations.safetensors.*missing"):
        open_die(copy)


def test_a_failure_mid_freeze_leaves_nothing_behind(model, calibration, tmp_path, monkeypatch):
    calls = []

    def failing_quantize(*args, **kwargs):
        calls.append(1)
        if len(calls) == 10:
            raise RuntimeError("simulated failure in layer 1")
        return quantize_rtn(args[0], args[1])

    monkeypatch.setattr(freezer, "quantize", failing_quantize)
    with pytest.raises(RuntimeError, match="simulated"):
        freeze(model, parse_plan("w8"), tmp_path / "broken.die", calibration)
    assert list(tmp_path.iterdir()) == []


def test_a_killed_freeze_never_appears_under_the_final_name(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, hardwire
        from hardwire.freeze.freezer import Calibration, freeze
        from hardwire.freeze.plan import parse_plan
        model = hardwire.load()
        calibration = Calibration([[1, 403, 407, 261]], {{}})
        def kill_at_layer_2(stage):
            if stage == "layer 2":
                os.kill(os.getpid(), signal.SIGKILL)
        freeze(model, parse_plan("w8"), {str(tmp_path / "killed.die")!r}, calibration, progress=kill_at_layer_2)
    """)
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert process.returncode == -9, process.stderr.decode()
    assert not (tmp_path / "killed.die").exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert all(name.startswith(".killed.die.partial-") for name in leftovers) and leftovers
    with pytest.raises(BadDie):
        open_die(tmp_path / leftovers[0])          # a partial die has no manifest


def test_an_existing_die_is_kept_unless_forced(model, calibration, die_path, tmp_path):
    target = tmp_path / "keep.die"
    shutil.copytree(die_path, target)
    with pytest.raises(BadDie, match="already exists"):
        freeze(model, parse_plan("w8"), target, calibration)
    assert open_die(target).id == open_die(die_path).id
    replaced = freeze(model, parse_plan("w8"), target, calibration, overwrite=True)
    assert open_die(target).id == replaced.id != open_die(die_path).id
    assert [p.name for p in tmp_path.iterdir()] == ["keep.die"]


def test_inspect_and_run_read_a_die(die_path, capsys):
    from hardwire.cli import main
    from hardwire.freeze.commands import describe_die

    info = describe_die(open_die(die_path))
    assert info["tensors"]["layers.0.wq"]["format"] == "w4g32a"
    assert info["rom_bits"] == sum(t["rom_bits"] for t in info["tensors"].values())
    assert main(["inspect", str(die_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == info["id"]
    assert main(["run", str(die_path), "--ids", "1", "--max-tokens", "8", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["ids"]) == 8
    assert main(["quality", str(die_path), "--stories", "2", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert {"perplexity", "float_perplexity", "top1_agreement", "kl_mean", "tokens"} <= set(scores)
    assert scores["die_id"] == info["id"] and scores["sequences"] >= 2      # long stories span windows


def test_die_tokenizer_encodes_like_its_checkpoint(task_die):
    """A Hugging Face tokenizer's BOS/EOS settings live beside tokenizer.json (tokenizer_config.json):
    the die carries them too, so a prompt becomes the same ids before and after freezing."""
    import hardwire

    checkpoint = hardwire.load("task-small").tokenizer
    die = hardwire.open_die(task_die).tokenizer
    assert checkpoint.encode("38+47=") == die.encode("38+47=")
    assert die.encode("38+47=")[0] == die.bos_id == 1


# -- a manifest re-hashed after an edit: the hashes agree, the parts do not ------------------------
def rehashed_copy(die_path, tmp_path, name, edit):
    """A copy of the die whose manifest `edit(manifest)` changed and whose id was recomputed, as a
    careless tool (or a forger) would: every hash check passes, only the content is inconsistent."""
    from hardwire.die import canonical_json, die_id

    copy = tmp_path / f"{name}.die"
    shutil.copytree(die_path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest, copy)
    manifest["id"] = die_id(manifest)
    (copy / "manifest.json").write_bytes(canonical_json(manifest))
    return copy


def move_tokenizer_outside(manifest, copy):
    old = manifest["tokenizer"]["file"]
    outside = copy.parent / "outside.model"
    shutil.copyfile(copy / old, outside)
    (copy / old).unlink()
    manifest["files"]["../outside.model"] = manifest["files"].pop(old)
    manifest["tokenizer"]["file"] = "../outside.model"


def set_in(path, value):
    def edit(manifest, copy):
        target = manifest
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def consistent_w8(manifest, copy):
    """layers.0.wq relabelled w8 with matching rom_bits: only the weights file's arrays disagree."""
    from hardwire.formats import WeightFormat

    entry = manifest["tensors"]["layers.0.wq"]
    fmt = WeightFormat(bits=8, group=None, symmetric=True, scale_format="fp16")
    entry["format"], entry["rom_bits"] = fmt.to_dict(), fmt.storage_bits(tuple(entry["shape"]))
    manifest["totals"]["rom_bits"] = sum(e["rom_bits"] for e in manifest["tensors"].values())


INCONSISTENT_MANIFESTS = {
    "tokenizer outside the die": (move_tokenizer_outside, "../outside.model"),
    "absolute tokenizer path": (set_in(("tokenizer", "file"), "/etc/passwd"), "tokenizer.file"),
    "tensor file outside": (set_in(("tensors", "embed", "file"), "weights/../../x.safetensors"), "embed.file"),
    "tensor file not listed": (set_in(("tensors", "embed", "file"), "weights/other.safetensors"), "not listed"),
    "shape disagrees with spec": (set_in(("tensors", "layers.0.wq", "shape"), [64, 32]), "layers.0.wq.shape"),
    "bits disagree with format name": (set_in(("tensors", "layers.0.wq", "format", "bits"), 8), "layers.0.wq.format"),
    "bits of the wrong type": (set_in(("tensors", "layers.0.wq", "format", "bits"), "4"), "layers.0.wq.format"),
    "rom bits disagree": (set_in(("tensors", "layers.0.wq", "rom_bits"), 1), "layers.0.wq.rom_bits"),
    "unknown kind": (set_in(("tensors", "final_norm", "kind"), "float16"), "final_norm.kind"),
    "spec with other kv heads": (set_in(("spec", "kv_heads"), 8), "tensors"),
    "spec field of the wrong type": (set_in(("spec", "heads"), "8"), "spec"),
    "spec with an unknown field": (set_in(("spec", "colour"), "red"), "spec"),
    "tensor missing": (lambda m, c: m["tensors"].pop("layers.1.wk"), "layers.1.wk"),
    "totals not the sum": (set_in(("totals", "rom_bits"), 7), "totals.rom_bits"),
    "format consistent but arrays not": (consistent_w8, "layers.0.safetensors"),
}


@pytest.mark.parametrize("case", list(INCONSISTENT_MANIFESTS))
def test_a_rehashed_but_inconsistent_manifest_is_refused_naming_the_field(die_path, tmp_path, case):
    edit, named = INCONSISTENT_MANIFESTS[case]
    copy = rehashed_copy(die_path, tmp_path, case.replace(" ", "-"), edit)
    with pytest.raises(BadDie) as error:
        open_die(copy)
    assert named in str(error.value), str(error.value)
    with pytest.raises(BadDie):
        open_die(copy, verify=False)


def test_a_symbolic_link_out_of_the_die_is_refused(die_path, tmp_path):
    copy = tmp_path / "linked.die"
    shutil.copytree(die_path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    tokenizer = copy / manifest["tokenizer"]["file"]
    outside = tmp_path / "outside.model"
    shutil.move(tokenizer, outside)
    tokenizer.symlink_to(outside)
    with pytest.raises(BadDie, match="outside the die"):
        open_die(copy)


def test_a_deeply_nested_manifest_is_a_clean_error(die_path, tmp_path):
    copy = tmp_path / "deep.die"
    shutil.copytree(die_path, copy)
    (copy / "manifest.json").write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises(BadDie, match="nests 50000 levels"):
        open_die(copy)
