"""Mixture-of-Experts feed-forward: router, stacked experts, dropless sorted dispatch, balancing.

Shapes: T tokens (batch and sequence flattened), d = d_model, E routed experts, k = top_k,
h = expert_width.

    router      x [T, d] -> scores [T, E], selected experts [T, k], gates [T, k]
    dispatch    the T*k (token, expert) pairs sorted by expert; every token is kept (dropless)
    experts     stacked weights [E, d, h] and [E, h, d], applied to each expert's contiguous rows
    combine     gate-weighted expert outputs summed back into [T, d]; shared experts added

Balancing (docs/science.md §4): the Switch auxiliary loss E * sum_i f_i P_i, the router z-loss
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


def initialise(module: nn.Module) -> None:
    """`module.reset_parameters()` at construction, without advancing the global random stream:
    a module built alone is initialised, and a whole model, whose own reset draws every weight
    afresh, gets the same initial values from a seed as before modules initialised themselves."""
    with torch.random.fork_rng(devices=[]):
        module.reset_parameters()


def activation(mlp: str, x: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """GELU(x), or SwiGLU: SiLU(x) * up. `x` is the first (gate) projection."""
    return F.gelu(x) if mlp == "gelu" else F.silu(x) * up


@dataclass
class Routing:
    """scores [T, E] (softmax or sigmoid), logits [T, E], experts [T, k] int64, gates [T, k],
    counts [E] int64 (assignments per expert)."""

    scores: torch.Tensor
    logits: torch.Tensor
    experts: torch.Tensor
    gates: torch.Tensor
    counts: torch.Tensor


HASH_MULTIPLIER = 2654435761  # Knuth's multiplicative hash: consecutive token ids spread evenly over experts


def hash_experts(tokens: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Hash Layers' routing (Roller et al. 2021): token id -> one fixed expert, [T] -> [T, 1]."""
    return ((tokens.reshape(-1, 1) * HASH_MULTIPLIER) % (2**32)) % n_experts


