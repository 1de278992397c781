"""bioD-style compact knowledge base (Allen-Zhu & Li 2024, §2; docs/science.md §2).

N people, each with a name of `name_slots` tokens (N0 = name_vocab ** name_slots possible names)
and K attributes. Attribute k has a diversity set of D chunks, each L tokens over an alphabet of T
value tokens; a person's value for k is C chunks drawn uniformly from that set.

A paragraph is  <bos> name (attr_k value_k) for k in a fresh random order <eos>,  so every paragraph
has the same length and the attribute always precedes its value (the "training format").

Junk data (Allen-Zhu & Li, Result 10): with `junk_fraction` f, each pass over the people also
holds N f / (1 - f) paragraphs about throwaway people drawn afresh from the same distributions,
each seen once. With `domain_token`, useful paragraphs (and every probe) start <bos> <useful>,
junk ones do not: the paper's "wikipedia.org" marker of reliable text.

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
    junk_per_exposure,
    name_term_bits,
    name_token_ids,
    sample_names,
)

USEFUL = "<useful>"


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
            [BOS, EOS, USEFUL]
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

        # Keep only tokens that occur, so no embedding row is unused (docs/science.md §1).
        marker = np.array([full.ids[USEFUL]] if cfg.domain_token else [], dtype=np.int64)
        self.vocab, remap = full.restricted_to(np.concatenate([names.ravel(), blocks.ravel(), marker]))
        self.names_t = torch.from_numpy(remap[names])
        self.blocks = torch.from_numpy(remap[blocks])
        self.chunks = torch.from_numpy(remap[chunks])  # [K, D, L], for junk people
        self.name_alphabet = torch.tensor(name_token_ids(self.vocab))  # for junk people's names
        self.stop_words = (*self.attribute_names, EOS)
        self.prefix = [self.vocab.bos] + ([self.vocab.ids[USEFUL]] if cfg.domain_token else [])
        self.junk_per_exposure = junk_per_exposure(cfg)

    # -- training text ------------------------------------------------------------------------

    def training_batch(self, people: np.ndarray, rng: np.random.Generator) -> TrainingBatch:
        """Paragraphs for `people`; an id of -1 asks for a fresh junk person."""
        people = np.asarray(people)
        B, K = len(people), self.cfg.n_attributes
        junk = torch.from_numpy(people < 0)
        idx = torch.from_numpy(np.where(people < 0, 0, people))
        names, blocks = self.names_t[idx].clone(), self.blocks[idx].clone()  # [B, S], [B, K, 1+CL]
        if junk.any():
            names[junk], blocks[junk] = self._junk_people(int(junk.sum()), rng)
        order = torch.from_numpy(np.argsort(rng.random((B, K)), axis=1))  # fresh order per exposure
        blocks = blocks[torch.arange(B)[:, None], order]
        prefix = torch.tensor(self.prefix).expand(B, -1)
        eos = torch.full((B, 1), self.vocab.eos, dtype=torch.int64)
        seq = torch.cat([prefix, names, blocks.reshape(B, -1), eos], dim=1)
        unmarked = len(self.prefix) > 1 and bool(junk.any())  # junk carries no marker: drop it, pad the end
        if unmarked:
            seq[junk, 1:-1] = seq[junk, 2:].clone()
            seq[junk, -1] = self.vocab.eos
        targets = seq[:, 1:].clone()
        if unmarked:
            targets[junk, -1] = -100  # the padding is not a token to predict
        return TrainingBatch(inputs=seq[:, :-1], targets=targets)

    def _junk_people(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Names and attribute blocks of `n` people drawn afresh: [n, S], [n, K, 1+CL]."""
        K, C, S = self.cfg.n_attributes, self.cfg.value_chunks, self.cfg.name_slots
        alphabet = self.name_alphabet
        names = alphabet[torch.from_numpy(rng.integers(0, len(alphabet), size=(n, S)))]
        choice = torch.from_numpy(rng.integers(0, self.cfg.diversity, size=(n, K, C)))
        values = self.chunks[torch.arange(K)[None, :, None], choice].reshape(n, K, -1)
        return names, torch.cat([self.blocks[0, :, :1].expand(n, K, 1), values], dim=2)

    # -- measurement --------------------------------------------------------------------------

    def probes(self) -> dict[str, Probe]:
        N, K = self.n_people, self.cfg.n_attributes
        CL, L = self.cfg.value_chunks * self.cfg.chunk_length, self.cfg.chunk_length
        P = len(self.prefix)
        name_tokens = torch.cat([torch.tensor(self.prefix).expand(N, -1), self.names_t], dim=1)  # [N, P+S]
        name_span = torch.zeros_like(name_tokens, dtype=torch.bool)
        name_span[:, P:] = True

        # One row per (person, attribute): prefix name attr_k value_k, attribute first.
        rows = torch.cat(
            [name_tokens.repeat_interleave(K, dim=0), self.blocks.reshape(N * K, 1 + CL)], dim=1
        )
        start = name_tokens.shape[1] + 1  # the value follows the attribute token
        value_span = torch.zeros_like(rows, dtype=torch.bool)
        value_span[:, start:] = True
        first_chunk = torch.zeros_like(rows, dtype=torch.bool)
        first_chunk[:, start: start + L] = True
        return {
            "name": Probe(name_tokens, {"name": name_span}),
            "value": Probe(rows, {"value": value_span, "first_chunk": first_chunk},
                           attribute=torch.arange(K).repeat(N)),
        }

    # -- questions ----------------------------------------------------------------------------

    def name(self, person: int) -> list[int]:
        return self.names_t[person].tolist()

    def question(self, name: list[int], attribute: int) -> list[int]:
        return [*self.prefix, *name, self.vocab.ids[self.attribute_names[attribute]]]

    def answer(self, person: int, attribute: int) -> list[int]:
        return self.blocks[person, attribute, 1:].tolist()

    def paragraph(self, person: int) -> list[int]:
        return [*self.prefix, *self.name(person), *self.blocks[person].ravel().tolist(), self.vocab.eos]

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
