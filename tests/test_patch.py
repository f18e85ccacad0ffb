"""Patches: the §11 adapter arithmetic, its placement in the golden model, the float LoRA's
conversion to integers, the patch file's refusals, and training that changes what the die says."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hardwire.adapters import (CODE_LIMIT, Adapter, BadPatch, open_patch, open_patch_for, parse_targets, save_patch,
                               split_target)
from hardwire.golden.adapter import apply_adapter, dequantized_delta, row_ratios


def reference_term(adapter: Adapter, x) -> list[int]:
    """§11 in Python integers, written from the spec: half-up rounding is floor((v + 2^(s-1)) / 2^s)."""
    def round_shift(v: int, s: int) -> int:
        return (v + (1 << (s - 1))) // (1 << s) if s > 0 else v

    limit = (1 << 15) - 1
    inner = []
    for j in range(adapter.rank):
        t = sum(int(a) * int(v) for a, v in zip(adapter.a[j], x))
        inner.append(max(-limit, min(limit, round_shift(t * int(adapter.a_mult[j]), adapter.a_shift))))
    return [round_shift(sum(int(b) * t for b, t in zip(adapter.b[i], inner)) * int(adapter.b_mult[i]),
                        adapter.b_shift) for i in range(adapter.rows)]


def random_adapter(rng, rows, cols, rank, target="layers.0.wq", a_shift=20, b_shift=30) -> Adapter:
    return Adapter(target, rng.integers(-CODE_LIMIT, CODE_LIMIT + 1, (rank, cols)).astype(np.int8),
                   rng.integers(0, 1 << 16, rank).astype(np.int64), a_shift,
                   rng.integers(-CODE_LIMIT, CODE_LIMIT + 1, (rows, rank)).astype(np.int8),
                   rng.integers(0, 1 << 23, rows).astype(np.int64), b_shift)


@pytest.mark.parametrize("rank, a_shift, b_shift", [(1, 0, 0), (4, 20, 30), (16, 63, 63), (256, 8, 40)])
def test_adapter_term_is_the_spec(rank, a_shift, b_shift):
    rng = np.random.default_rng(rank)
    adapter = random_adapter(rng, rows=12, cols=40, rank=rank, a_shift=a_shift, b_shift=b_shift)
    for x in (rng.integers(-127, 128, 40), np.full(40, 127), np.full(40, -32767)):
        assert apply_adapter(adapter, x).tolist() == reference_term(adapter, x)


def test_adapter_term_saturates_the_inner_vector():
    a = np.array([[127] * 8, [1] * 8], np.int8)
    adapter = Adapter("layers.0.wq", a, np.array([1 << 15, 1], np.int64), 0,
                      np.array([[1, 0], [0, -1]], np.int8), np.array([1, 1], np.int64), 0)
    x = np.full(8, 127)
    assert apply_adapter(adapter, x).tolist() == [(1 << 15) - 1, -127 * 8]


# -- in the golden model -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tables(stories_die):
    from hardwire.golden.tables import tables_for
    return tables_for(stories_die)


def adapters_for(die, rng, names, rank=4, b_scale=1):
    out = {}
    for name in names:
        rows, cols = die.quantized(name).shape
        adapter = random_adapter(rng, rows, cols, rank, target=name, a_shift=16, b_shift=0)
        out[name] = Adapter(name, adapter.a, adapter.a_mult, adapter.a_shift, adapter.b * b_scale,
                            adapter.b_mult, adapter.b_shift)
    return out


def test_a_zero_adapter_changes_nothing_and_a_nonzero_one_does(stories_die, tables, tmp_path):
    from hardwire.golden.forward import GoldenTransformer
    rng = np.random.default_rng(3)
    names = ["layers.0.wk", "layers.1.wo", "layers.2.w_up", "layers.4.w_down"]
    ids = [1, 403, 407, 261, 378]
    base = GoldenTransformer(stories_die, tables).forward(ids)
    zero = save_patch(tmp_path / "zero.patch", stories_die.id, adapters_for(stories_die, rng, names, b_scale=0), {})
    assert np.array_equal(GoldenTransformer(stories_die, tables, patch=zero).forward(ids), base)
    live = save_patch(tmp_path / "live.patch", stories_die.id, adapters_for(stories_die, rng, names), {})
    assert not np.array_equal(GoldenTransformer(stories_die, tables, patch=live).forward(ids), base)


def test_patched_rows_land_on_their_matrix(stories_die, tables, tmp_path):
    """An adapter on wk changes k (and what follows from it) but not q or v of the same layer."""
    from hardwire.golden.forward import GoldenTransformer
    rng = np.random.default_rng(4)
    patch = save_patch(tmp_path / "wk.patch", stories_die.id, adapters_for(stories_die, rng, ["layers.0.wk"]), {})
    seen = {}
    for key, p in (("base", None), ("patched", patch)):
        trace = {}
        GoldenTransformer(stories_die, tables, patch=p).forward([1, 403, 407],
                                                                lambda n, v: trace.__setitem__(n, v.copy()))
        seen[key] = trace
    assert np.array_equal(seen["base"]["layers.0.q"], seen["patched"]["layers.0.q"])
    assert np.array_equal(seen["base"]["layers.0.v"], seen["patched"]["layers.0.v"])
    assert not np.array_equal(seen["base"]["layers.0.k"], seen["patched"]["layers.0.k"])


def test_batched_patched_step_equals_single_steps(stories_die, tables, tmp_path):
    from hardwire.golden.forward import GoldenTransformer
    from hardwire.model.reference import KVCache
    rng = np.random.default_rng(5)
    names = ["layers.0.wq", "layers.0.wv", "layers.3.w_gate", "layers.3.w_down"]
    patch = save_patch(tmp_path / "b.patch", stories_die.id, adapters_for(stories_die, rng, names), {})
    streams = [[1, 403, 407, 261], [1, 9, 77, 300], [1, 55, 55, 55]]
    single = [GoldenTransformer(stories_die, tables, patch=patch).forward(s) for s in streams]
    model = GoldenTransformer(stories_die, tables, patch=patch)
    caches = [KVCache() for _ in streams]
    for position in range(4):
        logits = model.step_batch([s[position] for s in streams], caches)
        for user, row in enumerate(logits):
            assert np.array_equal(row, single[user][position])


def test_integer_adapter_follows_the_float_lora(stories_die, tables):
    """T_i / ρ_i (the term in real units per input code) matches the float (B A x)_i within the
    rounding of 8-bit codes, and the dequantized ΔW equals the product of the integer factors."""
    from hardwire.patch.quantize import integer_adapter
    rng = np.random.default_rng(6)
    name = "layers.2.wv"
    rows, cols = stories_die.quantized(name).shape
    a = rng.standard_normal((4, cols)) / np.sqrt(cols)
    b = rng.standard_normal((rows, 4)) * 0.02
    xs = rng.integers(-127, 128, (32, cols))
    ratios = row_ratios(stories_die, tables, name)
    adapter = integer_adapter(name, a, b, ratios, np.abs(xs @ a.T).max(axis=0))
    for x in xs[:8]:
        exact = b @ (a @ x)
        got = apply_adapter(adapter, x) / ratios
        assert np.abs(got - exact).max() <= 0.05 * np.abs(exact).max()   # two 8-bit factors
    delta = dequantized_delta(adapter, ratios)
    assert np.abs(delta - b @ a).max() <= 0.02 * np.abs(b @ a).max()


def test_ratio_is_the_rows_scale_conversion(stories_die, tables):
    """ρ_i = m_ig / s_w[i,g]: a term of ρ_i · (W x)_i equals the matrix's own accumulator."""
    name = "layers.1.wo"
    q = stories_die.quantized(name)
    ratios = row_ratios(stories_die, tables, name)
    mult = tables[name + ".mult"]
    scales = np.asarray(q.scales, np.float64).reshape(mult.shape)
    assert np.allclose(mult, scales * ratios[:, None], rtol=1e-6, atol=1.0)


