"""Economics of disposable silicon: a model frozen into chips against the same model on GPUs,
serving the same load over the same deployment (docs/chip-model.md §10).

A chip cannot be patched: every model update re-spins the masks that carry the weights and
replaces the whole fleet with new dies; a GPU fleet loads the new weights. Order of the
computation: the chip estimate (area, dies, yield, power, tokens/s) → chips for the load → NRE,
hardware per model generation, energy; the GPU roofline → GPUs for the load → hardware
depreciation, energy; then cost per million tokens, their ratio and the months to break even.

Cost over a deployment of m months, with u = updates per year × m / 12 model updates (an
expected count, so costs move smoothly with m and with the cadence):

    chip(m) = design + full mask set + u · (weight masks + re-spin engineering)
              + (1 + u) · hardware per generation + chip energy(m)
    GPU(m)  = GPU hardware · m / GPU life + GPU energy(m)

Both grow linearly in m, the chip from a higher start (NRE and its first batch); it pays off at
m = chip(0) / (GPU slope − chip slope), and never when its slope is not the lower one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from hardwire.chip.arch import weight_mask_layers, weight_masks_usd
from hardwire.chip.estimate import Estimate
from hardwire.chip.gpus import Gpu, GpuServing, serve
from hardwire.errors import BadConfig

HOURS_PER_MONTH = 365.25 * 24 / 12

# -- deployment assumptions (docs/chip-model.md §10) -----------------------------------------------
UTILISATION = 0.70              # assumed: mean load over provisioned capacity, both fleets
PUE = 1.3                       # assumed: datacenter power usage effectiveness, both fleets
GPU_LIFE_MONTHS = 48.0          # assumed: GPU depreciation period; the farm is renewed as it ages
GPU_IDLE_POWER_FRACTION = 0.30  # assumed: a GPU draws 30% of TDP idle, TDP when fully busy
RESPIN_ENGINEERING_USD = 1.0e6  # assumed: verification, tape-out and bring-up of new weights on a template


@dataclass(frozen=True)
class Deployment:
    load_tokens_per_s: float = 1_000_000.0  # aggregate tokens/s to serve, averaged over the deployment
    months: float = 36.0
    updates_per_year: float = 1.0
    utilisation: float = UTILISATION
    pue: float = PUE

    def __post_init__(self):
        checks = {"load_tokens_per_s": ("load", self.load_tokens_per_s > 0, "a number of tokens/s > 0"),
                  "months": ("months", self.months > 0, "a number of months > 0"),
                  "updates_per_year": ("updates_per_year", self.updates_per_year >= 0, "a number >= 0"),
                  "utilisation": ("utilisation", 0 < self.utilisation <= 1, "a fraction in (0, 1]"),
                  "pue": ("pue", self.pue >= 1, "a number >= 1")}
        for name, (field, ok, expected) in checks.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok:
                raise BadConfig(f"expected {expected}, got {value!r}", field=field)

    @property
    def updates(self) -> float:
        return self.updates_per_year * self.months / 12


@dataclass(frozen=True)
class Fleet:
    """Either side's cost as a line in months: `start_usd` + `usd_per_month` · m."""
    start_usd: float
    usd_per_month: float

    def cost_usd(self, months: float) -> float:
        return self.start_usd + self.usd_per_month * months


