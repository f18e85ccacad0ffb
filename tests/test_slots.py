"""Users as KV-cache slots decoded together, and the sampling options of a Decoding.

A batched step must give every user what decoding it alone gives: on the golden backend the same
integers, so the same tokens; on the float backend the same greedy tokens (a matrix product may
round the last bits differently from a vector product).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from hardwire.backend import Decoding, KVCache

PROMPTS = ["Once upon a time", "The cat", "Lily and Ben went", "One day, a little", "The sun was",
           "Tom had a big", "She looked at the", "In the park"]


@pytest.fixture(scope="module")
def golden(stories_die):
    from hardwire.runtime.engine import make_engine
    return make_engine(stories_die.path, backend="golden")


@pytest.fixture(scope="module")
def floating():
    from hardwire.runtime.engine import make_engine
    return make_engine()


def decode_together(engine, decodings: list[Decoding]) -> None:
    """What the server's scheduler does: one cache per user, one batched step for all active."""
    caches = [KVCache() for _ in decodings]
    tokens = [d.advance(engine.prefill_cache(c, d.prompt_ids)) for d, c in zip(decodings, caches)]
    while any(t is not None for t in tokens):
        active = [i for i, t in enumerate(tokens) if t is not None]
        logits = engine.decode_batch([caches[i] for i in active], [tokens[i] for i in active])
        for i, row in zip(active, logits):
            tokens[i] = decodings[i].advance(row)


def sampling(i: int) -> dict:
    return {"max_tokens": 12 + 3 * i, "temperature": 0.9, "top_p": 0.95, "seed": 100 + i}


def test_eight_golden_slots_decoded_together_give_the_tokens_of_eight_alone(golden):
    prompts = [golden.tokenizer.encode(p, bos=True) for p in PROMPTS]
    alone = [golden.generate(ids, **sampling(i)) for i, ids in enumerate(prompts)]
    together = [Decoding(golden, ids, **sampling(i)) for i, ids in enumerate(prompts)]
    decode_together(golden, together)
    assert [d.result().ids for d in together] == [g.ids for g in alone]
    assert [d.result().text for d in together] == [g.text for g in alone]
    assert len({len(g.ids) for g in alone}) > 1              # users finished at different steps


def test_a_golden_batched_step_is_the_same_integers_as_stepping_each_alone(golden):
    prompts = [golden.tokenizer.encode(p, bos=True) for p in PROMPTS]
    caches = [KVCache() for _ in prompts]
    for cache, ids in zip(caches, prompts):
        golden.prefill_cache(cache, ids)
    together = golden.decode_batch(caches, [5] * len(prompts))
    for ids, row in zip(prompts, together):
        golden.reset()
        alone = golden.forward_integer(ids + [5])[-1]
        assert row.dtype == np.int64 and row.tolist() == alone.tolist()


def test_float_slots_decoded_together_give_the_greedy_tokens_of_each_alone(floating):
    prompts = [floating.tokenizer.encode(p, bos=True) for p in PROMPTS]
    alone = [floating.generate(ids, max_tokens=16) for ids in prompts]
    together = [Decoding(floating, ids, max_tokens=16) for ids in prompts]
    decode_together(floating, together)
    assert [d.result().ids for d in together] == [g.ids for g in alone]
    caches = [KVCache() for _ in prompts]
    for cache, ids in zip(caches, prompts):
        floating.prefill_cache(cache, ids)
    for ids, row in zip(prompts, floating.decode_batch(caches, [7] * len(prompts))):
        np.testing.assert_allclose(row, floating.logits(ids + [7])[-1], atol=1e-4)


@pytest.mark.parametrize("backend", ["float", "golden"])
def test_a_vanishing_temperature_is_greedy_and_never_a_nan(backend, floating, golden):
    engine = floating if backend == "float" else golden
    ids = engine.tokenizer.encode("Once upon a time", bos=True)
    greedy = engine.generate(ids, max_tokens=10).ids
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for temperature in (1e-308, 5e-324, 1e-30):
            assert engine.generate(ids, max_tokens=10, temperature=temperature, seed=3).ids == greedy


@pytest.mark.parametrize("backend", ["float", "golden"])
def test_top_k_of_one_is_greedy_and_a_negative_seed_is_a_seed(backend, floating, golden):
    engine = floating if backend == "float" else golden
    ids = engine.tokenizer.encode("The cat", bos=True)
    greedy = engine.generate(ids, max_tokens=10).ids
    assert engine.generate(ids, max_tokens=10, temperature=1.0, top_k=1, seed=5).ids == greedy
    first = engine.generate(ids, max_tokens=10, temperature=1.0, seed=-1).ids
    assert engine.generate(ids, max_tokens=10, temperature=1.0, seed=-1).ids == first


@pytest.mark.parametrize("backend", ["float", "golden"])
def test_a_frequency_penalty_repeats_tokens_less(backend, floating, golden):
    engine = floating if backend == "float" else golden
    ids = engine.tokenizer.encode("Once upon a time", bos=True)

    def repeats(**options) -> int:
        out = engine.generate(ids, max_tokens=60, stop_at_eos=False, **options).ids
        return len(out) - len(set(out))
    assert repeats(frequency_penalty=2.0, presence_penalty=2.0) < repeats()


def test_logprobs_name_each_token_and_its_likeliest_alternatives(floating):
    ids = floating.tokenizer.encode("Once upon a time", bos=True)
    result = floating.generate(ids, max_tokens=6, logprobs=3)
    entries = result.extra["logprobs"]
    assert [e["id"] for e in entries] == result.ids
    assert "".join(e["token"] for e in entries) == result.text
    for entry in entries:                                     # greedy: the chosen token is the likeliest
        top = list(entry["top_logprobs"].values())
        assert len(top) == 3 and top == sorted(top, reverse=True)
        assert entry["logprob"] == pytest.approx(top[0]) and entry["logprob"] <= 0
    assert np.exp(top).sum() <= 1 + 1e-9
