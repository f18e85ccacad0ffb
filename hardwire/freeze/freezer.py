"""Freeze a model into a die, streaming one layer at a time.

    embed ─▶ layer 0 ─▶ … ─▶ layer L-1 ─▶ head (final norm, classifier)

At each stage the float weights are read from the checkpoint, quantized by the plan, written to
the stage's weights file and dropped. Calibration tokens flow alongside as residual streams
[tokens, hidden] through the *already quantized* stages (as GPTQ prescribes), so each matrix is
calibrated on the inputs it will really see. Per stage the calibration run records every matmul's
input absmax (activation scales) and, for GPTQ matrices, X^T X. Peak memory: one layer's float
weights and their quantized copies, the calibration streams, and one Hessian per distinct input.

Under `learn` (freeze/rounding.py) a layer's later inputs (wo's, the FFN's, w_down's) are captured
again after the matrices that compute them are quantized, and the classifier is quantized last.

A plan's offline transforms (freeze/transforms.py) run first: the residual rotation wraps the
model (each tensor rotated as it is read), and a layer's activation-aware scales are searched on
the calibration inputs of that layer and folded into its float weights before it is quantized.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from hardwire.die import GOLDEN_TABLES_KEY, Die, DieWriter
from hardwire.errors import BadConfig
from hardwire.formats import QuantizedTensor, activation_bits, activation_scale
from hardwire.freeze.calibrate import (InputStatistics, LayerRunner, classifier_fisher, final_hidden,
                                       hessian_source, limit_sequences, measure_sensitivity)
from hardwire.freeze.plan import Choice, Plan, check_budget, matrix_shapes, resolve
from hardwire.freeze.quantize import quantize
from hardwire.freeze.rounding import learn_affordable, learn_rounding
from hardwire.freeze.tables import freeze_tables
from hardwire.freeze.transforms import AWQ_GRID, AWQ_SAMPLE_TOKENS, HadamardWeights, RotatedWeights, channel_scaling
from hardwire.model.tokenizer import tokenizer_files

DEFAULT_CALIBRATION_TOKENS = 16384
DEFAULT_SENSITIVITY_TOKENS = 2048
SENSITIVITY_WINDOW = 256           # attention cost grows with length; short windows measure as well


@dataclass
class Calibration:
    sequences: list[list[int]]      # BOS + token ids per sequence
    description: dict               # what the die records: source file, its sha256, counts

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences)


def freeze(model, plan: Plan, output: str | Path, calibration: Calibration, overwrite: bool = False,
           sensitivity_tokens: int = DEFAULT_SENSITIVITY_TOKENS, progress=None) -> Die:
    """Quantize `model` (anything with `.spec` and `.tensor(name)`) by `plan` into a die at `output`.

    `progress(what)` is called after each unit of work: "sensitivity" once per layer of the
    sensitivity pass (mixed plans only), then once per stage (embed, each layer, head).

    The float work runs on a single-threaded BLAS: a multi-threaded one splits its sums by the
    number of threads, so the calibrated scales' last bits, and with them the die's id, would
    depend on the machine's core count (measured: stories260K w8 got one id with 2 or 4 threads,
    another with 1). One thread is also much faster for the small products of calibration."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return freeze_on_this_thread(model, plan, output, calibration, overwrite, sensitivity_tokens, progress)


