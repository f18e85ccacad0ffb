"""`hardwire patch train`: LoRA trained against the die as the chip computes it.

The base is the die's weights exactly as its ROM holds them (codes times scales, dequantized once),
and every matmul input is quantized as the chip's token quantizer does (docs/arithmetic.md §2.2:
int8 codes on the 72-step grid (μ/8)·2^-e times the die's calibrated input scale), with a
straight-through gradient. The adapters read those quantized inputs, as they do on the chip, so
what is learned is what the integer path (§11) then runs. Only the adapters train; after training
they are converted to integers (hardwire.patch.quantize) with t's range calibrated on the golden
model and written as a patch bound to the die's id.

Written by hand rather than on a general LoRA library: the forward pass must quantize exactly
where the chip does, which a library's float Llama cannot be told.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hardwire.adapters import TARGETS, BadPatch
from hardwire.arithmetic import hadamard_orthonormal
from hardwire.die import online_hadamard_block
from hardwire.errors import BadConfig
from hardwire.model.reference import rope_inverse_frequencies

# Matrices that read the same input (they share a token quantizer, and so its scale).
INPUT_OF = {"wq": "attn", "wk": "attn", "wv": "attn", "wo": "wo", "w_gate": "ffn", "w_up": "ffn", "w_down": "w_down"}
# The golden trace's name for each target's input codes (hardwire.golden.forward).
TRACE_POINT = {"wq": "attn_norm", "wk": "attn_norm", "wv": "attn_norm", "wo": "attention",
               "w_gate": "ffn_norm", "w_up": "ffn_norm", "w_down": "swiglu"}
PAD_ID = 0
LOSS_CURVE_SMOOTHING = 10       # steps averaged for the plotted curve


@dataclass
class Example:
    ids: list[int]          # the whole sequence, BOS first
    scored_from: int        # loss on positions predicting ids[scored_from:]


@dataclass
class TrainOptions:
    rank: int = 8
    targets: tuple[str, ...] = ("wq", "wv", "w_up", "w_down")
    steps: int = 300
    lr: float = 3e-3
    seed: int = 0
    batch: int = 16
    alpha: float | None = None          # LoRA scale alpha / rank; default alpha = rank (scale 1)
    threads: int = 1
    keep_weight: float = 1.0            # weight of the KL term that keeps the base's predictions on --keep text


@dataclass
class TrainResult:
    adapters: dict[str, tuple[np.ndarray, np.ndarray]]   # target -> (A [rank, cols], B·scale [rows, rank])
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


# -- data ---------------------------------------------------------------------------------------

def read_examples(path: str | Path, tokenizer, bos_id: int | None, limit_tokens: int,
                  option: str = "--data") -> list[Example]:
    """JSONL of {"prompt", "completion"} (loss on the completion) or {"text"} (loss on all of it)."""
    path = Path(path)
    if not path.is_file():
        raise BadConfig("no such file", path=path, field=option)
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{option} line {number}"
        try:
            record = json.loads(line)
        except ValueError as e:
            raise BadConfig(f"not JSON ({e.msg})", path=path, field=where) from None
        if not isinstance(record, dict):
            raise BadConfig('expected an object {"prompt", "completion"} or {"text"}', path=path, field=where)
        start = [bos_id] if bos_id is not None else []
        if "text" in record and isinstance(record["text"], str):
            ids = start + tokenizer.encode(record["text"], bos=False)
            scored = 1
        elif isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str):
            prompt = start + tokenizer.encode(record["prompt"], bos=False)
            completion = tokenizer.encode(record["completion"], bos=False)
            if not completion:
                raise BadConfig("the completion encodes to no tokens", path=path, field=where)
            ids, scored = prompt + completion, len(prompt)
        else:
            raise BadConfig('expected string fields "prompt" and "completion", or "text"', path=path, field=where)
        if len(ids) < 2:
            raise BadConfig("too short to train on (fewer than 2 tokens)", path=path, field=where)
        examples.append(Example(ids[:limit_tokens], min(scored, limit_tokens - 1)))
    if not examples:
        raise BadConfig("no examples", path=path, field=option)
    return examples


def data_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- the chip in torch ----------------------------------------------------------------------------

def token_steps(bits: int):
    """The token quantizer's steps (μ/8)·2^-e, ascending (§2.2), as a torch tensor."""
    import torch
    from hardwire.arithmetic import TOKEN_MAX_EXPONENT
    steps = sorted({mu / 8 * 2.0 ** -e for mu in range(8, 16) for e in range(TOKEN_MAX_EXPONENT + 1)})
    return torch.tensor(steps, dtype=torch.float32), (1 << (bits - 1)) - 1


