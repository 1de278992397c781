"""Mixture-of-Experts feed-forward: router, stacked experts, dropless sorted dispatch, balancing.

Shapes: T tokens (batch and sequence flattened), d = d_model, E routed experts, k = top_k,
h = expert_width.

    router      x [T, d] -> scores [T, E], selected experts [T, k], gates [T, k]
    dispatch    the T*k (token, expert) pairs sorted by expert; every token is kept (dropless)
    experts     stacked weights [E, d, h] and [E, h, d], applied to each expert's contiguous rows
    combine     gate-weighted expert outputs summed back into [T, d]; shared experts added

Balancing (SCIENCE.md §4): the Switch auxiliary loss E * sum_i f_i P_i, the router z-loss
mean(logsumexp(logits)^2), and DeepSeek-V3's auxiliary-loss-free bias, which only changes which
experts are selected (gates use the unbiased scores) and is nudged after every optimizer step by
b_i += gamma * sign(mean_load - load_i), outside autograd.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from moelab.config import ModelConfig, MoEConfig


def activation(mlp: str, x: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """GELU(x), or SwiGLU: SiLU(x) * up. `x` is the first (gate) projection."""
    return F.gelu(x) if mlp == "gelu" else F.silu(x) * up


@dataclass
class Routing:
    """scores [T, E] (softmax or sigmoid), logits [T, E], experts [T, k] int64, gates [T, k]."""

    scores: torch.Tensor
    logits: torch.Tensor
    experts: torch.Tensor
    gates: torch.Tensor


class Router(nn.Module):
    """Token-choice top-k router with an optional auxiliary-loss-free selection bias.

    Keeps running routing statistics (assignments per expert, summed score entropy, tokens seen)
    for the bias update and for diagnostics; `reset_stats` clears them.
    """

    def __init__(self, d_model: int, cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        self.gate = nn.Linear(d_model, cfg.n_experts, bias=False)
        self.register_buffer("expert_bias", torch.zeros(cfg.n_experts))  # selection only
        self.register_buffer("load", torch.zeros(cfg.n_experts), persistent=False)
        self.register_buffer("entropy_sum", torch.zeros(()), persistent=False)
        self.register_buffer("tokens_seen", torch.zeros(()), persistent=False)

    def forward(self, x: torch.Tensor) -> Routing:
        logits = self.gate(x).float()  # [T, E]
        scores = logits.softmax(-1) if self.cfg.score == "softmax" else logits.sigmoid()
        experts = (scores + self.expert_bias).topk(self.cfg.top_k, dim=-1).indices  # [T, k]
        gates = scores.gather(1, experts)
        if self.cfg.renormalize:
            gates = gates / gates.sum(-1, keepdim=True)
        with torch.no_grad():
            self.load += torch.bincount(experts.flatten(), minlength=self.cfg.n_experts)
            p = scores / scores.sum(-1, keepdim=True)
            self.entropy_sum += -(p * p.clamp_min(1e-12).log()).sum()
            self.tokens_seen += x.shape[0]
        return Routing(scores=scores, logits=logits, experts=experts, gates=gates.to(x.dtype))

    @torch.no_grad()
    def update_bias(self) -> None:
        """DeepSeek-V3's rule: raise the bias of under-loaded experts, lower over-loaded ones."""
        self.expert_bias += self.cfg.bias_update_rate * torch.sign(self.load.mean() - self.load)

    def reset_stats(self) -> None:
        self.load.zero_()
        self.entropy_sum.zero_()
        self.tokens_seen.zero_()

    def diagnostics(self) -> dict:
        """Load fraction per expert, max violation (max/mean load - 1), dead experts, entropy."""
        load = self.load.double()
        total = load.sum().item()
        fraction = (load / total).tolist() if total else [0.0] * len(load)
        mean = load.mean().item()
        return {
            "load": fraction,
            "max_violation": (load.max().item() / mean - 1.0) if mean else 0.0,
            "dead_experts": int((load == 0).sum().item()),
            "router_entropy": (self.entropy_sum / self.tokens_seen).item() if self.tokens_seen else 0.0,
        }