def freeze_on_this_thread(model, plan: Plan, output: str | Path, calibration: Calibration, overwrite: bool,
                          sensitivity_tokens: int, progress) -> Die:
    transforms: dict = {}
    if plan.rotated:
        model = RotatedWeights(model)
        transforms["rotation"] = model.record()
    online: dict = {}          # the float layers' view of the die's online transforms
    if plan.online_hadamard:
        model = HadamardWeights(model)
        transforms.update(model.record())
        online = model.input_transforms
    spec = model.spec
    step = progress or (lambda what: None)
    check_budget(plan, spec)
    if not calibration.sequences:
        raise BadConfig("calibration needs at least one sequence of tokens")
    too_long = max(len(s) for s in calibration.sequences)
    if too_long > spec.max_context:
        raise BadConfig(f"a calibration sequence has {too_long} tokens, more than the model's context "
                        f"{spec.max_context}")
    shapes = matrix_shapes(spec)
    damage = None
    if plan.is_mixed:
        candidates = {name: [(c.name, c.format, c.clip) for c in plan.default.choices] for name in shapes}
        windows = [s[i:i + SENSITIVITY_WINDOW] for s in calibration.sequences
                   for i in range(0, len(s), SENSITIVITY_WINDOW)]
        damage = measure_sensitivity(model, candidates, limit_sequences(windows, sensitivity_tokens),
                                     progress=lambda _: step("sensitivity"), input_transforms=online)
    assignment = resolve(plan, spec, damage)
    # GPTQ and learned rounding both need X^T X of the matrix's calibration inputs
    gptq_inputs = {hessian_source(n) for n, c in assignment.items() if c.method == "gptq" or c.rounding}
    # A scaled input serves every matrix reading it, so one matrix naming awq scales its siblings too.
    awq_inputs = {hessian_source(n) for n, c in assignment.items()
                  if "awq" in c.transforms and n.startswith("layers.") and n not in online}
    awq_alphas: dict[str, float] = {}
    methods_used: dict[str, str] = {}
    activation_absmax: dict[str, float] = {}
    sequences = [np.asarray(s, dtype=np.int64) for s in calibration.sequences]
    capacity = max(len(s) for s in sequences)

    def quantize_matrix(name: str, weight: np.ndarray, stats: InputStatistics | None,
                        learn_target: Callable[[], np.ndarray | None] | None = None) -> QuantizedTensor:
        """`name`'s plan on `weight`, on the Hessian of its inputs in `stats` (round-to-nearest
        without). Learned rounding weighs the error by that Hessian, or by `learn_target()` when
        it gives one (the classifier: classifier_fisher), asked only when learning runs."""
        choice: Choice = assignment[name]
        hessian = stats.hessian(hessian_source(name)) if stats is not None else None
        method = choice.method if hessian is not None else "rtn"
        quantized = quantize(weight, choice.format, method, hessian, clip=choice.clip)
        if "learn" in choice.rounding and hessian is not None and learn_affordable(*weight.shape):
            target = learn_target() if learn_target is not None else None
            quantized = learn_rounding(weight, quantized, hessian if target is None else target)
            method += "+learn"
        methods_used[name] = method
        return quantized

    with DieWriter(output, overwrite=overwrite) as writer:
        # Embedding: a lookup table has no input activations, so always round-to-nearest. A tied
        # one is also the classifier, whose inputs (the final hidden states) exist only after the
        # layers: with `learn` it is quantized again then, by the plan's quantizer on those inputs
        # and learned rounding on the logits' error (classifier_fisher), and the stage is written
        # last; the layers calibrate on the round-to-nearest lookups (with round-to-nearest codes
        # the lookup path cost +0.18% perplexity; with learned codes not measured on its own:
        # docs/validation.md).
        embed_learned = spec.tied_embeddings and "learn" in assignment["embed"].rounding
        embed_q = quantize_matrix("embed", model.tensor("embed"), None)
        if not embed_learned:
            writer.write_tensors("embed", {"embed": embed_q}, methods_used)
        embed_hat = embed_q.dequantize()
        streams = [embed_hat[ids] for ids in sequences]
        del embed_hat, embed_q
        step("embed")

        for index in range(spec.layers):
            prefix = f"layers.{index}."
            weights = {prefix + short: model.tensor(prefix + short) for short in spec.layer_tensor_shapes()}
            runner = LayerRunner(spec, index, dict(weights), capacity, input_transforms=online)
            stats = None
            layer_gptq = {n for n in gptq_inputs if n.startswith(prefix)}
            layer_awq = {n for n in awq_inputs if n.startswith(prefix)}
            if layer_gptq or layer_awq:
                stats = InputStatistics(layer_gptq, layer_awq, AWQ_SAMPLE_TOKENS)
                for x in streams:
                    runner(x, capture=stats.capture)
            if layer_awq:
                found = channel_scaling(spec, prefix, weights, stats.samples(),
                                        {n: assignment[n].format for n in weights if n in assignment})
                for source, (scales, alpha) in found.items():
                    awq_alphas[prefix + source] = alpha
                    name = prefix + source
                    if name in stats.hessians:          # the matrices now read x / s
                        inverse = 1.0 / scales.astype(np.float32)
                        stats.hessians[name] *= inverse[:, None] * inverse[None, :]
                for name, weight in weights.items():
                    runner.set(name, weight)
            stored: dict[str, object] = {}
            quantized_since_capture = False
            for name, weight in weights.items():
                if weight.ndim == 2:
                    # Under `learn`, an input computed from matrices of this layer already quantized
                    # (wo's after q/k/v, the FFN's after attention, w_down's after gate/up) is
                    # captured again, so the matrix is fitted to the input it will really see.
                    if quantized_since_capture and name in layer_gptq and assignment[name].rounding:
                        stats = InputStatistics({n for n in layer_gptq if n not in stored})
                        for x in streams:
                            runner(x, capture=stats.capture)
                        quantized_since_capture = False
                    q = quantize_matrix(name, weight, stats)
                    quantized_since_capture = True
                    runner.set(name, q.dequantize())
                    stored[name] = q
                else:
                    stored[name] = weight
            del stats, weights
            writer.write_tensors(prefix.rstrip("."), stored, methods_used)
            del stored
            absmax = InputStatistics()
            streams = [runner(x, capture=absmax.capture) for x in streams]
            activation_absmax.update(absmax.absmax)
            del runner
            step(f"layer {index}")

        final_norm = model.tensor("final_norm")
        hidden = [final_hidden(spec, x, final_norm) for x in streams]
        del streams
        head_name = spec.classifier
        head_stats = InputStatistics({head_name} & gptq_inputs)
        for h in hidden:
            head_stats.capture(head_name, h)
        activation_absmax[head_name] = head_stats.absmax[head_name]
        head: dict[str, object] = {"final_norm": final_norm}
        if embed_learned or not spec.tied_embeddings:
            # the plan's quantizer on the classifier's inputs; learned rounding on the logits'
            # error, each row weighted by how often its token is predicted (classifier_fisher)
            classifier = model.tensor(head_name)
            quantized = quantize_matrix(head_name, classifier, head_stats,
                                        lambda: classifier_fisher(hidden, classifier))
            if embed_learned:
                writer.write_tensors("embed", {"embed": quantized}, methods_used)
            else:
                head["output"] = quantized
            del quantized, classifier
        writer.write_tensors("head", head, methods_used)
        del head, hidden, head_stats
        step("head")
        if awq_alphas:
            transforms["channel_scaling"] = {"method": "awq", "grid": f"alpha in 0..{AWQ_GRID - 1}/{AWQ_GRID}",
                                             "alpha": awq_alphas}

        writer.write_arrays("activations.safetensors", {
            name: np.array([activation_scale(value, plan.activations)], np.float32)
            for name, value in activation_absmax.items()})
        tokenizer = getattr(model, "tokenizer", None)
        copied = tokenizer_files(tokenizer) if tokenizer is not None else []
        tokenizer_info = None
        for path in copied:          # the tokenizer's own file first, then the files it read beside it
            writer.copy_file(path, f"tokenizer/{path.name}")
        if copied:
            tokenizer_info = {"kind": getattr(tokenizer, "kind", None), "file": f"tokenizer/{copied[0].name}"}

        matrix_weights = sum(math.prod(s) for s in shapes.values())
        matrix_bits = sum(assignment[n].format.storage_bits(shapes[n]) for n in shapes)
        vector_values = spec.parameter_count() - matrix_weights
        fields = {
            "spec": spec.to_dict(),
            # the checkpoint's own name, not where it lies: the weights are in the die and under its id,
            # so the same checkpoint frozen from another checkout or folder gets the same id
            "source": {"path": Path(model.path).name if getattr(model, "path", None) else None,
                       "format": getattr(model, "format", None)},
            "tokenizer": tokenizer_info,
            "plan": {**plan.to_dict(),
                     "assignment": {n: {"format": assignment[n].format.name, "method": methods_used[n]}
                                    for n in shapes},
                     "sensitivity_kl": damage},
            **({"transforms": transforms} if transforms else {}),
            "activations": {"format": plan.activations, "bits": activation_bits(plan.activations),
                            "file": "activations.safetensors", "scaling": "per-tensor symmetric absmax"},
            "calibration": {**calibration.description, "sequences": len(calibration.sequences),
                            "tokens": calibration.tokens},
            "totals": {"matrix_weights": matrix_weights, "matrix_rom_bits": matrix_bits,
                       "bits_per_weight": matrix_bits / matrix_weights,
                       "code_bits_per_weight": sum(assignment[n].format.bits * math.prod(shapes[n])
                                                   for n in shapes) / matrix_weights,
                       "vector_values": vector_values,
                       "rom_bits": matrix_bits + 32 * vector_values},
        }
        # The golden datapath's tables (docs/arithmetic.md §10) are part of the die, so the golden
        # model and the RTL read the same constants on every machine.
        fields[GOLDEN_TABLES_KEY] = freeze_tables(writer, spec, fields["activations"], calibration.sequences,
                                                  transforms=transforms)
        step("golden tables")
        return writer.commit(fields)
