"""Process-node library: the silicon constants every chip estimate rests on.

Each number carries a source key; `docs/chip-model.md` lists the sources and says, for every
constant, whether it is a published figure or our assumption (and why). Nothing here is fitted to
the Taalas HC1 figures the model is validated against.

Energies are Horowitz's 45 nm figures (ISSCC 2014) scaled to a node by `energy_scale`, which is
switched capacitance times voltage squared: E ∝ CPP · Vdd² (contacted poly pitch stands in for
gate and local-wire capacitance).
"""
from __future__ import annotations

from dataclasses import dataclass

from hardwire.errors import BadConfig

# -- Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm at 0.9 V [horowitz14] -------------
HOROWITZ_CPP_NM = 160.0           # 45 nm contacted poly pitch (Intel 45 nm, IEDM 2007) [intel45]
HOROWITZ_VDD = 0.9
ADD_PJ_PER_BIT_45NM = 0.1 / 32    # 32-bit integer add 0.1 pJ
MULT_PJ_PER_PARTIAL_PRODUCT_45NM = 0.2 / 64   # 8x8 integer multiply 0.2 pJ = 64 partial-product bits
SRAM_READ_PJ_PER_BIT_8KB_45NM = 10.0 / 64     # 64-bit read from an 8 KB SRAM: 10 pJ
SRAM_READ_PJ_PER_BIT_32KB_45NM = 20.0 / 64    # 64-bit read from a 32 KB SRAM: 20 pJ

# -- chip-level achieved density [a100] [h100]: shipped big dies reach ~70% of the quoted peak ---
# A100: 54.2e9 transistors / 826 mm² = 65.6 MTr/mm² on N7 (peak 91.2) -> 0.72
# H100: 80e9 / 814 mm² = 98.3 MTr/mm² on N4 (N5 family, peak ~137)    -> 0.72
ACHIEVED_DENSITY_FRACTION = 0.70

# -- SRAM macro efficiency [tsmc-n3e]: 0.021 µm² bitcell at 31.8 Mb/mm² macro -> 0.67 of macro is cells
SRAM_ARRAY_EFFICIENCY = 0.021 * 31.8

# An EUV photomask costs about as much as 6 single-exposure 193i masks (the weighting HNLPU prices its
# 5 nm set with, after Scheid, "Economics of mask", 2023) [hnlpu]
EUV_MASK_COST_FACTOR = 6.0

RETICLE_MM2 = 26.0 * 33.0         # 858 mm², the 193i scanner field [reticle]
WAFER_DIAMETER_MM = 300.0


@dataclass(frozen=True)
class ProcessNode:
    name: str
    logic_mtr_per_mm2: float      # vendor/analyst peak logic density, million transistors per mm²
    sram_bitcell_um2: float       # high-density 6T bitcell
    cpp_nm: float                 # contacted poly pitch (for energy scaling)
    vdd: float                    # nominal core voltage (for energy scaling)
    leakage_nw_per_transistor: float   # average static power per transistor at operating temperature
    wafer_cost_usd: float         # 300 mm wafer, foundry price to a customer
    defect_density_per_cm2: float
    sources: dict[str, str]       # constant -> source key in docs/chip-model.md
    mask_layers: int = 0          # photomasks in a full set (docs/chip-model.md §10)
    euv_mask_layers: int = 0      # of which exposed by EUV (0 where not modelled: every mask priced alike)
    mask_set_usd: float = 0.0     # a full mask set's price
    design_usd: float = 0.0       # engineering, IP and tools to the first tape-out of a chip template
    achieved_density_fraction: float = ACHIEVED_DENSITY_FRACTION

    # -- derived densities ------------------------------------------------------------------------
    @property
    def achieved_logic_mtr_per_mm2(self) -> float:
        """Transistors per mm² a placed-and-routed design reaches (peak × achieved fraction)."""
        return self.logic_mtr_per_mm2 * self.achieved_density_fraction

    @property
    def sram_mbit_per_mm2(self) -> float:
        """SRAM macro density including periphery (sense amps, decoders, redundancy)."""
        return SRAM_ARRAY_EFFICIENCY / self.sram_bitcell_um2

    @property
    def duv_mask_usd(self) -> float:
        """One 193i photomask: the set's price over its layers, an EUV mask counting EUV_MASK_COST_FACTOR."""
        duv = self.mask_layers - self.euv_mask_layers
        return self.mask_set_usd / (duv + EUV_MASK_COST_FACTOR * self.euv_mask_layers)

    @property
    def euv_mask_usd(self) -> float:
        return EUV_MASK_COST_FACTOR * self.duv_mask_usd

    @property
    def energy_scale(self) -> float:
        """Dynamic energy per operation relative to Horowitz's 45 nm figures: CPP·Vdd² ratio."""
        return (self.cpp_nm / HOROWITZ_CPP_NM) * (self.vdd / HOROWITZ_VDD) ** 2

    def logic_area_mm2(self, transistors: float) -> float:
        return transistors / (self.achieved_logic_mtr_per_mm2 * 1e6)

    def sram_area_mm2(self, bits: float) -> float:
        return bits / (self.sram_mbit_per_mm2 * 1e6)


