"""Exact parameter accounting from a config alone (SCIENCE.md §1), shared by the lab and reports.

    P_total  = every trainable parameter, tied weights once
    P_active = P_total - sum over MoE layers of (E - k) * params_per_routed_expert
Embedding parameters are the input embedding plus an untied LM head; "non-embedding" excludes both.
The knowledge bases keep only tokens that occur, so no embedding row is unused.
Buffers (RoPE tables, the auxiliary-loss-free bias) are not parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn as nn

from moelab.config import ModelConfig


@dataclass(frozen=True)
class ParamCount:
    embedding: int  # input embedding + untied LM head
    attention: int  # q, k, v, o projections (+ q/k norms)
    norms: int  # RMSNorm weights of blocks and the final norm
    dense_mlp: int  # dense feed-forward layers
    router: int
    routed_experts: int  # all routed experts, all layers
    routed_experts_active: int  # the k of E routed experts each token uses
    shared_experts: int

    @property
    def total(self) -> int:
        return (self.embedding + self.attention + self.norms + self.dense_mlp + self.router
                + self.routed_experts + self.shared_experts)

    @property
    def active(self) -> int:
        return self.total - self.routed_experts + self.routed_experts_active

    @property
    def total_nonembedding(self) -> int:
        return self.total - self.embedding

    @property
    def active_nonembedding(self) -> int:
        return self.active - self.embedding

    def as_dict(self) -> dict[str, int]:
        return asdict(self) | {
            "total": self.total, "active": self.active,
            "total_nonembedding": self.total_nonembedding,
            "active_nonembedding": self.active_nonembedding,
        }


def mlp_params(d_model: int, width: int, mlp: str) -> int:
    """One feed-forward of hidden `width`: 2 d w (GELU) or 3 d w (SwiGLU), no biases."""
    return (3 if mlp == "swiglu" else 2) * d_model * width


def count_params(cfg: ModelConfig, vocab_size: int) -> ParamCount:
    """Exact counts for the `Transformer` that `cfg` and `vocab_size` describe."""
    d, L = cfg.d_model, cfg.n_layers
    head_dim = d // cfg.n_heads
    attention = L * (4 * d * d + (2 * head_dim if cfg.qk_norm else 0))
    norms = (2 * L + 1) * d
    embedding = vocab_size * d * (1 if cfg.tie_embeddings else 2)

    moe = cfg.moe
    n_moe = L - moe.first_dense_layers if cfg.is_moe else 0
    per_expert = mlp_params(d, moe.expert_width, cfg.mlp) if cfg.is_moe else 0
    return ParamCount(
        embedding=embedding,
        attention=attention,
        norms=norms,
        dense_mlp=(L - n_moe) * mlp_params(d, cfg.d_ff, cfg.mlp),
        router=n_moe * d * moe.n_experts,
        routed_experts=n_moe * moe.n_experts * per_expert,
        routed_experts_active=n_moe * moe.top_k * per_expert,
        shared_experts=n_moe * mlp_params(d, moe.n_shared_experts * moe.expert_width, cfg.mlp),
    )


def count_module(model: nn.Module) -> tuple[int, int]:
    """(total, active) counted from an instantiated `Transformer`'s parameters, not its config."""
    total = sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once
    inactive = 0
    for experts in model.routed_expert_modules():
        n_experts = experts.w_in.shape[0]
        k = model.cfg.moe.top_k
        inactive += sum(p.numel() for p in experts.parameters()) * (n_experts - k) // n_experts
    return total, total - inactive
