"""A reasoning task that needs no memorised facts: where do two hops from u lead?

Every example is a fresh random graph in which each of `graph_nodes` node symbols has one
outgoing edge (a random permutation f), listed in random order in the prompt, then three queries
about distinct nodes:

    <bos> a f(a) , b f(b) , ... ? u = f(f(u)) ? v = f(f(v)) ? w = f(f(w)) <eos>

Answering takes two lookups in the prompt, the second keyed by the result of the first: a 2-hop
path (`graph_hops` of them in general), with the endpoint as the answer. A held-out graph counts
as right when all three answers are.

On a 2-core CPU neither this form nor the yes/no one ("is there a 2-hop path from u to w" over
a random edge list) was learned in the ~6,000-12,000 steps a 20-minute preset allows; see
docs/results.md for the runs. The task is here for longer (GPU) training; the CPU presets use
the sorting task (knowledge/sorting.py).
"""

from __future__ import annotations

import numpy as np
import torch

from moelab.config import DataConfig
from moelab.knowledge.base import BOS, EOS, Vocabulary
from moelab.knowledge.reasoning import ReasoningTask

QUERIES = 3  # questions per graph: more answers to learn from per example


class TwoHop(ReasoningTask):
    attribute_names = ["two_hop"]

    def __init__(self, cfg: DataConfig):
        super().__init__(cfg)
        self.vocab = Vocabulary([BOS, EOS, ",", "?", "="] + [f"g{i}" for i in range(cfg.graph_nodes)])
        self.node0 = self.vocab.ids["g0"]

    def example(self, rng: np.random.Generator) -> list[int]:
        V = self.cfg.graph_nodes
        f = rng.permutation(V)
        row = [self.vocab.bos]
        for i, a in enumerate(rng.permutation(V)):  # every node's edge, in random order
            row += ([self.vocab.ids[","]] if i else []) + [self.node0 + int(a), self.node0 + int(f[a])]
        for u in rng.choice(V, size=QUERIES, replace=False).tolist():
            end = u
            for _ in range(self.cfg.graph_hops):
                end = int(f[end])
            row += [self.vocab.ids["?"], self.node0 + u, self.vocab.ids["="], self.node0 + end]
        row.append(self.vocab.eos)
        return row

    def answer_columns(self, seq: torch.Tensor) -> torch.Tensor:
        """Each answer follows an '='."""
        return torch.nonzero(seq[0] == self.vocab.ids["="]).squeeze(1) + 1