class ChipModel:
    """The die's float forward pass with the chip's input quantization and trainable adapters."""

    def __init__(self, die, options: TrainOptions, activation_bits: int):
        import torch
        self.torch = torch
        self.spec = spec = die.spec
        self.options = options
        self.weights = {name: torch.from_numpy(np.ascontiguousarray(die.tensor(name), dtype=np.float32))
                        for name in spec.tensor_shapes()}
        scales = die.activation_scales()
        self.input_scale = {}
        for i in range(spec.layers):
            p = f"layers.{i}."
            for short in TARGETS:
                group = [p + s for s in TARGETS if INPUT_OF[s] == INPUT_OF[short]]
                known = [scales[n] for n in group if n in scales]
                self.input_scale[p + short] = max(known) if known else None
        known = scales.get(spec.classifier)
        self.input_scale[spec.classifier] = known
        self.steps, self.code_limit = token_steps(activation_bits)
        # §12: a die frozen with `had` holds W Q for w_down and feeds it Q x (the chip's butterflies);
        # here Q is the orthonormal block matrix, applied to each block of n SwiGLU outputs
        block = online_hadamard_block(die.manifest)
        self.down_transform = None if block == 1 else torch.from_numpy(
            hadamard_orthonormal(np.eye(block), block).astype(np.float32))
        inv = torch.tensor(rope_inverse_frequencies(spec), dtype=torch.float64)
        self.inv_freq = inv
        generator = torch.Generator().manual_seed(options.seed)
        scale = (options.alpha if options.alpha is not None else options.rank) / options.rank
        self.lora_scale = scale
        self.lora: dict[str, tuple] = {}
        self.adapters_on = True
        for i in range(spec.layers):
            for short in options.targets:
                name = f"layers.{i}.{short}"
                rows, cols = self.weights[name].shape
                a = (torch.randn(options.rank, cols, generator=generator) / math.sqrt(cols)).requires_grad_()
                b = torch.zeros(rows, options.rank).requires_grad_()
                self.lora[name] = (a, b)

    def parameters(self) -> list:
        return [t for pair in self.lora.values() for t in pair]

    def quantize(self, x, name: str):
        """§2.2 in float: per token, the smallest step of the grid (times the input scale) that
        holds the largest value in int8; straight-through gradient."""
        scale = self.input_scale.get(name)
        torch = self.torch
        largest = x.detach().abs().amax(dim=-1, keepdim=True)
        if scale is None:               # no calibrated scale: a plain per-token absmax step
            step = torch.clamp(largest / self.code_limit, min=1e-12)
        else:
            need = largest / (self.code_limit * scale)
            index = torch.clamp(torch.searchsorted(self.steps, need.contiguous()), max=len(self.steps) - 1)
            step = self.steps[index] * scale
        quantized = torch.clamp(torch.round(x / step), -self.code_limit, self.code_limit) * step
        return x + (quantized - x).detach()

    def linear(self, name: str, x_quantized):
        y = x_quantized @ self.weights[name].T
        if self.adapters_on and name in self.lora:
            a, b = self.lora[name]
            y = y + (x_quantized @ a.T) @ b.T * self.lora_scale
        return y

    def rmsnorm(self, x, name: str):
        mean_square = (x * x).mean(dim=-1, keepdim=True)
        return x * self.torch.rsqrt(mean_square + self.spec.norm_eps) * self.weights[name]

    def rope(self, x, positions):
        torch = self.torch
        angles = positions[:, None].double() * self.inv_freq[None, :]
        cos, sin = torch.cos(angles).float(), torch.sin(angles).float()
        half = x.shape[-1] // 2
        first, second = x[..., :half], x[..., half:]
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
        return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)

    def forward(self, ids, quantize: bool = True):
        """Logits [batch, T, vocab] of token ids [batch, T] from position 0."""
        torch, spec = self.torch, self.spec
        q_in = self.quantize if quantize else (lambda x, name: x)
        batch, length = ids.shape
        positions = torch.arange(length)
        x = self.weights["embed"][ids]
        mask = torch.ones(length, length, dtype=torch.bool).tril()
        if spec.sliding_window is not None:
            mask &= ~torch.ones(length, length, dtype=torch.bool).tril(-spec.sliding_window)
        group = spec.heads // spec.kv_heads
        for i in range(spec.layers):
            p = f"layers.{i}."
            h = q_in(self.rmsnorm(x, p + "attn_norm"), p + "wq")
            q, k, v = (self.linear(p + s, h) for s in ("wq", "wk", "wv"))
            if spec.qkv_bias:
                q, k, v = q + self.weights[p + "bq"], k + self.weights[p + "bk"], v + self.weights[p + "bv"]
            q = self.rope(q.view(batch, length, spec.heads, spec.head_dim), positions)
            k = self.rope(k.view(batch, length, spec.kv_heads, spec.head_dim), positions)
            v = v.view(batch, length, spec.kv_heads, spec.head_dim)
            k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
            scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(spec.head_dim)
            scores = scores.masked_fill(~mask, float("-inf"))
            attended = torch.einsum("bhts,bshd->bthd", torch.softmax(scores, dim=-1), v).reshape(batch, length, -1)
            x = x + self.linear(p + "wo", q_in(attended, p + "wo"))
            h = q_in(self.rmsnorm(x, p + "ffn_norm"), p + "w_gate")
            gate, up = self.linear(p + "w_gate", h), self.linear(p + "w_up", h)
            down_in = self.down_input(torch.nn.functional.silu(gate) * up)
            x = x + self.linear(p + "w_down", q_in(down_in, p + "w_down"))
        h = q_in(self.rmsnorm(x, "final_norm"), spec.classifier)
        return h @ self.weights[spec.classifier].T

    def down_input(self, x):
        """What w_down reads: x, or Q x on a die with the online Hadamard transform (Q symmetric,
        so each block's row vector times Q is Q times it)."""
        if self.down_transform is None:
            return x
        block = self.down_transform.shape[0]
        return (x.reshape(*x.shape[:-1], -1, block) @ self.down_transform).reshape(x.shape)

    def adapters(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {name: (a.detach().numpy().astype(np.float64), (b.detach() * self.lora_scale).numpy().astype(np.float64))
                for name, (a, b) in self.lora.items()}


def batch_tensors(examples: list[Example]):
    import torch
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), PAD_ID, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, :len(e.ids)] = torch.tensor(e.ids)
        # position t predicts ids[t + 1]; scored positions predict ids[scored_from:]
        labels[row, e.scored_from - 1:len(e.ids) - 1] = torch.tensor(e.ids[e.scored_from:])
    return ids, labels


