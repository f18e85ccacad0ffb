"""The GPUs a chip is compared with, and their decode rate on a model from a roofline.

Each GPU's figures are its vendor's data sheet (docs/chip-model.md §10 gives the sources; prices
are assumptions, since NVIDIA publishes none). Decode of a batch of B users reads every weight once
and each user's KV cache once per step, and does 2 operations per active weight per user:

    step time = max((weight bytes + B · KV bytes per user) / (GPUs · bandwidth · η_bw),
                    2 · active weights · B / (GPUs · peak ops · η_ops))

per-user rate = 1 / step time, aggregate = B / step time. B is as many users as the HBM left over
after the weights holds at the stated context, capped at `MAX_BATCH`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from hardwire.errors import BadConfig
from hardwire.model.spec import ModelSpec

# -- assumptions shared by every GPU (docs/chip-model.md §10) -------------------------------------
BANDWIDTH_EFFICIENCY = 0.80     # assumed: decode kernels reach ~80% of peak HBM bandwidth
COMPUTE_EFFICIENCY = 0.50       # assumed: half of dense peak tensor throughput at decode batch sizes
WEIGHT_SHARE_OF_HBM = 0.50      # assumed: weights take at most half of a replica's HBM, the rest is KV
USABLE_HBM = 0.90               # assumed: runtime, activations and fragmentation take 10%
MAX_BATCH = 256                 # assumed: a serving engine's usual largest decode batch (vLLM's default max_num_seqs)


@dataclass(frozen=True)
class Gpu:
    name: str
    hbm_gb: float               # published, data sheet
    hbm_tb_per_s: float         # published, data sheet
    dense_tflops: float         # published: dense (not sparse) tensor throughput at `precision`
    precision: str              # the format weights and KV are served in
    bytes_per_weight: float
    power_w: float              # published: board TDP
    price_usd: float            # assumed: per GPU, with its share of the server around it
    source: str                 # key in docs/chip-model.md's source list


GPUS: dict[str, Gpu] = {
    # H100 SXM5 80 GB: 3.35 TB/s HBM3, 1,979 dense FP8 TFLOPS (3,958 with sparsity), 700 W
    "h100": Gpu("H100", 80.0, 3.35, 1979.0, "fp8", 1.0, 700.0, 30000.0 + 10000.0, "h100-ds"),
    # H200 SXM 141 GB: 4.8 TB/s HBM3e, same GH100 compute, 700 W
    "h200": Gpu("H200", 141.0, 4.8, 1979.0, "fp8", 1.0, 700.0, 35000.0 + 10000.0, "h200-ds"),
    # B200 (HGX, 1,000 W): 192 GB HBM3e at 8 TB/s, 4,500 dense FP8 TFLOPS
    "b200": Gpu("B200", 192.0, 8.0, 4500.0, "fp8", 1.0, 1000.0, 40000.0 + 12000.0, "b200-ds"),
}


def gpu(name: str) -> Gpu:
    key = name.lower()
    if key not in GPUS:
        raise BadConfig(f"unknown GPU {name!r}; expected one of {', '.join(GPUS)}", field="gpu")
    return GPUS[key]


@dataclass(frozen=True)
class GpuServing:
    """A replica (the fewest GPUs whose HBM holds the weights in its allowed share) decoding a batch."""
    gpu: Gpu
    gpus_per_replica: int
    batch: int
    tokens_per_s_per_user: float
    aggregate_tokens_per_s: float
    bound: str                  # "bandwidth" or "compute": what sets the step time

    def to_json(self) -> dict:
        return {"gpu": self.gpu.name, "precision": self.gpu.precision, "gpus_per_replica": self.gpus_per_replica,
                "batch": self.batch, "tokens_per_s_per_user": self.tokens_per_s_per_user,
                "aggregate_tokens_per_s_per_replica": self.aggregate_tokens_per_s, "bound": self.bound}


def kv_bytes_per_user(spec: ModelSpec, context: int, gpu_: Gpu) -> float:
    return 2 * spec.layers * spec.kv_dim * context * gpu_.bytes_per_weight


def weights_read(spec: ModelSpec, batch: int) -> float:
    """Weights one decode step of `batch` users reads: all of a dense model's; for a mixture of
    experts the shared part and every expert at least one user chose (each user picks
    `experts_per_token` of `experts` at random: an expert is idle with probability (1 - k/E)^B).
    An untied embedding table is not read, only one row of it per user."""
    weights = spec.parameter_count() - (0 if spec.tied_embeddings else spec.vocab_size * spec.hidden_dim)
    if not spec.is_moe:
        return weights
    routed = spec.experts * spec.expert_weights() * spec.layers
    touched = 1 - (1 - spec.experts_per_token / spec.experts) ** batch
    return weights - routed + routed * touched


def serve(spec: ModelSpec, gpu_: Gpu, context: int, batch: int | None = None) -> GpuServing:
    """The roofline decode rate of `spec` on replicas of `gpu_` at `context` cached positions per
    user; `batch`: users decoding together (default: as many as the HBM holds, up to MAX_BATCH).
    Each user's token multiplies the model's active weights (`ModelSpec.active_parameter_count`)."""
    weights = spec.parameter_count()
    active = spec.active_parameter_count()
    weight_bytes = weights * gpu_.bytes_per_weight
    hbm_bytes = gpu_.hbm_gb * 1e9
    n = max(1, math.ceil(weight_bytes / (WEIGHT_SHARE_OF_HBM * hbm_bytes)))
    kv = kv_bytes_per_user(spec, context, gpu_)
    if batch is None:
        batch = max(int(min(MAX_BATCH, (USABLE_HBM * n * hbm_bytes - weight_bytes) // kv)), 1)
    memory_s = (weights_read(spec, batch) * gpu_.bytes_per_weight + batch * kv) / (n * gpu_.hbm_tb_per_s * 1e12 * BANDWIDTH_EFFICIENCY)
    compute_s = 2 * active * batch / (n * gpu_.dense_tflops * 1e12 * COMPUTE_EFFICIENCY)
    step_s = max(memory_s, compute_s)
    return GpuServing(gpu=gpu_, gpus_per_replica=n, batch=batch, tokens_per_s_per_user=1 / step_s,
                      aggregate_tokens_per_s=batch / step_s,
                      bound="bandwidth" if memory_s >= compute_s else "compute")
