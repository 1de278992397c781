"""A design candidate written out: its architecture as TOML, or scaled down to a lab run config
that `moelab train` runs.

The lab version keeps what determines the MoE's structure (experts E, top-k, shared experts, and
the expert and dense widths relative to the hidden size) and shrinks everything else to a model a
CPU trains in minutes: LAB_D_MODEL wide, LAB_LAYERS deep, SwiGLU, with OLMoE's balancing weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from moelab.config import MoEConfig, ModelConfig, RunConfig, save_config, resolve
from moelab.design.search import Candidate
from moelab.io import atomic_write_text, toml_dumps
from moelab.models.params import Architecture

LAB_D_MODEL = 48
LAB_LAYERS = 2
LAB_HEADS = 4
WIDTH_MULTIPLE = 8  # lab widths are rounded to multiples of 8 (and at least 8)
AUX_LOSS_WEIGHT = 0.01  # OLMoE's Switch-loss weight
Z_LOSS_WEIGHT = 0.001  # OLMoE's router z-loss weight


def _scaled_width(width: int, hidden: int) -> int:
    """`width` relative to `hidden`, at the lab's hidden size."""
    return max(WIDTH_MULTIPLE, round(LAB_D_MODEL * width / hidden / WIDTH_MULTIPLE) * WIDTH_MULTIPLE)


def lab_config(a: Architecture) -> RunConfig:
    """A lab run config with the same E, k, shared experts and width ratios as `a`."""
    return resolve(RunConfig(
        name=f"lab-{a.name}",
        model=ModelConfig(d_model=LAB_D_MODEL, n_layers=LAB_LAYERS, n_heads=LAB_HEADS,
                          d_ff=_scaled_width(a.dense_ffn, a.hidden), mlp="swiglu",
                          moe=MoEConfig(n_experts=a.n_experts, top_k=a.top_k,
                                        expert_width=_scaled_width(a.expert_ffn, a.hidden),
                                        n_shared_experts=a.n_shared, renormalize=a.top_k > 1,
                                        aux_loss_weight=AUX_LOSS_WEIGHT, z_loss_weight=Z_LOSS_WEIGHT))))


def write_design(candidate: Candidate, path: str | Path, scale_to_lab: bool) -> None:
    """The candidate as a TOML file: its architecture, or (`scale_to_lab`) a lab run config."""
    if scale_to_lab:
        save_config(lab_config(candidate.arch), path)
    else:
        atomic_write_text(path, toml_dumps({"architecture": dataclasses.asdict(candidate.arch)}))
