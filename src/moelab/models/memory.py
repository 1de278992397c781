"""Product-key memory layers: a large table of slots of which each token reads a few.

Shapes: T tokens (batch and sequence flattened), d = d_model, H heads, k = top_k slots per head,
n = n_keys sub-keys per half, N = n ** 2 slots, c = key_dim (c / 2 per half).

    retrieval   x [T, d] -> queries [T, H, c] (a projection, normalised per head), split in halves;
                each half is scored against its own n sub-keys [T, H, n]; each keeps its top k;
                the k * k sums of a kept pair of scores are candidates, and their top k are the
                slots read: scores [T, H, k], slots [T, H, k] with slot = i * n + j
    pkm         (Lample et al. 2019) y = sum over heads and slots of softmax(scores) * values[slot],
                values [N, d]: an EmbeddingBag-style weighted sum
    peer        (He 2024) each slot is one neuron with a down vector u and an up vector v:
                y = sum over heads and slots of softmax(scores) * gelu(u[slot] . x) * v[slot]

The retrieval is exact: the k best sums s1[i] + s2[j] over all N slots always lie among the k x k
candidates (a pair whose i is outside the first half's top k is beaten by the k pairs (i', j) with
i' in it), so only ties can make it differ from scoring every slot (docs/science.md §4).

With `sparse` tables (train.memory_optimizer = "sparse") the value and expert tables get sparse
gradients that hold only the rows read, for an optimizer that updates only those rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from moelab.config import MemoryConfig
from moelab.models.mlp import initialise


class ProductKeys(nn.Module):
    """forward(x [T, d]) -> (scores [T, H, k], slots [T, H, k] int64), best first.

    The query is a bias-free projection to H heads of c dimensions, RMS-normalised per head (XLM
    uses batch normalisation; a per-token norm keeps a token's reads independent of its batch).
    Keys [H, 2, n, c / 2]: each head has its own two sub-key tables.
    """

    def __init__(self, d_model: int, cfg: MemoryConfig):
        super().__init__()
        self.cfg = cfg
        self.query = nn.Linear(d_model, cfg.heads * cfg.key_dim, bias=False)
        self.query_norm = nn.RMSNorm(cfg.key_dim)
        self.keys = nn.Parameter(torch.empty(cfg.heads, 2, cfg.n_keys, cfg.key_dim // 2))
        initialise(self)

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """Query N(0, std), norm to ones, sub-keys uniform in +-1/sqrt(c) (as XLM)."""
        nn.init.normal_(self.query.weight, std=std)
        self.query_norm.reset_parameters()
        bound = 1 / math.sqrt(self.cfg.key_dim)
        nn.init.uniform_(self.keys, -bound, bound)

    def half_scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two halves' sub-key scores, each [T, H, n]."""
        q = self.query_norm(self.query(x).view(x.shape[0], self.cfg.heads, self.cfg.key_dim))
        q1, q2 = q.chunk(2, dim=-1)  # [T, H, c/2] each
        return (torch.einsum("thc,hnc->thn", q1, self.keys[:, 0]),
                torch.einsum("thc,hnc->thn", q2, self.keys[:, 1]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, n = self.cfg.top_k, self.cfg.n_keys
        s1, s2 = self.half_scores(x)
        top1, top2 = s1.topk(k, dim=-1), s2.topk(k, dim=-1)  # [T, H, k] each
        candidates = (top1.values.unsqueeze(-1) + top2.values.unsqueeze(-2)).flatten(-2)  # [T, H, k*k]
        best = candidates.topk(k, dim=-1)
        i = top1.indices.gather(-1, best.indices // k)
        j = top2.indices.gather(-1, best.indices % k)
        return best.values, i * n + j


class MemoryLayer(nn.Module):
    """The retrieval and usage statistics PKM and PEER share; subclasses add their tables."""

    def __init__(self, d_model: int, cfg: MemoryConfig):
        super().__init__()
        self.cfg = cfg
        self.sparse = False  # sparse table gradients (set by training.make_optimizer)
        self.retrieval = ProductKeys(d_model, cfg)
        self.register_buffer("reads", torch.zeros(cfg.slots), persistent=False)
        self.register_buffer("weight_entropy_sum", torch.zeros(()), persistent=False)
        self.register_buffer("tokens_seen", torch.zeros(()), persistent=False)

    def tables(self) -> list[nn.Parameter]:
        """The slot tables, [N, d] each: the parameters a token reads only k rows of per head."""
        raise NotImplementedError

    def output_table(self) -> nn.Parameter:
        """The table whose rows are written into the residual stream (zero it: the layer adds nothing)."""
        raise NotImplementedError

    def read(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [T, d] -> (read weights [T, H, k] summing to 1 per head, slots [T, H, k])."""
        scores, slots = self.retrieval(x)
        # the softmax in at least float32, for bf16 runs
        weights = scores.softmax(-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(x.dtype)
        if not self.training:  # usage statistics are a diagnostic (evaluation/routing.py)
            with torch.no_grad():
                self.reads += torch.bincount(slots.flatten(), minlength=self.cfg.slots)
                self.weight_entropy_sum += -(weights * weights.clamp_min(1e-12).log()).sum()
                self.tokens_seen += x.shape[0] * self.cfg.heads
        return weights, slots

    def reset_stats(self) -> None:
        self.reads.zero_()
        self.weight_entropy_sum.zero_()
        self.tokens_seen.zero_()

    def diagnostics(self) -> dict:
        """Share of slots read at least once, dead slots, the entropy of the reads over slots
        (bits; log2 N when every slot is read equally), and the mean entropy of a head's read
        weights over its k slots (nats; log k when uniform)."""
        reads = self.reads.double()
        total = reads.sum().item()
        p = reads[reads > 0] / total if total else reads[:0]
        return {
            "slots": self.cfg.slots,
            "slot_usage": float((reads > 0).double().mean()),
            "dead_slots": int((reads == 0).sum()),
            "usage_entropy_bits": float(-(p * p.log2()).sum()),
            "max_usage_entropy_bits": math.log2(self.cfg.slots),
            "read_weight_entropy": (self.weight_entropy_sum / self.tokens_seen).item() if self.tokens_seen else 0.0,
        }


class ProductKeyMemory(MemoryLayer):
    """PKM. forward(x [B, S, d]) -> y [B, S, d]; `values` [N, d] are shared by the heads."""

    def __init__(self, d_model: int, cfg: MemoryConfig):
        super().__init__(d_model, cfg)
        self.values = nn.Parameter(torch.empty(cfg.slots, d_model))
        initialise(self)

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02, out_std: float = 0.02) -> None:
        """Retrieval as ProductKeys; values N(0, out_std): they write into the residual stream, so
        they start at the scale of the model's other output projections (XLM, a post-norm model,
        starts them at d^-1/2)."""
        self.retrieval.reset_parameters(std)
        nn.init.normal_(self.values, std=out_std)
        self.reset_stats()

    def tables(self) -> list[nn.Parameter]:
        return [self.values]

    def output_table(self) -> nn.Parameter:
        return self.values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        weights, slots = self.read(flat)
        T = flat.shape[0]
        y = F.embedding_bag(slots.view(T, -1), self.values, per_sample_weights=weights.view(T, -1),
                            mode="sum", sparse=self.sparse)
        return y.view(x.shape)


class PEER(MemoryLayer):
    """PEER. forward(x [B, S, d]) -> y [B, S, d]; slot i is a neuron with `down[i]` (u_i, [d]) and
    `up[i]` (v_i, [d]): N single-neuron experts, k per head, shared by the heads."""

    def __init__(self, d_model: int, cfg: MemoryConfig):
        super().__init__(d_model, cfg)
        self.down = nn.Parameter(torch.empty(cfg.slots, d_model))
        self.up = nn.Parameter(torch.empty(cfg.slots, d_model))
        initialise(self)

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02, out_std: float = 0.02) -> None:
        """Retrieval as ProductKeys; down vectors N(0, std) as an MLP's input projection, up
        vectors N(0, out_std) as its output projection."""
        self.retrieval.reset_parameters(std)
        nn.init.normal_(self.down, std=std)
        nn.init.normal_(self.up, std=out_std)
        self.reset_stats()

    def tables(self) -> list[nn.Parameter]:
        return [self.down, self.up]

    def output_table(self) -> nn.Parameter:
        return self.up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        weights, slots = self.read(flat)  # [T, H, k]
        u = F.embedding(slots, self.down, sparse=self.sparse)  # [T, H, k, d]
        v = F.embedding(slots, self.up, sparse=self.sparse)
        activation = F.gelu(torch.einsum("td,thkd->thk", flat, u)) * weights
        return torch.einsum("thk,thkd->td", activation, v).view(x.shape)


def memory_layer(d_model: int, cfg: MemoryConfig) -> MemoryLayer:
    return (ProductKeyMemory if cfg.kind == "pkm" else PEER)(d_model, cfg)