def base_log_probs(model: ChipModel, keep: list[Example]) -> list:
    """The unpatched die's next-token log-probabilities on each keep sequence (computed once)."""
    import torch
    model.adapters_on = False
    with torch.no_grad():
        out = [torch.log_softmax(model.forward(torch.tensor([e.ids]))[0], dim=-1) for e in keep]
    model.adapters_on = True
    return out


def keep_loss(model: ChipModel, keep: list[Example], reference: list, chosen):
    """Mean KL(base || patched) per position over the chosen keep sequences: the patch is charged
    for every change it makes to the die's predictions on text it should leave alone."""
    import torch
    ids, _ = batch_tensors([keep[i] for i in chosen])
    log_probs = torch.log_softmax(model.forward(ids), dim=-1)
    total, count = 0.0, 0
    for row, i in enumerate(chosen):
        length = len(keep[i].ids)
        base = reference[i]
        total = total + (base.exp() * (base - log_probs[row, :length])).sum()
        count += length
    return total / count


def train_lora(die, examples: list[Example], options: TrainOptions, activation_bits: int,
               advance=lambda what=None: None, keep: list[Example] | None = None) -> TrainResult:
    """Cross-entropy on `examples`, plus `keep_weight` times the KL to the unpatched die on `keep`."""
    import torch
    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    model = ChipModel(die, options, activation_bits)
    keep = keep or []
    reference = base_log_probs(model, keep) if keep else []
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=0.0)
    order = np.random.default_rng(options.seed)
    losses = []
    started = time.monotonic()
    for step in range(options.steps):
        chosen = order.choice(len(examples), size=min(options.batch, len(examples)), replace=False)
        ids, labels = batch_tensors([examples[i] for i in chosen])
        logits = model.forward(ids)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                 ignore_index=-100)
        if keep:
            kept = order.choice(len(keep), size=min(options.batch, len(keep)), replace=False)
            loss = loss + options.keep_weight * keep_loss(model, keep, reference, kept)
        optimizer.zero_grad()
        loss.backward()
        # cosine decay to a tenth: small data, so the last steps should not keep jumping around
        for group in optimizer.param_groups:
            group["lr"] = options.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, options.steps))))
        optimizer.step()
        losses.append(loss.item())
        advance(f"loss {losses[-1]:.3f}")
    return TrainResult(model.adapters(), losses, time.monotonic() - started)


