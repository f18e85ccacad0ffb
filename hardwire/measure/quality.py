"""Quality of a frozen model against its float original, on text.

Protocol (matches hardwire/data/tinystories_valid_1k/PROVENANCE.md, whose perplexity 4.5772
for stories260K it reproduces): the text becomes token sequences as `hardwire.model.text`
describes (one per document, BOS + tokens, no EOS; a document longer than the context cut into
windows that overlap by one token), and each sequence is scored from an empty cache, so every
token after the first is predicted exactly once and no position exceeds the context the chip has.

Metrics per candidate, over all predicted tokens:
  perplexity        exp(mean negative log-likelihood)
  float_perplexity  the same for the float reference
  top1_agreement    fraction of positions where candidate and float agree on the most likely token
  kl_mean           mean KL(float || candidate) of the next-token distributions, nats
  layer_error       per layer, ||x_candidate - x_float|| / ||x_float|| of the residual stream
                    (a rotated die's stream taken back to the float basis first)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hardwire.die import FrozenWeights, float_input_transforms
from hardwire.errors import BadConfig
from hardwire.formats import fake_quantize_activations
from hardwire.freeze.calibrate import kl_divergence, log_softmax
from hardwire.freeze.transforms import source_spec, unrotate
from hardwire.model.reference import FloatTransformer, rmsnorm, rope_tables
from hardwire.model.spec import Weights
from hardwire.runtime.engine import PatchedWeights, make_engine


# -- running a model layer by layer --------------------------------------------------------------

class ActivationQuantizedTransformer(FloatTransformer):
    """The float reference with every matmul input rounded to the die's activation grid."""

    def __init__(self, spec, tensor, capacity, scales: dict[str, float], activation_format: str,
                 input_transforms: dict | None = None):
        super().__init__(spec, tensor, capacity, input_transforms)
        self.activation_scales = scales
        self.activation_format = activation_format

    def product(self, name, x):
        """The input rounded after the die's online transform, as the chip's token quantizer does."""
        x = fake_quantize_activations(x, self.activation_scales[name], self.activation_format)
        return super().product(name, x)


def transformer_for(source: Weights, capacity: int, act_quant: bool = False) -> FloatTransformer:
    """A float transformer over a Model's or Die's weights with a cache of `capacity` positions."""
    spec = source.spec
    if capacity > spec.max_context:
        raise BadConfig(f"a sequence of {capacity} tokens exceeds the model's context of {spec.max_context}; "
                        f"score it in windows")
    if act_quant:
        info = source.manifest.get("activations") if isinstance(source, FrozenWeights) else None
        if not info:
            raise BadConfig("--act-quant needs a die (activation scales are calibrated at freeze time)")
        return ActivationQuantizedTransformer(spec, source.tensor, capacity, source.activation_scales(),
                                              info["format"], float_input_transforms(source))
    return FloatTransformer(spec, source.tensor, capacity, float_input_transforms(source))


