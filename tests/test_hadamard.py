"""§12 the online Walsh–Hadamard transform (docs/arithmetic.md): the integer butterflies against a
numpy product with Sylvester's matrix, the plan method `had` that folds its offline half into
w_down, and a die frozen with it against the float model of the untransformed algebra."""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hardwire.arithmetic import (HADAMARD_MAX_BLOCK, TOKEN_CLAMP_BITS, hadamard_block, hadamard_butterflies,  # noqa: E402
                                 hadamard_orthonormal, hadamard_output_bits)
from hardwire.die import online_hadamard_block  # noqa: E402
from hardwire.errors import BadDie, BadPlan  # noqa: E402
from hardwire.freeze.freezer import Calibration, freeze  # noqa: E402
from hardwire.freeze.plan import parse_plan  # noqa: E402
from hardwire.freeze.transforms import HadamardWeights, walsh_hadamard  # noqa: E402
from hardwire.golden.hadamard import hadamard_transform  # noqa: E402
from hardwire.measure.quality import evaluate  # noqa: E402
from hardwire.model.reference import teacher_forced_logits  # noqa: E402
from tests.test_freeze_transforms import random_model  # noqa: E402

BLOCKS = [1, 2, 4, 8, 64, HADAMARD_MAX_BLOCK]


def block_diagonal(width: int, block: int) -> np.ndarray:
    """The reference: Sylvester's H_n (built by np.block) repeated along the diagonal, as int64."""
    return np.kron(np.eye(width // block, dtype=np.int64), walsh_hadamard(block).astype(np.int64))


@pytest.mark.parametrize("block", BLOCKS)
def test_butterflies_equal_the_block_diagonal_hadamard_product(block):
    rng = np.random.default_rng(block)
    width = 3 * block
    x = rng.integers(-(1 << 20), 1 << 20, width, dtype=np.int64)
    got = x.copy()
    hadamard_butterflies(got, block)
    np.testing.assert_array_equal(got, block_diagonal(width, block) @ x)


@pytest.mark.parametrize("block", BLOCKS)
def test_transform_twice_is_n_times_the_identity(block):
    x = np.random.default_rng(7).integers(-1000, 1000, 2 * block, dtype=np.int64)
    twice = x.copy()
    hadamard_butterflies(twice, block)
    hadamard_butterflies(twice, block)
    np.testing.assert_array_equal(twice, block * x)


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("block", [2, HADAMARD_MAX_BLOCK])
def test_clamp_then_growth_fits_the_stated_width(bits, block):
    clamp = 1 << (bits + TOKEN_CLAMP_BITS)
    # the extreme: every input far beyond the clamp with one sign -> the first output is n * clamp
    wide = np.full(block, 1 << 40, dtype=np.int64)
    hadamard_transform(wide, block, bits)
    assert wide[0] == block * clamp and np.all(wide[1:] == 0)
    limit = 1 << (hadamard_output_bits(bits, block) - 1)
    assert -limit <= -block * clamp and block * clamp < limit
    assert block * clamp >= limit // 2          # and one bit fewer would not hold it
    # inside the clamp the block is the plain product
    x = np.random.default_rng(1).integers(-clamp, clamp + 1, block, dtype=np.int64)
    got = x.copy()
    hadamard_transform(got, block, bits)
    np.testing.assert_array_equal(got, walsh_hadamard(block).astype(np.int64) @ x)


def test_block_is_the_largest_power_of_two_factor_up_to_the_limit():
    assert hadamard_block(172) == 4            # stories260K's FFN: 4 * 43
    assert hadamard_block(11008) == 256        # 2^8 * 43
    assert hadamard_block(14336) == HADAMARD_MAX_BLOCK     # 2^11 * 7, capped
    assert hadamard_block(43) == 1


@pytest.mark.parametrize("block", [2, 4, 16])
def test_orthonormal_transform_is_its_own_inverse(block):
    x = np.random.default_rng(3).standard_normal((5, 3 * block))
    q = hadamard_orthonormal(x, block)
    np.testing.assert_allclose(q, x @ block_diagonal(3 * block, block).T / np.sqrt(block), atol=1e-12)
    np.testing.assert_allclose(hadamard_orthonormal(q, block), x, atol=1e-12)


# -- the plan method and the die ------------------------------------------------------------------

def test_plan_names_had_with_other_methods():
    plan = parse_plan("w4g32:had+best")
    assert plan.online_hadamard and plan.default.name == "w4g32:awq+had+clip+gptq+learn"
    assert parse_plan("mix:3g32:had+gptq,6g32,avg=3.5").online_hadamard
    assert not parse_plan("w4g32:best").online_hadamard


def test_had_refuses_an_odd_ffn_width():
    import dataclasses
    model = random_model()
    model.spec = dataclasses.replace(model.spec, ffn_dim=41)
    with pytest.raises(BadPlan, match="factor of two"):
        HadamardWeights(model)


def test_die_record_is_checked():
    assert online_hadamard_block({"spec": {"ffn_dim": 40}}) == 1           # a die frozen before `had`
    record = {"inputs": ["w_down"], "block": 8, "width": 40}

    def manifest(**changed):
        return {"spec": {"ffn_dim": 40}, "transforms": {"online_hadamard": {**record, **changed}}}
    assert online_hadamard_block(manifest()) == 8
    for bad in (3, 16, 0, "8"):                                            # 16 does not divide 40
        with pytest.raises(BadDie, match="online_hadamard.block"):
            online_hadamard_block(manifest(block=bad))
    for bad in (["wo"], ["w_down", "wo"], [], None, "w_down"):             # only w_down's input is transformed
        with pytest.raises(BadDie, match="online_hadamard.inputs"):
            online_hadamard_block(manifest(inputs=bad))
    for bad in (80, 20, None, "40"):
        with pytest.raises(BadDie, match="online_hadamard.width"):
            online_hadamard_block(manifest(width=bad))
    with pytest.raises(BadDie, match="online_hadamard"):
        online_hadamard_block({"spec": {"ffn_dim": 40}, "transforms": {"online_hadamard": 8}})


@pytest.fixture(scope="module")
def had_die(tmp_path_factory):
    model = random_model(bias=False)                  # ffn_dim 40 = 8 * 5: blocks of 8
    rng = np.random.default_rng(8)
    calibration = Calibration([list(rng.integers(0, 64, 48)) for _ in range(6)], {"source": "random ids"})
    die = freeze(model, parse_plan("w8:had+gptq"), tmp_path_factory.mktemp("had") / "h.die", calibration)
    return model, die, calibration


def test_die_records_the_transform_and_folds_it_into_w_down(had_die):
    model, die, _ = had_die
    assert die.manifest["transforms"]["online_hadamard"] == {"inputs": ["w_down"], "block": 8, "width": 40}
    # the stored w_down is W Q: times Q again (Q Q = I) it is the model's W up to 8-bit rounding
    unfolded = hadamard_orthonormal(die.tensor("layers.0.w_down").astype(np.float64), 8)
    w = model.tensor("layers.0.w_down")
    assert np.abs(unfolded - w).max() < 0.02 * np.abs(w).max()
    assert np.abs(die.tensor("layers.0.w_down") - w).max() > 0.2 * np.abs(w).max()   # it was transformed


def test_transformed_die_matches_the_untransformed_float_model(had_die):
    model, die, calibration = had_die
    ids = calibration.sequences[0]
    # float: the die's dequantized W Q reading Q x (its recorded online transform)
    (result,), _ = evaluate([die], model, [ids])
    assert result["top1_agreement"] > 0.85 and result["kl_mean"] < 0.05, result
    assert max(result["layer_error"]) < 0.1
    # golden: the integer datapath with the butterflies, against the float model itself
    from hardwire.runtime.engine import make_engine
    golden = make_engine(die, backend="golden").logits(ids)
    reference = teacher_forced_logits(model, ids)
    agreement = np.mean(golden.argmax(-1) == reference.argmax(-1))
    assert agreement > 0.85, agreement
    # without the online half the die computes something else: the check above can fail
    unfolded = teacher_forced_logits(die, ids)
    assert np.mean(unfolded.argmax(-1) == reference.argmax(-1)) < agreement


def test_golden_batched_step_equals_single_steps_on_a_transformed_die(had_die):
    from hardwire.golden.forward import GoldenTransformer
    from hardwire.golden.tables import tables_for
    from hardwire.model.reference import KVCache
    _, die, calibration = had_die
    golden = GoldenTransformer(die, tables_for(die))
    assert golden.down_hadamard_block == 8
    prompts = [calibration.sequences[0][:6], calibration.sequences[1][:6]]
    alone = []
    for prompt in prompts:
        golden.reset()
        alone.append([golden.step(t) for t in prompt])
    caches = [KVCache() for _ in prompts]
    for position in range(6):
        together = golden.step_batch([p[position] for p in prompts], caches)
        for user in range(2):
            np.testing.assert_array_equal(together[user], alone[user][position])


def test_estimate_prices_the_transform_only_for_a_die_that_records_it(had_die, tmp_path):
    from hardwire.chip.arch import FLIP_FLOP_T, FULL_ADDER_T, ChipConfig
    from hardwire.chip.estimate import estimate
    from hardwire.chip.vector_logic import hadamard_sizes
    model, die, calibration = had_die
    plain = freeze(model, parse_plan("w8:gptq"), tmp_path / "plain.die", calibration)
    chip = ChipConfig()
    # by hand: n = 8, 8-bit activations -> inputs of 19 bits; 3 stages of 4 butterflies (8 adders)
    # at 20, 21, 22 bits; the transformed vector, 40 values of 19 bits
    assert hadamard_sizes(40, 8, chip.point) == {"adder_bits": 8 * (20 + 21 + 22), "register_bits": 40 * 19}
    with_transform, without = estimate(die, chip), estimate(plain, chip)
    layers = model.spec.layers
    extra_control = with_transform.transistor_breakdown()["control"] - without.transistor_breakdown()["control"]
    assert extra_control == pytest.approx(layers * (8 * (20 + 21 + 22) * FULL_ADDER_T + 40 * 19 * FLIP_FLOP_T))
    # one block a cycle: 40 / 8 blocks and the done cycle, per layer
    extra_cycles = with_transform.to_json()["cycles_per_token"] - without.to_json()["cycles_per_token"]
    assert extra_cycles == layers * (40 // 8 + 1)


def test_a_patch_trains_on_a_transformed_die_and_helps_its_golden_model(had_die):
    """The trainer's float model feeds a `had` die's w_down (W Q) with Q x, as the chip does: without
    input quantization it is the die's float reference, and a patch trained on it, turned into
    integers, lowers the golden model's loss on its training data."""
    import torch
    from types import SimpleNamespace
    from hardwire.die import float_input_transforms
    from hardwire.golden.adapter import row_ratios
    from hardwire.golden.forward import GoldenTransformer
    from hardwire.golden.tables import tables_for
    from hardwire.measure.quality import next_token_nll
    from hardwire.model.reference import FloatTransformer
    from hardwire.patch.quantize import integer_adapter
    from hardwire.patch.train import ChipModel, Example, TrainOptions, check_options, inner_ranges, train_lora

    _, die, calibration = had_die
    tables = tables_for(die)
    bits = int(tables["activation_bits"][0])
    ids = calibration.sequences[0][:20]
    chip = ChipModel(die, TrainOptions(rank=2, targets=("w_down",)), activation_bits=bits)
    reference = FloatTransformer(die.spec, die.tensor, input_transforms=float_input_transforms(die)).forward(ids)
    with torch.no_grad():
        ours = chip.forward(torch.tensor([ids]), quantize=False)[0].numpy()
        chip.down_transform = None                     # what the trainer computed before: W Q x without Q
        untransformed = chip.forward(torch.tensor([ids]), quantize=False)[0].numpy()
    assert np.abs(ours - reference).max() < 1e-3 * np.abs(reference).max()
    assert np.abs(untransformed - reference).max() > 0.05 * np.abs(reference).max()

    options = TrainOptions(rank=2, targets=("w_down",), steps=40, lr=1e-2, batch=6)
    check_options(die, options)                        # no longer refused
    sequences = [list(map(int, s)) for s in calibration.sequences]
    result = train_lora(die, [Example(s, 1) for s in sequences], options, activation_bits=bits)
    assert result.losses[-1] < result.losses[0]
    ranges = inner_ranges(die, tables, result.adapters, sequences)
    patch = SimpleNamespace(adapters={t: integer_adapter(t, a, b, row_ratios(die, tables, t), ranges[t])
                                      for t, (a, b) in result.adapters.items()})

    def golden_nll(patch) -> float:
        model = GoldenTransformer(die, tables, patch=patch)
        total = 0.0
        for s in sequences:
            model.reset()
            total += next_token_nll(np.asarray(model.forward(s), dtype=np.float64) / 2 ** model.logit_frac_bits,
                                    np.asarray(s))
        return total

    assert golden_nll(patch) < 0.9 * golden_nll(None)     # trained without Q: 0.98