NODES: dict[str, ProcessNode] = {
    "N16": ProcessNode(
        name="N16", logic_mtr_per_mm2=28.88, sram_bitcell_um2=0.074, cpp_nm=90.0, vdd=0.80,
        leakage_nw_per_transistor=1.0, wafer_cost_usd=3984.0, defect_density_per_cm2=0.10,
        sources={"logic": "wikichip-16", "sram": "wikichip-16", "cpp": "wikichip-16", "vdd": "assumed-vdd",
                 "leakage": "assumed-leakage", "wafer": "cset20",
                 "masks": "assumed-masks", "design": "assumed-design", "defects": "assumed-d0"},
        mask_layers=60, mask_set_usd=5.0e6, design_usd=20.0e6),
    "N7": ProcessNode(
        name="N7", logic_mtr_per_mm2=91.2, sram_bitcell_um2=0.027, cpp_nm=57.0, vdd=0.75,
        leakage_nw_per_transistor=1.0, wafer_cost_usd=9346.0, defect_density_per_cm2=0.10,
        sources={"logic": "wikichip-7", "sram": "wikichip-7", "cpp": "wikichip-7", "vdd": "assumed-vdd",
                 "leakage": "assumed-leakage", "wafer": "cset20",
                 "masks": "maskcost", "design": "assumed-design", "defects": "tsmc-d0"},
        mask_layers=80, mask_set_usd=10.0e6, design_usd=30.0e6),
    "N6": ProcessNode(
        name="N6", logic_mtr_per_mm2=91.2 * 1.18, sram_bitcell_um2=0.027, cpp_nm=57.0, vdd=0.75,
        leakage_nw_per_transistor=1.0, wafer_cost_usd=9346.0, defect_density_per_cm2=0.10,
        sources={"logic": "tsmc-n6", "sram": "tsmc-n6", "cpp": "tsmc-n6", "vdd": "assumed-vdd",
                 "leakage": "assumed-leakage", "wafer": "assumed-n6-wafer",
                 "masks": "assumed-masks", "design": "assumed-design", "defects": "tsmc-d0"},
        mask_layers=75, mask_set_usd=10.0e6, design_usd=30.0e6),
    "N5": ProcessNode(
        name="N5", logic_mtr_per_mm2=136.0, sram_bitcell_um2=0.021, cpp_nm=51.0, vdd=0.75,
        leakage_nw_per_transistor=1.0, wafer_cost_usd=16988.0, defect_density_per_cm2=0.10,
        sources={"logic": "facts-n5", "sram": "facts-n5", "cpp": "wikichip-5", "vdd": "assumed-vdd",
                 "leakage": "assumed-leakage", "wafer": "cset20",
                 "masks": "hnlpu", "design": "assumed-design", "defects": "tsmc-d0"},
        mask_layers=70, euv_mask_layers=12, mask_set_usd=30.0e6, design_usd=40.0e6),
    "N3": ProcessNode(
        name="N3", logic_mtr_per_mm2=136.0 * 1.6, sram_bitcell_um2=0.021, cpp_nm=48.0, vdd=0.75,
        leakage_nw_per_transistor=1.0, wafer_cost_usd=20000.0, defect_density_per_cm2=0.15,
        sources={"logic": "tsmc-n3e", "sram": "tsmc-n3e", "cpp": "tsmc-n3e", "vdd": "assumed-vdd",
                 "leakage": "assumed-leakage", "wafer": "assumed-n3-wafer",
                 "masks": "assumed-masks", "design": "assumed-design", "defects": "facts-d0"},
        mask_layers=80, mask_set_usd=35.0e6, design_usd=50.0e6),
}


def process_node(name: str) -> ProcessNode:
    key = name.upper()
    if key == "N3E":
        key = "N3"
    if key not in NODES:
        raise BadConfig(f"unknown process node {name!r}; expected one of {', '.join(NODES)}", field="node")
    return NODES[key]


def murphy_yield(area_mm2: float, defects_per_cm2: float) -> float:
    """Murphy's yield model: Y = ((1 - e^{-AD}) / AD)²."""
    import math
    ad = area_mm2 / 100.0 * defects_per_cm2
    if ad <= 0:
        return 1.0
    return ((1.0 - math.exp(-ad)) / ad) ** 2


def dies_per_wafer(area_mm2: float, diameter_mm: float = WAFER_DIAMETER_MM) -> int:
    """Gross dies on a round wafer, with the usual edge-loss term (square dies)."""
    import math
    gross = math.pi * (diameter_mm / 2) ** 2 / area_mm2 - math.pi * diameter_mm / math.sqrt(2 * area_mm2)
    return max(int(gross), 0)