def forward_with_layers(transformer: FloatTransformer, ids: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits [T, vocab] of a whole sequence and the residual stream after every layer."""
    spec = transformer.spec
    transformer.reset()
    cos, sin = rope_tables(spec, np.arange(len(ids)))
    x = transformer.weights["embed"][ids]
    layers = []
    for index in range(spec.layers):
        x = transformer.layer(index, x, cos, sin, 0)
        layers.append(x)
    x = rmsnorm(x, transformer.weights["final_norm"], spec.norm_eps)
    head = spec.classifier
    return transformer.linear(head, x, None), layers


# -- scoring -------------------------------------------------------------------------------------

@dataclass
class Tally:
    nll: float = 0.0
    tokens: int = 0
    agree: int = 0
    kl: float = 0.0
    layer_error_sq: list[float] = field(default_factory=list)
    layer_reference_sq: list[float] = field(default_factory=list)


def next_token_nll(logits: np.ndarray, ids: np.ndarray) -> float:
    """Sum of -log p(ids[t+1] | ids[..t]) over the sequence."""
    log_probs = log_softmax(logits[:-1].astype(np.float64))
    return float(-log_probs[np.arange(len(ids) - 1), ids[1:]].sum())


def evaluate(candidates: list, reference, sequences: list[list[int]], act_quant: bool = False,
             progress=None, backend: str = "float", patch=None) -> tuple[list[dict], dict]:
    """Score each candidate (a Die or Model) against the float `reference` Model.

    backend "float" runs a die's dequantized weights (and reports the error of the residual stream
    after every layer); "golden" runs its integer datapath (logits only, no per-layer error).

    `patch` (a path or `Patch`) is applied to every candidate (each must be the patch's die).

    Returns ([per-candidate metrics], reference metrics)."""
    if not sequences:
        raise BadConfig("no sequence of at least two tokens to score")
    capacity = max(len(s) for s in sequences)
    transforms = [c.manifest.get("transforms") if isinstance(c, FrozenWeights) else None for c in candidates]
    for c, done_to_it in zip(candidates, transforms):
        if source_spec(c.spec, done_to_it) != reference.spec:
            raise BadConfig(f"{getattr(c, 'path', c)} has a different model spec than the float reference "
                            f"{getattr(reference, 'path', reference)}")
    float_run = transformer_for(reference, capacity)
    if backend == "golden":
        engines = [make_engine(c, backend="golden", **({"patch": patch} if patch is not None else {}))
                   for c in candidates]
        runs = [lambda ids, engine=engine: (engine.logits(ids.tolist()), None) for engine in engines]
    elif backend == "float":
        transformers = [transformer_for(c if patch is None else PatchedWeights(c, patch), capacity, act_quant)
                        for c in candidates]
        runs = [lambda ids, t=t: forward_with_layers(t, ids) for t in transformers]
    else:
        raise BadConfig(f"unknown backend {backend!r} for quality; expected float or golden", field="--backend")
    float_tally = Tally()
    tallies = [Tally(layer_error_sq=[0.0] * reference.spec.layers,
                     layer_reference_sq=[0.0] * reference.spec.layers) for _ in candidates]
    for done, ids in enumerate(sequences, 1):
        ids = np.asarray(ids, dtype=np.int64)
        ref_logits, ref_layers = forward_with_layers(float_run, ids)
        float_tally.nll += next_token_nll(ref_logits, ids)
        float_tally.tokens += len(ids) - 1
        ref_top = ref_logits[:-1].argmax(axis=-1)
        for run, tally, done_to_it in zip(runs, tallies, transforms):
            logits, layers = run(ids)
            tally.nll += next_token_nll(logits, ids)
            tally.tokens += len(ids) - 1
            tally.agree += int(np.sum(logits[:-1].argmax(axis=-1) == ref_top))
            tally.kl += float(kl_divergence(ref_logits[:-1], logits[:-1]).sum())
            for i, (x, r) in enumerate(zip(layers or [], ref_layers)):
                x = unrotate(x, done_to_it)
                tally.layer_error_sq[i] += float(np.sum((x.astype(np.float64) - r) ** 2))
                tally.layer_reference_sq[i] += float(np.sum(r.astype(np.float64) ** 2))
        if progress is not None:
            progress(done)
    float_perplexity = math.exp(float_tally.nll / float_tally.tokens)
    results = []
    for tally in tallies:
        results.append({
            "perplexity": math.exp(tally.nll / tally.tokens),
            "float_perplexity": float_perplexity,
            "top1_agreement": tally.agree / tally.tokens,
            "kl_mean": tally.kl / tally.tokens,
            "tokens": tally.tokens,
            "sequences": len(sequences),
            "layer_error": [math.sqrt(e / r) if r > 0 else 0.0
                            for e, r in zip(tally.layer_error_sq, tally.layer_reference_sq)]
                           if backend == "float" else None,
            "backend": backend,
        })
    return results, {"perplexity": float_perplexity, "tokens": float_tally.tokens, "nll_mean":
                     float_tally.nll / float_tally.tokens}


def perplexity(source, sequences: list[list[int]]) -> float:
    """Perplexity of one Model or Die on token sequences (protocol above)."""
    run = transformer_for(source, max(len(s) for s in sequences))
    nll = tokens = 0
    for ids in sequences:
        ids = np.asarray(ids, dtype=np.int64)
        run.reset()
        nll += next_token_nll(run.forward(ids), ids)
        tokens += len(ids) - 1
    return math.exp(nll / tokens)
