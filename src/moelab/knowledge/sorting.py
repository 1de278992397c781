"""A reasoning task small models learn on a CPU: sort a list given in the prompt.

Every example is a fresh list of `list_length` numbers drawn uniformly (with repeats) from
`value_vocab` number symbols, then its sorted copy:

    <bos> n7 n2 n7 n0 ... = n0 n2 n7 n7 ... <eos>

Writing the i-th output takes comparing the list's elements with each other and with what was
already written: an algorithm applied in context, with no fact that carries over between
examples. A held-out list counts as right when every output token is.

In the memorization-vs-reasoning preset (3,000 steps of 32 lists, 16 numbers of 64, two layers,
three seeds; docs/results.md) held-out whole-list accuracy rises steeply with width: 7% at
d_model 16, 54% at 32, 91% at 64.
"""

from __future__ import annotations

import numpy as np
import torch

from moelab.config import DataConfig
from moelab.knowledge.base import BOS, EOS, Vocabulary
from moelab.knowledge.reasoning import ReasoningTask


class Sorting(ReasoningTask):
    attribute_names = ["sorted"]

    def __init__(self, cfg: DataConfig):
        super().__init__(cfg)
        self.vocab = Vocabulary([BOS, EOS, "="] + [f"n{i}" for i in range(cfg.value_vocab)])
        self.number0 = self.vocab.ids["n0"]

    def example(self, rng: np.random.Generator) -> list[int]:
        numbers = rng.integers(0, self.cfg.value_vocab, size=self.cfg.list_length)
        return ([self.vocab.bos] + (self.number0 + numbers).tolist() + [self.vocab.ids["="]]
                + (self.number0 + np.sort(numbers)).tolist() + [self.vocab.eos])

    def answer_columns(self, seq: torch.Tensor) -> torch.Tensor:
        """The sorted copy: after <bos>, the list and '='."""
        start = self.cfg.list_length + 2
        return torch.arange(start, start + self.cfg.list_length)
