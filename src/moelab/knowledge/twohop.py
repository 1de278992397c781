"""A reasoning task that needs no memorised facts: where do two hops from u lead?

Every example is a fresh random graph in which each of `graph_nodes` node symbols has one
outgoing edge (a random permutation f), listed in random order in the prompt, then three queries
about distinct nodes:

    <bos> a f(a) , b f(b) , ... ? u = f(f(u)) ? v = f(f(v)) ? w = f(f(w)) <eos>

Answering takes two lookups in the prompt, the second keyed by the result of the first: a 2-hop
path (`graph_hops` of them in general), with the endpoint as the answer. Only the answer tokens
are trained; a held-out graph counts as right when all three answers are. Nothing carries over between examples, so the task stores no
knowledge: `information_bits` is empty and the bit estimate is 0; what is measured is held-out
accuracy (greedy, over the full vocabulary) on 2,000 graphs from a separate random stream.

On a 2-core CPU neither this form nor the yes/no one ("is there a 2-hop path from u to w" over
a random edge list) was learned in the ~6,000-12,000 steps a 20-minute preset allows; see
docs/results.md for the runs. The task is here for longer (GPU) training.

Training draws `n_people` fresh examples per exposure (the field keeps its name so that every
knowledge base shares the config and the training loop).
"""

from __future__ import annotations

import numpy as np
import torch

from moelab.config import DataConfig
from moelab.knowledge.base import BOS, EOS, Probe, TrainingBatch, Vocabulary

N_TEST = 2000
QUERIES = 3  # questions per graph: more answers to learn from per example
TEST_STREAM = 10**6  # test graphs come from rng streams far from any training stream


class TwoHop:
    loss_spans: tuple[str, ...] = ()
    recall_span = "test.answer"
    attribute_names = ["two_hop"]
    stop_words = (EOS,)
    junk_per_exposure = 0

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.n_people = cfg.n_people
        self.vocab = Vocabulary([BOS, EOS, ",", "?", "="] + [f"g{i}" for i in range(cfg.graph_nodes)])
        self.node0 = self.vocab.ids["g0"]

    def example(self, rng: np.random.Generator) -> list[int]:
        """One prompt-and-answer token row."""
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

    def _rows(self, n: int, rng: np.random.Generator) -> torch.Tensor:
        return torch.tensor([self.example(rng) for _ in range(n)])

    def training_batch(self, people: np.ndarray, rng: np.random.Generator) -> TrainingBatch:
        seq = self._rows(len(people), rng)
        targets = torch.full_like(seq[:, 1:], -100)
        answers = self._answer_positions(seq)
        targets[:, answers - 1] = seq[:, answers]  # the answer tokens only
        return TrainingBatch(inputs=seq[:, :-1], targets=targets)

    def _answer_positions(self, seq: torch.Tensor) -> torch.Tensor:
        """Columns of the answers: each follows an '=' (rows share one layout)."""
        return torch.nonzero(seq[0] == self.vocab.ids["="]).squeeze(1) + 1

    def probes(self) -> dict[str, Probe]:
        tokens = self._rows(N_TEST, np.random.default_rng([self.cfg.seed, TEST_STREAM]))
        answer = torch.zeros_like(tokens, dtype=torch.bool)
        answer[:, self._answer_positions(tokens)] = True
        return {"test": Probe(tokens, {"answer": answer}, attribute=torch.zeros(N_TEST, dtype=torch.int64))}

    def information_bits(self) -> dict[str, float]:
        return {}

    def bits(self, losses: dict[str, float]) -> dict[str, float]:
        return {}