def balancing_loss(routing: Routing, cfg: MoEConfig) -> torch.Tensor:
    """Switch loss E * sum_i f_i P_i (f: share of assignments, P: mean normalised score) and z-loss."""
    loss = routing.scores.new_zeros(())
    if cfg.aux_loss_weight:
        E = cfg.n_experts
        f = torch.bincount(routing.experts.flatten(), minlength=E).float() / routing.experts.numel()
        P = (routing.scores / routing.scores.sum(-1, keepdim=True)).mean(0)
        loss = loss + cfg.aux_loss_weight * E * (f * P).sum()
    if cfg.z_loss_weight:
        loss = loss + cfg.z_loss_weight * routing.logits.logsumexp(-1).square().mean()
    return loss


class Experts(nn.Module):
    """E stacked expert MLPs: w_in [E, d, h] (and w_up [E, d, h] for SwiGLU), w_out [E, h, d].

    `forward(x_sorted [N, d], counts [E])` applies expert e to its contiguous block of rows.
    Uses grouped GEMM (`F.grouped_mm`) where PyTorch has it, else a loop over experts.
    """

    def __init__(self, d_model: int, width: int, n_experts: int, mlp: str):
        super().__init__()
        self.mlp = mlp
        self.w_in = nn.Parameter(torch.empty(n_experts, d_model, width))
        self.w_up = nn.Parameter(torch.empty(n_experts, d_model, width)) if mlp == "swiglu" else None
        self.w_out = nn.Parameter(torch.empty(n_experts, width, d_model))
        self.use_grouped_mm = hasattr(F, "grouped_mm")

    def forward(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        if self.use_grouped_mm:
            offsets = counts.cumsum(0).to(torch.int32)
            up = F.grouped_mm(x, self.w_up, offs=offsets) if self.w_up is not None else None
            hidden = activation(self.mlp, F.grouped_mm(x, self.w_in, offs=offsets), up)
            return F.grouped_mm(hidden, self.w_out, offs=offsets)
        outputs = []
        for e, rows in enumerate(x.split(counts.tolist())):
            up = rows @ self.w_up[e] if self.w_up is not None else None
            outputs.append(activation(self.mlp, rows @ self.w_in[e], up) @ self.w_out[e])
        return torch.cat(outputs)


class MLP(nn.Module):
    """Dense feed-forward: d -> width -> d, GELU or SwiGLU (gate_proj, up_proj, down_proj)."""

    def __init__(self, d_model: int, width: int, mlp: str):
        super().__init__()
        self.mlp = mlp
        self.gate_proj = nn.Linear(d_model, width, bias=False)
        self.up_proj = nn.Linear(d_model, width, bias=False) if mlp == "swiglu" else None
        self.down_proj = nn.Linear(width, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.up_proj(x) if self.up_proj is not None else None
        return self.down_proj(activation(self.mlp, self.gate_proj(x), up))


class MoE(nn.Module):
    """Routed experts plus optional shared experts. forward: x [B, S, d] -> (y [B, S, d], aux loss)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.moe
        self.router = Router(cfg.d_model, cfg.moe)
        self.experts = Experts(cfg.d_model, cfg.moe.expert_width, cfg.moe.n_experts, cfg.mlp)
        shared = cfg.moe.n_shared_experts * cfg.moe.expert_width
        self.shared = MLP(cfg.d_model, shared, cfg.mlp) if shared else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # [T, d]
        routing = self.router(flat)
        k = self.cfg.top_k
        pairs = routing.experts.flatten()  # [T*k], pair p belongs to token p // k
        order = pairs.argsort(stable=True)
        token = order // k
        counts = torch.bincount(pairs, minlength=self.cfg.n_experts)
        y = self.experts(flat[token], counts) * routing.gates.flatten()[order, None]
        out = torch.zeros_like(flat).index_add_(0, token, y)
        if self.shared is not None:
            out = out + self.shared(flat)
        return out.reshape(shape), balancing_loss(routing, self.cfg)
