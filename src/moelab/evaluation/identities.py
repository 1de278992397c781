"""docs/science.md §5.1, the estimator identities, checked without training: an oracle "model" that
knows a bioD knowledge base emits exact next-token distributions, and the full probe pipeline
must report the closed-form bits for it. Also the paper's 68/6 total/active ratio.

The oracle is uniform over the real names (a prefix tree, so each name gets exactly 1/N); on
value chunk tokens (chunk_length 1) it puts probability q on the right token and spreads 1 - q
uniformly over the rest of that attribute's diversity set (q = 1/D is the uniform predictor).
"""

from __future__ import annotations

import math

import torch

from moelab.config import DataConfig, ModelConfig, MoEConfig, RunConfig, resolve
from moelab.evaluation.capacity import Capacity, measure_capacity
from moelab.knowledge import BioD
from moelab.models import count_params

IDENTITY_DATA = DataConfig(n_people=60, name_slots=2, name_vocab=16, n_attributes=3, value_chunks=2,
                           chunk_length=1, diversity=8, value_vocab=32, seed=3)


class Oracle(torch.nn.Module):
    """Exact next-token log-probabilities for a two-slot-name, chunk_length-1 bioD base."""

    def __init__(self, kb: BioD, q: float):
        super().__init__()
        if kb.cfg.name_slots != 2 or kb.cfg.chunk_length != 1:
            raise ValueError("the oracle needs name_slots = 2 and chunk_length = 1")
        self.kb, self.q = kb, q
        V = len(kb.vocab)
        self.vocab_size = V
        names = kb.names_t.tolist()
        first = torch.zeros(V)
        for n in names:
            first[n[0]] += 1
        self.first = first / first.sum()
        self.second: dict[int, torch.Tensor] = {}
        for n in names:
            self.second.setdefault(n[0], torch.zeros(V))[n[1]] += 1
        self.person = {tuple(n): i for i, n in enumerate(names)}
        self.attr0 = kb.vocab.ids["attr0"]
        self.sets = {self.attr0 + a: sorted(set(kb.blocks[:, a, 1:].flatten().tolist()))
                     for a in range(kb.cfg.n_attributes)}

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, S = tokens.shape
        probs = torch.full((B, S, self.vocab_size), 1.0 / self.vocab_size, dtype=torch.float64)
        for b in range(B):
            row = tokens[b].tolist()
            probs[b, 0] = self.first
            if S > 1:
                counts = self.second[row[1]]
                probs[b, 1] = counts / counts.sum()
            if S > 3:
                person, attr = self.person[tuple(row[1:3])], row[3]
                values = self.kb.blocks[person, attr - self.attr0, 1:].tolist()
                for j in range(S - 3):
                    p = torch.zeros(self.vocab_size, dtype=torch.float64)
                    others = [v for v in self.sets[attr] if v != values[j]]
                    p[others] = (1 - self.q) / len(others)
                    p[values[j]] = self.q
                    probs[b, 3 + j] = p
        return probs.log(), torch.zeros(())


def oracle_capacity(kb: BioD, q: float) -> Capacity:
    return measure_capacity(Oracle(kb, q), kb, batch_size=64, device=torch.device("cpu"))


def paper_layer_ratio(d_model: int = 1024) -> float:
    """Total/active of attention plus 32 top-1 experts of d -> d -> d (the paper: 68/6)."""
    cfg = resolve(RunConfig(model=ModelConfig(d_model=d_model, n_heads=4, d_ff=d_model, n_layers=1, mlp="gelu",
                                               moe=MoEConfig(n_experts=32, top_k=1)))).model
    c = count_params(cfg, vocab_size=10)
    return (c.attention + c.routed_experts) / (c.attention + c.routed_experts_active)


def identity_table(data: DataConfig = IDENTITY_DATA) -> list[dict]:
    """Each identity: what the closed form says, what the pipeline measures, relative error."""
    kb = BioD(data)
    c = data
    n0 = c.name_vocab**c.name_slots
    facts = c.n_people * c.n_attributes * c.value_chunks
    perfect, uniform = oracle_capacity(kb, 1.0), oracle_capacity(kb, 1.0 / c.diversity)
    rows = [
        ("perfect values, uniform names: N log2(N0/N) + N K C log2 D",
         c.n_people * math.log2(n0 / c.n_people) + facts * math.log2(c.diversity),
         perfect.bit_terms["name"] + perfect.bit_terms["value"]),
        ("uniform value predictor: value bits = 0 (error relative to the information bits)", 0.0,
         uniform.bit_terms["value"] / perfect.information_bits),
    ]
    for q in (0.25, 0.5, 0.9):
        rows.append((f"probability {q} on the right value: log2 D + log2 q bits per chunk",
                     math.log2(c.diversity) + math.log2(q), oracle_capacity(kb, q).bit_terms["value"] / facts))
    rows.append(("perfect predictor reaches R_max: bits = information bits", perfect.information_bits, perfect.bits))
    rows.append(("paper's 32-expert layer: total / active = 68 / 6", 68 / 6, paper_layer_ratio()))
    out = []
    for name, expected, measured in rows:
        scale = max(abs(expected), 1.0)
        out.append({"identity": name, "expected": expected, "measured": measured,
                    "relative_error": abs(measured - expected) / scale})
    return out