# -- to integers ----------------------------------------------------------------------------------

def inner_ranges(die, tables, adapters: dict[str, tuple[np.ndarray, np.ndarray]],
                 sequences: list[list[int]]) -> dict[str, np.ndarray]:
    """max |(A x)_j| over the input codes x each target sees when the base golden model runs
    `sequences` (the training data): the range t' of §11 must hold."""
    from hardwire.golden.forward import GoldenTransformer
    by_point: dict[str, list[str]] = {}
    for name in adapters:
        layer, short = name.rsplit(".", 1)
        by_point.setdefault(f"{layer}.{TRACE_POINT[short]}", []).append(name)
    largest = {name: np.zeros(adapters[name][0].shape[0]) for name in adapters}

    def record(point, value):
        for name in by_point.get(point, ()):
            np.maximum(largest[name], np.abs(adapters[name][0] @ value.astype(np.float64)), out=largest[name])

    longest = max(len(s) for s in sequences)
    model = GoldenTransformer(die, tables, capacity=min(longest, die.spec.max_context))
    for ids in sequences:
        model.reset()
        for token in ids[:die.spec.max_context]:
            model.step(token, record)
    return largest


def check_options(die, options: TrainOptions) -> None:
    from hardwire.adapters import MAX_RANK
    try:
        import torch  # noqa: F401
    except ImportError:
        raise BadConfig("training a patch needs PyTorch: pip install torch==2.13.0 (the CPU build)",
                        field="patch train") from None
    if not 1 <= options.rank <= MAX_RANK:
        raise BadPatch(f"must be in [1, {MAX_RANK}], got {options.rank}", field="--rank")
    if options.steps < 1:
        raise BadConfig("must be at least 1", field="--steps")
    if not options.lr > 0 or not math.isfinite(options.lr):
        raise BadConfig("must be a positive number", field="--lr")
    if options.batch < 1:
        raise BadConfig("must be at least 1", field="--batch")
    if not options.keep_weight >= 0 or not math.isfinite(options.keep_weight):
        raise BadConfig("must be a number >= 0", field="--keep-weight")
    if die.spec.experts:
        raise BadPatch("patches for mixture-of-experts dies are not supported", field="die")


def plot_losses(losses: list[float], path: str | Path, title: str) -> None:
    from hardwire.chip.commands import save_plot
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(range(1, len(losses) + 1), losses, color="tab:blue", alpha=0.35, label="per step")
    k = LOSS_CURVE_SMOOTHING
    if len(losses) >= k:
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(range(k, len(losses) + 1), smooth, color="tab:blue", label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (cross-entropy + keep KL, nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_plot(fig, path)
