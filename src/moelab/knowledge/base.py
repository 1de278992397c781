"""What every synthetic knowledge base offers: a vocabulary, fresh training paragraphs, probes for
the bit estimator, and its exact information content.

Conventions (docs/science.md §3): losses are *sums* of token cross-entropies over a span, in nats,
averaged over people or facts. Bits are computed from them by each knowledge base's formula.
Value probabilities come from the model's full softmax over the vocabulary (the theorem's bound),
never renormalised over the valid values.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from moelab.config import DataConfig

# Value probabilities come from the model's full softmax, not renormalised over the valid values:
# the bits are then the theorem's lower bound (docs/science.md §3). Recorded in every run's metrics.
VALUE_NORMALISATION = "full_softmax"

BOS, EOS = "<bos>", "<eos>"


class Vocabulary:
    """Token strings <-> ids. Every token in it occurs in training text, so no embedding row is unused."""

    def __init__(self, tokens: list[str]):
        if len(set(tokens)) != len(tokens):
            raise ValueError("duplicate tokens in vocabulary")
        self.tokens = list(tokens)
        self.ids = {tok: i for i, tok in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, words: list[str]) -> list[int]:
        return [self.ids[w] for w in words]

    def decode(self, ids: list[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    def restricted_to(self, used: np.ndarray) -> tuple[Vocabulary, np.ndarray]:
        """The vocabulary of the ids in `used` (plus <bos>, <eos>), and an old-id -> new-id map."""
        keep = np.union1d(np.unique(used), [self.bos, self.eos])
        remap = np.full(len(self.tokens), -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        return Vocabulary([self.tokens[i] for i in keep]), remap

    @property
    def bos(self) -> int:
        return self.ids[BOS]

    @property
    def eos(self) -> int:
        return self.ids[EOS]


@dataclass
class Probe:
    """Sequences scored with teacher forcing.

    tokens:    [n, T] int64, right-padded with <eos>.
    spans:     name -> bool [n, T]; True at position t means token t is scored (predicted from < t).
               A row's span loss is the sum of -log p(token_t | tokens_<t) over its True positions.
    attribute: [n] int64, which attribute the row asks about (rows of recall probes), or None.
    """

    tokens: torch.Tensor
    spans: dict[str, torch.Tensor]
    attribute: torch.Tensor | None = None


@dataclass
class TrainingBatch:
    """inputs: [B, T] int64; targets: [B, T] int64 with -100 where nothing is predicted (padding)."""

    inputs: torch.Tensor
    targets: torch.Tensor


class KnowledgeBase(Protocol):
    vocab: Vocabulary
    n_people: int
    attribute_names: list[str]
    junk_per_exposure: int  # paragraphs about throwaway people added to each pass (id -1 in a batch)
    unknown_per_exposure: int  # paragraphs about people not in the base, answered <unknown> (id -2)

    def training_batch(self, people: np.ndarray, rng: np.random.Generator) -> TrainingBatch:
        """One paragraph per person id, each with a fresh attribute order (and template); an id of
        -1 asks for a junk paragraph about a person drawn afresh."""

    def probes(self) -> dict[str, Probe]:
        """Probes for the bit estimator and recall; see `loss_spans` and `recall_span`."""

    def information_bits(self) -> dict[str, float]:
        """The exact information content (the R_max numerator), term by term."""

    def bits(self, losses: dict[str, float]) -> dict[str, float]:
        """Bit estimate, term by term, from mean span losses in nats keyed '<probe>.<span>'."""

    # Which '<probe>.<span>' mean losses `bits` needs, and the span whose exact match is recall.
    loss_spans: tuple[str, ...]
    recall_span: str

    # -- questions, for the probe's task generator (token ids throughout) --
    stop_words: tuple[str, ...]  # words that end an answer in the training format

    def name(self, person: int) -> list[int]:
        """The name tokens of a person."""

    def question(self, name: list[int], attribute: int) -> list[int]:
        """<bos>, then the training text about `name` up to where `attribute`'s value starts."""

    def answer(self, person: int, attribute: int) -> list[int]:
        """The value tokens of a person's attribute, as the recall probe scores them."""

    def paragraph(self, person: int) -> list[int]:
        """A person's canonical paragraph, <bos> ... <eos>: the facts the questions ask for."""


def name_term_bits(n_people: int, n_possible_names: int, p1: float) -> float:
    """N * log2(N0 / e^p1): bits in the names, from the mean name loss p1 (nats)."""
    return n_people * (math.log2(n_possible_names) - p1 / math.log(2))


def sample_names(n_people: int, slots: int, symbols: int, rng: np.random.Generator) -> np.ndarray:
    """[N, slots] distinct names, uniformly among symbols ** slots; values are symbol indices."""
    codes = rng.choice(symbols**slots, size=n_people, replace=False)
    digits = np.empty((n_people, slots), dtype=np.int64)
    for s in range(slots - 1, -1, -1):
        digits[:, s] = codes % symbols
        codes = codes // symbols
    return digits


def name_token_ids(vocab: Vocabulary) -> list[int]:
    """Ids of the name tokens ('n<i>'), which can fill any name slot: for inventing people."""
    return [i for i, tok in enumerate(vocab.tokens) if re.fullmatch(r"n\d+", tok)]


def pad_rows(rows: list[list[int]], pad: int) -> torch.Tensor:
    """Right-pad variable-length rows into an int64 tensor [n, max_len]."""
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), pad, dtype=torch.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
    return out


def _extra_rows(cfg: DataConfig, fraction: float) -> int:
    """Extra paragraphs per pass that make `fraction` of it, beside the people and the other extras."""
    rest = 1 - cfg.junk_fraction - cfg.unknown_fraction
    return round(cfg.n_people * fraction / rest)


def junk_per_exposure(cfg: DataConfig) -> int:
    """Junk paragraphs added to each pass over the people, so they make `junk_fraction` of it (bioD)."""
    return _extra_rows(cfg, cfg.junk_fraction)


def unknown_per_exposure(cfg: DataConfig) -> int:
    """Abstention paragraphs (people not in the base, every value <unknown>) added to each pass, so
    they make `unknown_fraction` of it (bioD)."""
    return _extra_rows(cfg, cfg.unknown_fraction)


def rows_per_exposure(cfg: DataConfig) -> int:
    """Training rows in one exposure (one pass): the people (or fresh examples), junk and unknowns."""
    return cfg.n_people + junk_per_exposure(cfg) + unknown_per_exposure(cfg)
