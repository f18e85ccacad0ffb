"""The cycle-level pipeline simulator against the analytic model and against pipeline theory."""
from __future__ import annotations

import pytest

from hardwire.chip import MODEL_PRESETS, estimate, load_chip, model_preset, simulate


@pytest.mark.parametrize("name", list(MODEL_PRESETS))
@pytest.mark.parametrize("users", [1, 4])
def test_simulator_agrees_with_analytic_model_within_5_percent(name, users):
    spec, chip = model_preset(name), load_chip("hc1")
    analytic = estimate(spec, chip, context=512, users=users)
    sim = simulate(spec, chip, users=users, context=512, tokens=8)
    assert sim.tokens_per_s == pytest.approx(analytic.tokens_per_s, rel=0.05)
    assert sim.latency_us_per_token == pytest.approx(analytic.latency_us_per_token, rel=0.05)
    assert sim.aggregate_tokens_per_s == pytest.approx(analytic.aggregate_tokens_per_s, rel=0.05)


@pytest.mark.parametrize("name", ["llama-3.1-8b", "qwen2.5-0.5b", "stories15m"])
def test_simulated_time_to_first_token_agrees_with_analytic(name):
    spec, chip = model_preset(name), load_chip("hc1")
    analytic = estimate(spec, chip, prompt_tokens=256)
    sim = simulate(spec, chip, users=1, context=0, tokens=1, prompt_tokens=256)
    assert sim.ttft_ms == pytest.approx(analytic.ttft_ms, rel=0.05)


def test_prefill_is_much_faster_than_decoding_the_prompt():
    # Prompt tokens overlap in the pipeline, so 256 of them cost far less than 256 token latencies.
    spec, chip = model_preset("llama-3.1-8b"), load_chip("hc1")
    sim = simulate(spec, chip, users=1, context=0, tokens=1, prompt_tokens=256)
    one_token_ms = estimate(spec, chip, context=128).latency_us_per_token / 1e3
    assert sim.ttft_ms < 256 * one_token_ms / 20


def test_saturated_pipeline_delivers_one_token_per_slowest_stage():
    # Pipeline theory: with more users than stages, throughput = clock ÷ slowest stage's cycles.
    spec, chip = model_preset("stories260k"), load_chip("hc1")
    sim = simulate(spec, chip, users=200, context=64, tokens=6)
    slowest = max(s.cycles(64 + 3) for s in estimate(spec, chip, context=64).stages)
    assert sim.aggregate_tokens_per_s == pytest.approx(chip.clock_hz / slowest, rel=0.05)
    assert max(sim.stage_busy.values()) == pytest.approx(1.0, abs=0.05)


def test_a_few_users_do_not_slow_each_other():
    spec, chip = model_preset("llama-3.2-1b"), load_chip("hc1")
    alone = simulate(spec, chip, users=1, context=256, tokens=8)
    shared = simulate(spec, chip, users=8, context=256, tokens=8)
    assert shared.tokens_per_s == pytest.approx(alone.tokens_per_s, rel=0.03)
    assert shared.aggregate_tokens_per_s == pytest.approx(8 * alone.aggregate_tokens_per_s, rel=0.05)
