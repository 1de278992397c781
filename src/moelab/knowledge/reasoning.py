"""What every reasoning task shares: no facts to store, a fresh example per training row, only the
answer tokens trained, and held-out accuracy on examples from a separate random stream.

A task defines `vocab`, `attribute_names`, `example(rng) -> token row` and
`answer_columns(seq) -> columns of the answer tokens` (every row of one task shares one layout).
Training draws `n_people` fresh examples per exposure (the field keeps its name so that every
knowledge base shares the config and the training loop). A held-out example counts as right when
all its answer tokens are (greedy, over the full vocabulary). Nothing carries over between
examples, so `information_bits` is empty and the bit estimate is 0.
"""

from __future__ import annotations

import numpy as np
import torch

from moelab.config import DataConfig
from moelab.knowledge.base import EOS, Probe, TrainingBatch, Vocabulary

N_TEST = 2000
TEST_STREAM = 10**6  # test examples come from rng streams far from any training stream


class ReasoningTask:
    loss_spans: tuple[str, ...] = ()
    recall_span = "test.answer"
    stop_words = (EOS,)
    junk_per_exposure = 0
    unknown_per_exposure = 0
    attribute_names: list[str]
    vocab: Vocabulary

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.n_people = cfg.n_people

    def example(self, rng: np.random.Generator) -> list[int]:
        """One prompt-and-answer token row, from <bos> to <eos>."""
        raise NotImplementedError

    def answer_columns(self, seq: torch.Tensor) -> torch.Tensor:
        """The columns of `seq` [n, T] that hold answer tokens."""
        raise NotImplementedError

    def _rows(self, n: int, rng: np.random.Generator) -> torch.Tensor:
        return torch.tensor([self.example(rng) for _ in range(n)])

    def training_batch(self, people: np.ndarray, rng: np.random.Generator) -> TrainingBatch:
        seq = self._rows(len(people), rng)
        targets = torch.full_like(seq[:, 1:], -100)
        answers = self.answer_columns(seq)
        targets[:, answers - 1] = seq[:, answers]  # the answer tokens only
        return TrainingBatch(inputs=seq[:, :-1], targets=targets)

    def probes(self) -> dict[str, Probe]:
        tokens = self._rows(N_TEST, np.random.default_rng([self.cfg.seed, TEST_STREAM]))
        answer = torch.zeros_like(tokens, dtype=torch.bool)
        answer[:, self.answer_columns(tokens)] = True
        return {"test": Probe(tokens, {"answer": answer}, attribute=torch.zeros(N_TEST, dtype=torch.int64))}

    def information_bits(self) -> dict[str, float]:
        return {}

    def bits(self, losses: dict[str, float]) -> dict[str, float]:
        return {}
