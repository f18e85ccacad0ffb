"""Chip estimate: process nodes, chip configurations, the analytic model and the pipeline simulator.

    from hardwire.chip import estimate, load_chip, model_preset
    estimate(model_preset("llama-3.1-8b"), load_chip("hc1")).to_json()
"""
from hardwire.chip.arch import ChipConfig, load_chip
from hardwire.chip.estimate import Estimate, estimate
from hardwire.chip.pipeline import SimResult, simulate
from hardwire.chip.presets import MODEL_PRESETS, model_preset
from hardwire.chip.process import NODES, ProcessNode, process_node

__all__ = ["ChipConfig", "load_chip", "Estimate", "estimate", "SimResult", "simulate", "MODEL_PRESETS",
           "model_preset", "NODES", "ProcessNode", "process_node"]