# -- the file ---------------------------------------------------------------------------------------

def test_patch_round_trips_and_is_content_addressed(stories_die, tmp_path):
    rng = np.random.default_rng(7)
    adapters = adapters_for(stories_die, rng, ["layers.0.wq", "layers.1.w_up"])
    saved = save_patch(tmp_path / "p.patch", stories_die.id, adapters, {"name": "demo"})
    again = save_patch(tmp_path / "q.patch", stories_die.id, adapters, {"name": "demo"})
    assert saved.id == again.id and len(saved.id) == 64
    loaded = open_patch_for(tmp_path / "p.patch", stories_die)
    assert loaded.manifest == saved.manifest and loaded.sram_bits() == saved.sram_bits()
    for name, adapter in adapters.items():
        got = loaded.adapters[name]
        assert np.array_equal(got.a, adapter.a) and np.array_equal(got.b_mult, adapter.b_mult)
        assert (got.a_shift, got.b_shift) == (adapter.a_shift, adapter.b_shift)
    rows, cols = stories_die.quantized("layers.0.wq").shape
    assert adapters["layers.0.wq"].sram_bits() == 8 * 4 * (rows + cols) + 16 * 4 + 23 * rows + 12


def test_patch_refusals(stories_die, tmp_path):
    rng = np.random.default_rng(8)
    path = tmp_path / "p.patch"
    patch = save_patch(path, stories_die.id, adapters_for(stories_die, rng, ["layers.0.wq"]), {})
    blob = path.read_bytes()
    (tmp_path / "flip.patch").write_bytes(blob[:-5] + bytes([blob[-5] ^ 1]) + blob[-4:])
    with pytest.raises(BadPatch, match="sha256"):
        open_patch(tmp_path / "flip.patch")
    (tmp_path / "short.patch").write_bytes(blob[:len(blob) // 2])
    with pytest.raises(BadPatch, match="truncated"):
        open_patch(tmp_path / "short.patch")
    (tmp_path / "junk.patch").write_bytes(b"not a patch at all")
    with pytest.raises(BadPatch):
        open_patch(tmp_path / "junk.patch")
    other = Adapter("layers.0.wq", patch.adapters["layers.0.wq"].a, patch.adapters["layers.0.wq"].a_mult, 3,
                    patch.adapters["layers.0.wq"].b, patch.adapters["layers.0.wq"].b_mult, 4)
    foreign = save_patch(tmp_path / "foreign.patch", "0" * 64, {"layers.0.wq": other}, {})
    with pytest.raises(BadPatch, match="belongs to die"):
        foreign.check_die(stories_die)
    deep = save_patch(tmp_path / "deep.patch", stories_die.id,
                      {"layers.9.wq": Adapter("layers.9.wq", *[getattr(other, f) for f in
                                                               ("a", "a_mult", "a_shift", "b", "b_mult", "b_shift")])},
                      {})
    with pytest.raises(BadPatch, match="5 layers"):
        deep.check_die(stories_die)
    with pytest.raises(BadPatch, match="adapter SRAM"):
        patch.check_sram("tiny", 1e-6)
    with pytest.raises(BadPatch, match="rank"):
        bad = Adapter("layers.0.wq", np.zeros((0, 4), np.int8), np.zeros(0, np.int64), 0, np.zeros((4, 0), np.int8),
                      np.zeros(4, np.int64), 0)
        save_patch(tmp_path / "bad.patch", stories_die.id, {"layers.0.wq": bad}, {})
    with pytest.raises(BadPatch, match="codes"):
        worse = Adapter("layers.0.wq", np.full((1, 4), -128, np.int8), np.zeros(1, np.int64), 0,
                        np.zeros((4, 1), np.int8), np.zeros(4, np.int64), 0)
        save_patch(tmp_path / "worse.patch", stories_die.id, {"layers.0.wq": worse}, {})


def test_target_names():
    assert split_target("layers.3.w_down") == (3, "w_down")
    assert parse_targets("wv, wq") == ("wq", "wv")
    for bad in ("layers.x.wq", "layers.0.embed", "wq"):
        with pytest.raises(BadPatch):
            split_target(bad)
    with pytest.raises(BadPatch, match="--targets"):
        parse_targets("wq,attention")


# -- training ------------------------------------------------------------------------------------------

def test_chip_model_without_quantization_is_the_float_reference(stories_die):
    import torch
    from hardwire.model.reference import FloatTransformer
    from hardwire.patch.train import ChipModel, TrainOptions
    ids = [1, 403, 407, 261, 378, 300]
    model = ChipModel(stories_die, TrainOptions(rank=2, targets=("wq",)), activation_bits=8)
    with torch.no_grad():
        ours = model.forward(torch.tensor([ids]), quantize=False)[0].numpy()
        quantized = model.forward(torch.tensor([ids]), quantize=True)[0].numpy()
    reference = FloatTransformer(stories_die.spec, stories_die.tensor).forward(ids)
    assert np.abs(ours - reference).max() < 1e-3
    # the chip's int8 inputs change the logits a little, not the story
    assert (quantized.argmax(-1) == reference.argmax(-1)).mean() >= 0.5


def test_trained_patch_teaches_the_golden_model_a_name(stories_die, tmp_path, cli):
    data = tmp_path / "teach.jsonl"
    prompt = "Once upon a time, there was a little girl named"
    data.write_text("\n".join(json.dumps({"prompt": prompt, "completion": " Zara."}) for _ in range(8)) + "\n")
    out = tmp_path / "zara.patch"
    proc = cli("patch", "train", stories_die.path, "--data", data, "-o", out, "--steps", "40", "--rank", "2",
               "--targets", "wv,w_down", "--json", "--plot", tmp_path / "loss.png")
    info = json.loads(proc.stdout)
    assert info["fits"] is True and info["die_id"] == stories_die.id and info["rank"] == 2
    assert info["training"]["final_loss"] < info["training"]["first_loss"]
    assert (tmp_path / "loss.png").stat().st_size > 0
    before = json.loads(cli("run", stories_die.path, "--backend", "golden", "-p", prompt, "-n", "4", "--json").stdout)
    after = json.loads(cli("run", stories_die.path, "--backend", "golden", "-p", prompt, "-n", "4", "--json",
                           "--patch", out).stdout)
    assert "Zara" not in before["text"] and after["text"].startswith(" Zara")
    shown = json.loads(cli("patch", "inspect", out, "--json", "--die", stories_die.path).stdout)
    assert shown["id"] == info["id"] and shown["targets"] == [f"layers.{i}.{s}" for i in range(5)
                                                             for s in ("wv", "w_down")]


def test_patch_commands_refuse_bad_input(stories_die, tmp_path, cli):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a"}\n')
    proc = cli("patch", "train", stories_die.path, "--data", data, "-o", tmp_path / "x.patch", expect=2)
    assert "line 1" in proc.stderr and "Traceback" not in proc.stderr
    data.write_text('{"text": "Once upon a time"}\n')
    proc = cli("patch", "train", stories_die.path, "--data", data, "-o", tmp_path / "x.patch", "--targets", "wz",
               expect=2)
    assert "--targets" in proc.stderr
    proc = cli("patch", "train", stories_die.path, "--data", data, "-o", tmp_path / "x.patch", "--rank", "0", expect=2)
    assert "--rank" in proc.stderr
    proc = cli("patch", "inspect", tmp_path / "missing.patch", expect=2)
    assert "missing.patch" in proc.stderr
    foreign = save_patch(tmp_path / "foreign.patch", "f" * 64,
                         adapters_for(stories_die, np.random.default_rng(9), ["layers.0.wq"]), {})
    proc = cli("run", stories_die.path, "--backend", "golden", "--patch", foreign.path, "-n", "2", expect=2)
    assert "belongs to die" in proc.stderr and "Traceback" not in proc.stderr


def test_server_serves_patches_side_by_side_by_model_name(stories_die, tables, tmp_path):
    """/v1/models lists DIE and DIE+NAME; a request's model picks the patch, and each answers as
    the golden engine does with and without it; an unknown name is a 404 in OpenAI's shape."""
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient
    from hardwire.runtime.engine import make_engine
    from hardwire.runtime.server import create_app
    rng = np.random.default_rng(10)
    names = [f"layers.{i}.{s}" for i in range(5) for s in ("wv", "w_down")]
    patch = save_patch(tmp_path / "p.patch", stories_die.id, adapters_for(stories_die, rng, names), {"name": "odd"})
    base = make_engine(stories_die, backend="golden")
    patched = make_engine(stories_die, backend="golden", patch=patch.path)
    app = create_app(base, stories_die.id, slots=2, patched={f"{stories_die.id}+odd": patched})
    client = TestClient(app)
    listed = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert listed == [stories_die.id, f"{stories_die.id}+odd"]
    prompt = [1, 403, 407, 261]
    expected = {name: make_engine(stories_die, backend="golden", **kw).generate(prompt, max_tokens=6).text
                for name, kw in ((stories_die.id, {}), (f"{stories_die.id}+odd", {"patch": patch.path}))}
    assert expected[stories_die.id] != expected[f"{stories_die.id}+odd"]
    for name, text in expected.items():
        body = client.post("/v1/completions", json={"model": name, "prompt": prompt, "max_tokens": 6,
                                                    "temperature": 0}).json()
        assert body["model"] == name and body["choices"][0]["text"] == text
    missing = client.post("/v1/completions", json={"model": "nope", "prompt": "Once", "max_tokens": 2})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_keep_term_is_zero_for_an_untrained_patch_and_charges_any_change(stories_die):
    import torch
    from hardwire.patch.train import ChipModel, Example, TrainOptions, base_log_probs, keep_loss
    keep = [Example([1, 403, 407, 261, 378], 1), Example([1, 9, 77, 300], 1)]
    model = ChipModel(stories_die, TrainOptions(rank=2, targets=("w_up",)), activation_bits=8)
    reference = base_log_probs(model, keep)
    with torch.no_grad():
        assert float(keep_loss(model, keep, reference, [0, 1])) == pytest.approx(0.0, abs=1e-7)
        for a, b in model.lora.values():
            b.add_(torch.randn(b.shape) * 0.5)
        assert float(keep_loss(model, keep, reference, [0, 1])) > 1e-3