@dataclass
class Economics:
    estimate: Estimate
    gpu_serving: GpuServing
    deployment: Deployment
    instances: int              # copies of the model (each `estimate.partition.chips` chips)
    replicas: int               # GPU replicas (each `gpu_serving.gpus_per_replica` GPUs)
    design_usd: float
    mask_set_usd: float
    weight_masks: int
    respin_usd: float           # one model update's NRE: its weight masks and engineering
    hardware_per_generation_usd: float
    chip_power_w: float
    gpu_power_w: float
    chip_fleet: Fleet
    gpu_fleet: Fleet

    @property
    def chips(self) -> int:
        return self.instances * self.estimate.partition.chips

    @property
    def gpus(self) -> int:
        return self.replicas * self.gpu_serving.gpus_per_replica

    @property
    def nre_usd(self) -> float:
        return self.design_usd + self.mask_set_usd + self.deployment.updates * self.respin_usd

    @property
    def tokens(self) -> float:
        return self.deployment.load_tokens_per_s * self.deployment.months * HOURS_PER_MONTH * 3600

    @property
    def chip_cost_usd(self) -> float:
        return self.chip_fleet.cost_usd(self.deployment.months)

    @property
    def gpu_cost_usd(self) -> float:
        return self.gpu_fleet.cost_usd(self.deployment.months)

    @property
    def break_even_months(self) -> float | None:
        saving_per_month = self.gpu_fleet.usd_per_month - self.chip_fleet.usd_per_month
        if saving_per_month <= 0:
            return None
        return (self.chip_fleet.start_usd - self.gpu_fleet.start_usd) / saving_per_month

    def to_json(self) -> dict:
        d, e = self.deployment, self.estimate
        chip_per_mtok = self.chip_cost_usd / self.tokens * 1e6
        gpu_per_mtok = self.gpu_cost_usd / self.tokens * 1e6
        return {
            "chip": e.chip.name, "node": e.chip.node, "weight_style": e.chip.weight_style,
            "gpu": self.gpu_serving.gpu.name, "context": e.context,
            "load_tokens_per_s": d.load_tokens_per_s, "months": d.months, "updates_per_year": d.updates_per_year,
            "utilisation": d.utilisation, "pue": d.pue, "electricity_usd_per_kwh": e.chip.electricity_usd_per_kwh,
            "nre_usd": self.nre_usd, "design_usd": self.design_usd, "mask_set_usd": self.mask_set_usd,
            "weight_masks": self.weight_masks, "respin_usd": self.respin_usd, "model_updates": d.updates,
            "chips": self.chips, "boards": self.chips, "chips_per_model": e.partition.chips,
            "chip_tokens_per_s_per_user": e.tokens_per_s, "chip_tokens_per_s_per_model": e.aggregate_tokens_per_s,
            "die_cost_usd": e.die_cost_usd, "dies_per_wafer": e.dies_per_wafer, "yield": e.yield_fraction,
            "hardware_per_generation_usd": self.hardware_per_generation_usd,
            "chip_power_w": self.chip_power_w, "chip_cost_usd": self.chip_cost_usd,
            "gpus": self.gpus, **self.gpu_serving.to_json(),
            "gpu_price_usd": self.gpu_serving.gpu.price_usd, "gpu_power_w": self.gpu_power_w,
            "gpu_cost_usd": self.gpu_cost_usd,
            "chip_cost_per_mtok_usd": chip_per_mtok, "gpu_cost_per_mtok_usd": gpu_per_mtok,
            "cost_ratio": gpu_per_mtok / chip_per_mtok,
            "break_even_months": self.break_even_months,
        }


def energy_usd_per_month(power_w: float, deployment: Deployment, usd_per_kwh: float) -> float:
    return power_w * deployment.pue / 1000 * HOURS_PER_MONTH * usd_per_kwh


def economics(estimate: Estimate, gpu_: Gpu, deployment: Deployment) -> Economics:
    """The chip fleet that `estimate` describes and a fleet of `gpu_` serving the same load."""
    chip, node, load = estimate.chip, estimate.chip.process, deployment.load_tokens_per_s
    price = chip.electricity_usd_per_kwh

    # chips: copies of the model, each serving up to its KV-bound aggregate rate at the utilisation
    per_model = estimate.aggregate_tokens_per_s
    instances = math.ceil(load / (per_model * deployment.utilisation))
    dies = estimate.partition.chips
    hardware = instances * (estimate.die_cost_usd + chip.board_cost_usd * dies)
    rate = load / instances                  # tokens/s each copy serves on average
    dynamic_j = sum(estimate.token_energy_j.values())
    leakage_w = estimate.power_breakdown_w["leakage"]
    chip_power_w = instances * ((leakage_w + dynamic_j * rate) / chip.vrm_efficiency + chip.card_overhead_w * dies)

    weight_masks = weight_mask_layers(chip)
    respin = weight_masks_usd(chip) * dies + RESPIN_ENGINEERING_USD
    # the dies of a multi-chip model share the template's masks and differ in their weight masks (all of
    # them where the weights are the logic), as HNLPU's dies share 60 of their 70 masks
    mask_set = node.mask_set_usd + (dies - 1) * weight_masks_usd(chip)
    per_update = deployment.updates_per_year / 12
    chip_fleet = Fleet(start_usd=node.design_usd + mask_set + hardware,
                       usd_per_month=per_update * (respin + hardware)
                       + energy_usd_per_month(chip_power_w, deployment, price))

    # GPUs: replicas serving up to the roofline's aggregate rate at the same utilisation
    serving = serve(estimate.spec, gpu_, estimate.context)
    replicas = math.ceil(load / (serving.aggregate_tokens_per_s * deployment.utilisation))
    gpus = replicas * serving.gpus_per_replica
    busy = load / (replicas * serving.aggregate_tokens_per_s)
    gpu_power_w = gpus * gpu_.power_w * (GPU_IDLE_POWER_FRACTION + (1 - GPU_IDLE_POWER_FRACTION) * busy)
    gpu_fleet = Fleet(start_usd=0.0, usd_per_month=gpus * gpu_.price_usd / GPU_LIFE_MONTHS
                      + energy_usd_per_month(gpu_power_w, deployment, price))

    return Economics(estimate=estimate, gpu_serving=serving, deployment=deployment, instances=instances,
                     replicas=replicas, design_usd=node.design_usd, mask_set_usd=mask_set,
                     weight_masks=weight_masks, respin_usd=respin, hardware_per_generation_usd=hardware,
                     chip_power_w=chip_power_w, gpu_power_w=gpu_power_w, chip_fleet=chip_fleet, gpu_fleet=gpu_fleet)