class Router(nn.Module):
    """Token-choice top-k router with an optional auxiliary-loss-free selection bias, or (with
    `router = "hash"`) a fixed hash of the token id with gate 1 and no parameters at all: a
    control whose routing cannot change during training.

    Keeps running routing statistics for the bias update and for diagnostics: assignments per
    expert always, and the summed score entropy over the tokens seen in eval mode only (it costs
    a few passes over [T, E] per step); `reset_stats` clears them.
    """

    def __init__(self, d_model: int, cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        self.gate = nn.Linear(d_model, cfg.n_experts, bias=False) if cfg.router == "learned" else None
        self.register_buffer("expert_bias", torch.zeros(cfg.n_experts))  # selection only
        self.register_buffer("load", torch.zeros(cfg.n_experts), persistent=False)
        self.register_buffer("entropy_sum", torch.zeros(()), persistent=False)
        self.register_buffer("tokens_seen", torch.zeros(()), persistent=False)
        initialise(self)

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """Router weights N(0, std); the selection bias and the statistics back to zero."""
        if self.gate is not None:
            nn.init.normal_(self.gate.weight, std=std)
        self.expert_bias.zero_()
        self.reset_stats()

    def forward(self, x: torch.Tensor, tokens: torch.Tensor | None = None) -> Routing:
        """x [T, d] -> Routing; `tokens` [T] (the input token ids) are needed by hash routing only."""
        if self.gate is None:
            if tokens is None:
                raise ValueError("hash routing needs the token ids")  # a bug in the caller, never the user's
            experts = hash_experts(tokens, self.cfg.n_experts)  # [T, 1]
            scores = torch.zeros(x.shape[0], self.cfg.n_experts, device=x.device).scatter_(1, experts, 1.0)
            logits, gates = scores, scores.gather(1, experts)
        else:
            logits = self.gate(x).float()  # [T, E]
            scores = logits.softmax(-1) if self.cfg.score == "softmax" else logits.sigmoid()
            experts = (scores + self.expert_bias).topk(self.cfg.top_k, dim=-1).indices  # [T, k]
            gates = scores.gather(1, experts)
        if self.cfg.renormalize:
            gates = gates / gates.sum(-1, keepdim=True)
        counts = torch.bincount(experts.flatten(), minlength=self.cfg.n_experts)
        with torch.no_grad():
            self.load += counts
            if not self.training:  # the entropy is a diagnostic (evaluation/routing.py); training needs only loads
                p = scores / scores.sum(-1, keepdim=True)
                self.entropy_sum += -(p * p.clamp_min(1e-12).log()).sum()
                self.tokens_seen += x.shape[0]
        return Routing(scores=scores, logits=logits, experts=experts, gates=gates.to(x.dtype), counts=counts)

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
        f = routing.counts.float() / routing.experts.numel()
        P = (routing.scores / routing.scores.sum(-1, keepdim=True)).mean(0)
        loss = loss + cfg.aux_loss_weight * E * (f * P).sum()
    if cfg.z_loss_weight:
        loss = loss + cfg.z_loss_weight * routing.logits.logsumexp(-1).square().mean()
    return loss


DISPATCH_PATHS = ("grouped_mm", "padded", "loop")


GROUPED_MM_CUDA_CAPABILITY = (8, 0)  # PyTorch documents F.grouped_mm on CUDA for bf16 on sm80 and later


def choose_dispatch(d_model: int, width: int, dtype: torch.dtype, device: torch.device) -> str:
    """The expert path for this device and compute dtype: grouped GEMM where PyTorch supports it
    and the shapes allow it, else the padded batched GEMM.

    - grouped_mm needs every row of its operands on a 16-byte boundary: d_model and the expert
      width in bytes must be multiples of 16.
    - On CPU it takes fp32 and bf16. Measured with benchmarks/moe_layer.py --paths on a 2-core
      CPU (forward + backward, 1-2 threads): at d_model 256 the padded path was at most 8% faster,
      and only below ~32 rows per expert; at d_model 40 it was 13-48% slower at every load.
    - On CUDA it is documented for bf16 on compute capability 8.0 and later only: fp32, fp16 and
      older GPUs take the padded path (cuBLAS batched GEMMs), never an error.
    - Other devices take the padded path.
    The loop is the plain reference. The choice never depends on timings, so a run's numbers do
    not depend on machine load.
    """
    element_size = torch.empty((), dtype=dtype).element_size()
    aligned = (d_model * element_size) % 16 == 0 and (width * element_size) % 16 == 0
    if not (hasattr(F, "grouped_mm") and aligned):
        return "padded"
    if device.type == "cpu":
        return "grouped_mm" if dtype in (torch.float32, torch.bfloat16) else "padded"
    if device.type == "cuda":
        capable = torch.cuda.get_device_capability(device) >= GROUPED_MM_CUDA_CAPABILITY
        return "grouped_mm" if capable and dtype == torch.bfloat16 else "padded"
    return "padded"


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matrix products run in: autocast's where it is on (grouped_mm is not autocast
    by PyTorch, so the experts cast their operands themselves), else the input's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


