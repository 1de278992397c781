"""bioD-style compact knowledge base (Allen-Zhu & Li 2024, §2; SCIENCE.md §2).

N people, each with a name of `name_slots` tokens (N0 = name_vocab ** name_slots possible names)
and K attributes. Attribute k has a diversity set of D chunks, each L tokens over an alphabet of T
value tokens; a person's value for k is C chunks drawn uniformly from that set.

A paragraph is  <bos> name (attr_k value_k) for k in a fresh random order <eos>,  so every paragraph
has the same length and the attribute always precedes its value (the "training format").

Information content (the R_max numerator):
    N log2(N0/N)  +  N K C log2 D  +  K D log2(T^L / D)
Bit estimate from mean span losses p1 (name), p2 (whole value), p3 (first chunk), in nats:
    N log2(N0/e^p1) + N K log2(D^C/e^p2) + K D log2(T^L/(D e^p3))
The third term credits knowing each diversity set; with p3 the mean first-chunk loss it is a
conservative lower bound (a model that knows the sets but no assignments still pays log D there).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from moelab.config import DataConfig
from moelab.knowledge.base import (
    BOS,
    EOS,
    Probe,
    TrainingBatch,
    Vocabulary,
    name_term_bits,
    sample_names,
)


class BioD:
    loss_spans = ("name.name", "value.value", "value.first_chunk")
    recall_span = "value.value"
    stop_words = ()  # set per instance: every attribute token, then <eos>

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.n_people = N = cfg.n_people
        K, C, L, D, T = cfg.n_attributes, cfg.value_chunks, cfg.chunk_length, cfg.diversity, cfg.value_vocab
        self.attribute_names = [f"attr{k}" for k in range(K)]
        full = Vocabulary(
            [BOS, EOS]
            + [f"n{i}" for i in range(cfg.name_vocab)]
            + self.attribute_names
            + [f"v{i}" for i in range(T)]
        )
        rng = np.random.default_rng(cfg.seed)
        names = sample_names(N, cfg.name_slots, cfg.name_vocab, rng) + full.ids["n0"]  # [N, S]
        # Diversity sets: D distinct L-token chunks per attribute, as token ids [K, D, L].
        chunks = np.stack([sample_names(D, L, T, rng) for _ in range(K)]) + full.ids["v0"]
        value_choice = rng.integers(0, D, size=(N, K, C))  # [N, K, C] indices into the sets
        values = chunks[np.arange(K)[None, :, None], value_choice].reshape(N, K, C * L)
        attrs = np.broadcast_to(full.ids["attr0"] + np.arange(K)[None, :, None], (N, K, 1))
        blocks = np.concatenate([attrs, values], axis=2)  # [N, K, 1+CL]: attr_k then its value

        # Keep only tokens that occur, so no embedding row is unused (SCIENCE.md §1).
        self.vocab, remap = full.restricted_to(np.concatenate([names.ravel(), blocks.ravel()]))
        self.names_t = torch.from_numpy(remap[names])
        self.blocks = torch.from_numpy(remap[blocks])
        self.stop_words = (*self.attribute_names, EOS)

    # -- training text ------------------------------------------------------------------------

    def training_batch(self, people: np.ndarray, rng: np.random.Generator) -> TrainingBatch:
        B, K = len(people), self.cfg.n_attributes
        order = torch.from_numpy(np.argsort(rng.random((B, K)), axis=1))  # fresh order per exposure
        idx = torch.from_numpy(np.asarray(people))
        blocks = self.blocks[idx[:, None], order]  # [B, K, 1+CL]
        bos = torch.full((B, 1), self.vocab.bos, dtype=torch.int64)
        eos = torch.full((B, 1), self.vocab.eos, dtype=torch.int64)
        seq = torch.cat([bos, self.names_t[idx], blocks.reshape(B, -1), eos], dim=1)
        return TrainingBatch(inputs=seq[:, :-1], targets=seq[:, 1:])

    # -- measurement --------------------------------------------------------------------------

    def probes(self) -> dict[str, Probe]:
        N, K = self.n_people, self.cfg.n_attributes
        S, CL, L = self.cfg.name_slots, self.cfg.value_chunks * self.cfg.chunk_length, self.cfg.chunk_length
        bos = torch.full((N, 1), self.vocab.bos, dtype=torch.int64)
        name_tokens = torch.cat([bos, self.names_t], dim=1)  # [N, 1+S]
        name_span = torch.zeros_like(name_tokens, dtype=torch.bool)
        name_span[:, 1:] = True

        # One row per (person, attribute): <bos> name attr_k value_k, attribute first.
        rows = torch.cat(
            [name_tokens.repeat_interleave(K, dim=0), self.blocks.reshape(N * K, 1 + CL)], dim=1
        )
        value_span = torch.zeros_like(rows, dtype=torch.bool)
        value_span[:, 2 + S:] = True
        first_chunk = torch.zeros_like(rows, dtype=torch.bool)
        first_chunk[:, 2 + S: 2 + S + L] = True
        return {
            "name": Probe(name_tokens, {"name": name_span}),
            "value": Probe(rows, {"value": value_span, "first_chunk": first_chunk},
                           attribute=torch.arange(K).repeat(N)),
        }

    # -- questions ----------------------------------------------------------------------------

    def name(self, person: int) -> list[int]:
        return self.names_t[person].tolist()

    def question(self, name: list[int], attribute: int) -> list[int]:
        return [self.vocab.bos, *name, self.vocab.ids[self.attribute_names[attribute]]]

    def answer(self, person: int, attribute: int) -> list[int]:
        return self.blocks[person, attribute, 1:].tolist()

    def paragraph(self, person: int) -> list[int]:
        return [self.vocab.bos, *self.name(person), *self.blocks[person].ravel().tolist(), self.vocab.eos]

    def information_bits(self) -> dict[str, float]:
        c = self.cfg
        N, K, C, L, D, T = c.n_people, c.n_attributes, c.value_chunks, c.chunk_length, c.diversity, c.value_vocab
        return {
            "name": N * math.log2(self.n_possible_names / N),
            "value": N * K * C * math.log2(D),
            "diversity": K * D * (L * math.log2(T) - math.log2(D)),
        }

    def bits(self, losses: dict[str, float]) -> dict[str, float]:
        c = self.cfg
        N, K, C, L, D, T = c.n_people, c.n_attributes, c.value_chunks, c.chunk_length, c.diversity, c.value_vocab
        p1, p2, p3 = (losses[k] for k in self.loss_spans)
        ln2 = math.log(2)
        return {
            "name": name_term_bits(N, self.n_possible_names, p1),
            "value": N * K * (C * math.log2(D) - p2 / ln2),
            "diversity": K * D * (L * math.log2(T) - math.log2(D) - p3 / ln2),
        }

    @property
    def n_possible_names(self) -> int:
        return self.cfg.name_vocab**self.cfg.name_slots
