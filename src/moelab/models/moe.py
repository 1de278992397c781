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

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from moelab.config import ModelConfig, MoEConfig
from moelab.models.mlp import MLP, activation, initialise


@dataclass
class Routing:
    """scores [T, E] (softmax or sigmoid), logits [T, E], experts [T, k] int64, gates [T, k],
    counts [E] int64 (assignments per expert), and the stable router's distillation loss."""

    scores: torch.Tensor
    logits: torch.Tensor
    experts: torch.Tensor
    gates: torch.Tensor
    counts: torch.Tensor
    distill_loss: torch.Tensor | None = None  # the stable router's token router imitating the learned one


HASH_MULTIPLIER = 2654435761  # Knuth's multiplicative hash: consecutive token ids spread evenly over experts


def hash_experts(tokens: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Hash Layers' routing (Roller et al. 2021): token id -> one fixed expert, [T] -> [T, 1]."""
    return ((tokens.reshape(-1, 1) * HASH_MULTIPLIER) % (2**32)) % n_experts


class TokenRouter(nn.Module):
    """Routing from the input token alone: a small embedding of the token id, then expert logits.
    tokens [T] -> logits [T, E]."""

    def __init__(self, vocab_size: int, dim: int, n_experts: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.proj = nn.Linear(dim, n_experts, bias=False)

    def reset_parameters(self, std: float = 0.02) -> None:
        nn.init.normal_(self.embed.weight, std=std)
        nn.init.normal_(self.proj.weight, std=std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(tokens)).float()


class CosineRouter(nn.Module):
    """X-MoE's router (Chi et al. 2022): the hidden state projected to a low dimension and scored by
    cosine similarity with a learned embedding per expert, over a learned temperature.
    x [T, d] -> logits [T, E]."""

    MIN_TEMPERATURE = 0.01

    def __init__(self, d_model: int, dim: int, n_experts: int):
        super().__init__()
        self.proj = nn.Linear(d_model, dim, bias=False)
        self.experts = nn.Parameter(torch.empty(n_experts, dim))
        self.temperature = nn.Parameter(torch.empty(()))

    def reset_parameters(self, std: float = 0.02) -> None:
        nn.init.normal_(self.proj.weight, std=std)
        nn.init.normal_(self.experts, std=std)
        nn.init.constant_(self.temperature, 0.07)  # X-MoE's initial temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cosine = F.normalize(self.proj(x).float(), dim=-1) @ F.normalize(self.experts.float(), dim=-1).T
        return cosine / self.temperature.float().clamp_min(self.MIN_TEMPERATURE)


@torch.no_grad()
def balanced_assignment(logits: torch.Tensor) -> torch.Tensor:
    """BASE layers' balanced top-1 assignment (Lewis et al. 2021), solved greedily: every unassigned
    token proposes to its best expert that still has room, each expert accepts its best-scoring
    proposers up to its capacity ceil(T / E), and rounds repeat until every token is placed.
    logits [T, E] -> experts [T, 1]; loads differ by at most one."""
    T, E = logits.shape
    room = torch.full((E,), -(-T // E), dtype=torch.long, device=logits.device)
    experts = torch.full((T,), -1, dtype=torch.long, device=logits.device)
    while (experts < 0).any():
        waiting = (experts < 0).nonzero().squeeze(1)
        scores = logits[waiting].masked_fill(room[None, :] == 0, -math.inf)
        best = scores.argmax(-1)
        score = scores.gather(1, best[:, None]).squeeze(1)
        order = torch.argsort(best * (score.max() - score.min() + 1) * 2 - score, stable=True)  # by expert, best first
        best, waiting = best[order], waiting[order]
        counts = torch.bincount(best, minlength=E)
        rank = torch.arange(len(best), device=logits.device) - (counts.cumsum(0) - counts)[best]
        accepted = rank < room[best]
        experts[waiting[accepted]] = best[accepted]
        room -= torch.bincount(best[accepted], minlength=E)
    return experts[:, None]


class Router(nn.Module):
    """Chooses each token's experts and their gates. `cfg.router`:

        learned     a linear router on the hidden state (the default; softmax or sigmoid scores)
        hash        a fixed hash of the token id, gate 1, no parameters (Hash Layers): a control
                    whose routing cannot change during training
        hash_gated  the hash's expert, weighted by the learned router's score for it
        token       a learned router that sees only the token id (a small embedding of it)
        cosine      X-MoE's low-dimensional cosine router
        stable      StableMoE: the learned router routes for the first `freeze_fraction` of the steps
                    while a token router learns to imitate it; then the token router, frozen, routes,
                    and the learned router's score is the gate. A balancing loss
                    (`aux_loss_weight`, `z_loss_weight`) applies in the first stage only, as StableMoE's

    With `freeze_fraction` the router's parameters (the token router's, for stable) stop training
    at that point of the run (`freeze`, called by the training loop; `frozen` is saved with the
    weights). `gate = "unit"` weights the selected experts by 1 in the forward pass while the
    score's gradient still reaches the router (straight-through). `balance = "base"` assigns
    tokens by BASE's balanced assignment in training, by the greedy top-1 at evaluation.

    Keeps running routing statistics: assignments per expert in training (`load`, which the
    auxiliary-loss-free bias follows; the optimizer's step hook updates the bias and clears them,
    Transformer.after_optimizer_step) and, apart, in evaluation (`eval_load`, with the summed
    score entropy: diagnostics only), so measuring a model never moves its training; `reset_stats`
    clears them all.
    """

    def __init__(self, d_model: int, cfg: MoEConfig, vocab_size: int = 0):
        super().__init__()
        self.cfg = cfg
        kind = cfg.router
        self.gate = nn.Linear(d_model, cfg.n_experts, bias=False) if kind in ("learned", "hash_gated", "stable") else None
        self.token_router = TokenRouter(vocab_size, cfg.router_dim, cfg.n_experts) if kind in ("token", "stable") else None
        self.cosine = CosineRouter(d_model, cfg.router_dim, cfg.n_experts) if kind == "cosine" else None
        self.register_buffer("expert_bias", torch.zeros(cfg.n_experts))  # selection only
        if cfg.freeze_fraction > 0:  # saved with the weights: a finished run routes as it ended
            self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))
        self.register_buffer("load", torch.zeros(cfg.n_experts), persistent=False)  # training's, for the bias
        self.register_buffer("eval_load", torch.zeros(cfg.n_experts), persistent=False)  # evaluation's, for diagnostics
        self.register_buffer("entropy_sum", torch.zeros(()), persistent=False)
        self.register_buffer("tokens_seen", torch.zeros(()), persistent=False)
        self.register_buffer("agreed", torch.zeros(()), persistent=False)  # balanced = greedy choice (balance)
        initialise(self)

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """Router weights N(0, std); the selection bias and the statistics back to zero."""
        if self.gate is not None:
            nn.init.normal_(self.gate.weight, std=std)
        for part in (self.token_router, self.cosine):
            if part is not None:
                part.reset_parameters(std)
        self.expert_bias.zero_()
        if self.cfg.freeze_fraction > 0:
            self.frozen.zero_()
        self.reset_stats()

    def is_frozen(self) -> bool:
        return self.cfg.freeze_fraction > 0 and bool(self.frozen)

    @torch.no_grad()
    def freeze(self) -> None:
        """Stop training the routing: the learned router's parameters, or the stable router's token router."""
        self.frozen.fill_(True)
        for p in (self.token_router if self.cfg.router == "stable" else self).parameters():
            p.requires_grad_(False)
            p.grad = None

    def forward(self, x: torch.Tensor, tokens: torch.Tensor | None = None) -> Routing:
        """x [T, d] -> Routing; `tokens` [T] (the input token ids) are needed by the hash, token
        and stable routers only."""
        kind, E = self.cfg.router, self.cfg.n_experts
        distill = None
        if kind in ("hash", "hash_gated", "token", "stable") and tokens is None:
            raise ValueError(f"{kind} routing needs the token ids")  # a bug in the caller, never the user's
        if kind == "hash":
            experts = hash_experts(tokens, E)  # [T, 1]
            scores = torch.zeros(x.shape[0], E, device=x.device).scatter_(1, experts, 1.0)
            logits, gates = scores, scores.gather(1, experts)
        else:
            if kind == "token":
                logits = self.token_router(tokens)
            elif kind == "cosine":
                logits = self.cosine(x)
            else:
                logits = self.gate(x).float()  # [T, E]
            scores = logits.softmax(-1) if self.cfg.score == "softmax" else logits.sigmoid()
            if kind == "hash_gated":
                experts = hash_experts(tokens, E)
            elif kind == "stable" and self.is_frozen():
                experts = self.token_router(tokens).argmax(-1, keepdim=True)
            elif kind == "stable":
                experts = scores.argmax(-1, keepdim=True)
                distill = F.cross_entropy(self.token_router(tokens), experts[:, 0])  # the token router imitates
            elif self.cfg.balance == "base" and self.training and not self.is_frozen():
                experts = balanced_assignment(scores + self.expert_bias)
                with torch.no_grad():
                    self.agreed += (experts[:, 0] == (scores + self.expert_bias).argmax(-1)).sum()
            else:
                experts = (scores + self.expert_bias).topk(self.cfg.top_k, dim=-1).indices  # [T, k]
            gates = scores.gather(1, experts)
        if self.cfg.renormalize:
            gates = gates / gates.sum(-1, keepdim=True)
        if self.cfg.gate == "unit":
            gates = gates + (1 - gates).detach()  # 1 forward, the score's gradient backward
        # tokens per expert [E]; a scatter-add, not bincount, whose output size torch.compile cannot know
        chosen = experts.flatten()
        counts = torch.zeros(E, dtype=chosen.dtype, device=chosen.device).scatter_add_(0, chosen, torch.ones_like(chosen))
        with torch.no_grad():
            if self.training:  # the bias follows training's loads only: a measurement never moves it
                self.load += counts
            else:  # diagnostics (evaluation/routing.py) count on their own
                self.eval_load += counts
                p = scores / scores.sum(-1, keepdim=True)
                self.entropy_sum += -(p * p.clamp_min(1e-12).log()).sum()
                self.tokens_seen += x.shape[0]
        return Routing(scores=scores, logits=logits, experts=experts, gates=gates.to(x.dtype), counts=counts,
                       distill_loss=distill)

    @torch.no_grad()
    def update_bias(self) -> None:
        """DeepSeek-V3's rule: raise the bias of under-loaded experts, lower over-loaded ones."""
        self.expert_bias += self.cfg.bias_update_rate * torch.sign(self.load.mean() - self.load)

    def reset_stats(self) -> None:
        self.load.zero_()
        self.eval_load.zero_()
        self.entropy_sum.zero_()
        self.tokens_seen.zero_()
        self.agreed.zero_()

    def diagnostics(self) -> dict:
        """Load fraction per expert, max violation (max/mean load - 1), dead experts, entropy, and
        (balanced assignment in training) the share of tokens it sent where the greedy top-1 would;
        of the tokens seen in training, or in evaluation when the router is in eval mode."""
        load = (self.load if self.training else self.eval_load).double()
        total = load.sum().item()
        fraction = (load / total).tolist() if total else [0.0] * len(load)
        mean = load.mean().item()
        out = {
            "load": fraction,
            "max_violation": (load.max().item() / mean - 1.0) if mean else 0.0,
            "dead_experts": int((load == 0).sum().item()),
            "router_entropy": (self.entropy_sum / self.tokens_seen).item() if self.tokens_seen else 0.0,
        }
        if self.cfg.balance != "none" and self.training and total:
            out["assignment_agreement"] = self.agreed.item() / total
        return out


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


DISPATCH_PATHS = ("grouped_mm", "padded", "loop", "gather")


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
      gather      each row times its own expert's weights, gathered: one batched product of
                  [N, 1, d] by [N, d, h] and one of [N, 1, h] by [N, h, d]. Its cost grows with
                  N * d * h, not with E, so it wins where experts are many and each gets a few
                  rows (256 experts of width 24: benchmarks/train_step.py --profile); chosen only
                  by model.moe.dispatch, since its sums round differently from the grouped GEMM's
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
        if path == "gather":  # static shapes: train.compile traces it with the rest of the step
            expert = torch.repeat_interleave(torch.arange(counts.numel(), device=x.device), counts,
                                             output_size=x.shape[0])
            hidden = torch.bmm(x.unsqueeze(1), self.w_in.index_select(0, expert)).squeeze(1)
            return torch.bmm(self.act(hidden).unsqueeze(1), self.w_out.index_select(0, expert)).squeeze(1)
        return self.by_blocks(x, counts, path)

    # Never traced by torch.compile (train.compile compiles the rest of the step around it): the
    # blocks' sizes are data-dependent and fp32 grouped_mm has no fake-tensor kernel.
    @torch.compiler.disable
    def by_blocks(self, x: torch.Tensor, counts: torch.Tensor, path: str) -> torch.Tensor:
        """The paths that treat each expert's block of rows as a block: grouped_mm, padded, loop."""
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


def within_capacity(counts: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor, factor: float) -> torch.Tensor:
    """Which (token, expert) pairs an expert of capacity ceil(factor * pairs / E) keeps: the first
    ones in token order, as Switch and tutel do; 1.0 kept, 0.0 dropped, [T*k] in pair order."""
    n_experts, pairs = counts.numel(), order.numel()
    capacity = math.ceil(factor * pairs / n_experts)
    starts = counts.cumsum(0) - counts
    expert_of_sorted = torch.repeat_interleave(torch.arange(n_experts, device=counts.device), counts, output_size=pairs)
    rank = torch.arange(pairs, device=counts.device) - starts[expert_of_sorted]  # position within its expert
    return (rank < capacity).float().index_select(0, inverse)


class MoE(nn.Module):
    """Routed experts plus optional shared experts. forward: x [B, S, d] -> (y [B, S, d], aux loss)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int = 0):
        super().__init__()
        self.cfg = cfg.moe
        self.router = Router(cfg.d_model, cfg.moe, vocab_size)
        self.experts = Experts(cfg.d_model, cfg.moe.expert_width, cfg.moe.n_experts, cfg.mlp)
        shared = cfg.moe.n_shared_experts * cfg.moe.expert_width
        self.shared = MLP(cfg.d_model, shared, cfg.mlp) if shared else None
        # an expert path from DISPATCH_PATHS; None: choose_dispatch
        self.dispatch: str | None = None if cfg.moe.dispatch == "auto" else cfg.moe.dispatch

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
        gates = routing.gates
        if self.cfg.capacity_factor and self.training:  # overflow pairs weigh 0: those tokens keep the residual only
            gates = gates * within_capacity(routing.counts, order, inverse, self.cfg.capacity_factor).view(T, k)
        out = torch.bmm(gates.unsqueeze(1), y_pairs).squeeze(1)  # gate-weighted sum over k
        if self.shared is not None:
            out = out + self.shared(flat)
        if self.cfg.router == "stable" and self.router.is_frozen():
            aux = out.new_zeros(())  # StableMoE balances its first stage only; the frozen routing cannot move
        else:
            aux = balancing_loss(routing, self.cfg)
        if routing.distill_loss is not None:
            aux = aux + routing.distill_loss
        return out.reshape(shape), aux
