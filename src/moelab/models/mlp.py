"""The dense feed-forward and what every layer shares: its activation and initialisation at
construction (models/moe.py builds experts from the same activation; models/memory.py and
models/transformer.py initialise their modules the same way)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def initialise(module: nn.Module) -> None:
    """`module.reset_parameters()` at construction, without advancing the global random stream:
    a module built alone is initialised, and a whole model, whose own reset draws every weight
    afresh, gets the same initial values from a seed as before modules initialised themselves."""
    with torch.random.fork_rng(devices=[]):
        module.reset_parameters()


def activation(mlp: str, x: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """GELU(x), or SwiGLU: SiLU(x) * up. `x` is the first (gate) projection."""
    return F.gelu(x) if mlp == "gelu" else F.silu(x) * up


class MLP(nn.Module):
    """Dense feed-forward: d -> width -> d, GELU or SwiGLU (gate_proj, up_proj, down_proj)."""

    def __init__(self, d_model: int, width: int, mlp: str):
        super().__init__()
        self.mlp = mlp
        self.gate_proj = nn.Linear(d_model, width, bias=False)
        self.up_proj = nn.Linear(d_model, width, bias=False) if mlp == "swiglu" else None
        self.down_proj = nn.Linear(width, d_model, bias=False)
        initialise(self)

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02, out_std: float = 0.02) -> None:
        for proj in (self.gate_proj, self.up_proj):
            if proj is not None:
                nn.init.normal_(proj.weight, std=std)
        nn.init.normal_(self.down_proj.weight, std=out_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.up_proj(x) if self.up_proj is not None else None
        return self.down_proj(activation(self.mlp, self.gate_proj(x), up))