class Experts(nn.Module):
    """E stacked expert MLPs: w_in [E, d, 2h] for SwiGLU (gate and up side by side, as
    transformers' gate_up_proj, so one GEMM computes both) or [E, d, h] for GELU; w_out [E, h, d].

    `forward(x_sorted [N, d], counts [E], path)` applies expert e to its contiguous block of rows.
    Paths (identical results, tested against a naive reference):
      grouped_mm  F.grouped_mm over the ragged blocks
      padded      scatter rows into [E, capacity, d] buffers (capacity = the largest block), two
                  torch.bmm calls, gather back; padding rows are zero and get zero gradient
      loop        one matmul per expert
    """

    def __init__(self, d_model: int, width: int, n_experts: int, mlp: str):
        super().__init__()
        self.mlp = mlp
        self.w_in = nn.Parameter(torch.empty(n_experts, d_model, (2 if mlp == "swiglu" else 1) * width))
        self.w_out = nn.Parameter(torch.empty(n_experts, width, d_model))
        initialise(self)

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02, out_std: float = 0.02) -> None:
        """Input projections N(0, std), output projections N(0, out_std) (the model passes GPT-2's
        residual scaling as out_std)."""
        nn.init.normal_(self.w_in, std=std)
        nn.init.normal_(self.w_out, std=out_std)

    def act(self, h: torch.Tensor) -> torch.Tensor:
        """The hidden activation from the input projection: SiLU(gate) * up, or GELU."""
        return activation(self.mlp, *h.chunk(2, dim=-1)) if self.mlp == "swiglu" else activation(self.mlp, h)

    def forward(self, x: torch.Tensor, counts: torch.Tensor, path: str) -> torch.Tensor:
        if path == "grouped_mm":
            offsets = counts.cumsum(0).to(torch.int32)
            dtype = compute_dtype(x)
            x, w_in, w_out = x.to(dtype), self.w_in.to(dtype), self.w_out.to(dtype)
            return F.grouped_mm(self.act(F.grouped_mm(x, w_in, offs=offsets)), w_out, offs=offsets)
        if path == "padded":
            n_experts, rows = counts.numel(), x.shape[0]
            capacity = int(counts.max())
            starts = counts.cumsum(0) - counts
            expert = torch.repeat_interleave(torch.arange(n_experts, device=x.device), counts, output_size=rows)
            slot = expert * capacity + torch.arange(rows, device=x.device) - starts[expert]
            buffer = x.new_zeros(n_experts * capacity, x.shape[1]).index_copy(0, slot, x)
            buffer = buffer.view(n_experts, capacity, -1)
            out = torch.bmm(self.act(torch.bmm(buffer, self.w_in)), self.w_out)
            return out.view(n_experts * capacity, -1).index_select(0, slot)
        # unbind once: indexing w[e] per expert would give each expert a full-size gradient (O(E^2))
        w_in, w_out = self.w_in.unbind(0), self.w_out.unbind(0)
        outputs = [self.act(rows @ w_in[e]) @ w_out[e] for e, rows in enumerate(x.split(counts.tolist()))]
        return torch.cat(outputs)


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


class MoE(nn.Module):
    """Routed experts plus optional shared experts. forward: x [B, S, d] -> (y [B, S, d], aux loss)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.moe
        self.router = Router(cfg.d_model, cfg.moe)
        self.experts = Experts(cfg.d_model, cfg.moe.expert_width, cfg.moe.n_experts, cfg.mlp)
        shared = cfg.moe.n_shared_experts * cfg.moe.expert_width
        self.shared = MLP(cfg.d_model, shared, cfg.mlp) if shared else None
        self.dispatch: str | None = None  # an expert path from DISPATCH_PATHS; None: choose_dispatch

    def reset_parameters(self, std: float = 0.02, out_std: float = 0.02) -> None:
        """Router, routed experts and shared experts, in that order."""
        self.router.reset_parameters(std)
        self.experts.reset_parameters(std, out_std)
        if self.shared is not None:
            self.shared.reset_parameters(std, out_std)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, S, d] (and the input token ids [B, S], for hash routing) -> (y [B, S, d], aux loss)."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # [T, d]
        T, k = flat.shape[0], self.cfg.top_k
        routing = self.router(flat, None if tokens is None else tokens.reshape(-1))
        pairs = routing.experts.flatten()  # [T*k]; pair p is token p // k's (p % k)-th choice
        order = pairs.argsort(stable=True)  # pairs grouped by expert
        path = self.dispatch or choose_dispatch(shape[-1], self.cfg.expert_width, compute_dtype(x), x.device)
        # index_select, not fancy indexing: its backward is an index_add, not a slow index_put
        y_sorted = self.experts(flat.index_select(0, order // k), routing.counts, path)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        y_pairs = y_sorted.index_select(0, inverse).view(T, k, -1)  # back in token order
        out = torch.bmm(routing.gates.unsqueeze(1), y_pairs).squeeze(1)  # gate-weighted sum over k
        if self.shared is not None:
            out = out + self.shared(flat)
        return out.reshape(shape), balancing_loss(routing, self.cfg)
