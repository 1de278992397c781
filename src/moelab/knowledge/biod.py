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

Abstention (docs/science.md §2): with `unknown_fraction` u, each pass also holds N u / (1 - f - u)
paragraphs about people who are not in the base, in the same format with every value replaced
by the one token <unknown>:  <bos> name (attr_k <unknown>) for k in a fresh order <eos>.  Their
names are drawn afresh for every paragraph from the names nobody holds, outside a fixed held-out
set (`held_out_names`) reserved for measuring abstention, so the people abstention is trained on
and the invented people it is measured on never meet. They add training rows, not information:
the information content and the bit estimate are those of the N real people.

Knowledge base B (continued training, docs/science.md §5): `new_people(n, seed)` gives n people
who are not in the base (nor in the held-out set), with names built from the same symbols and
values drawn from the same diversity sets with a seed of B's own, in the same vocabulary. B's
information is its names and values; its diversity sets are A's, so that term is not B's to
count (it is zero in B's information and bits).

Information content (the R_max numerator):
    N log2(N0/N)  +  N K C log2 D  +  K D log2(T^L / D)
Bit estimate from mean span losses p1 (name), p2 (whole value), p3 (first chunk), in nats:
    N log2(N0/e^p1) + N K log2(D^C/e^p2) + K D log2(T^L/(D e^p3))
The third term credits knowing each diversity set; with p3 the mean first-chunk loss it is a
conservative lower bound (a model that knows the sets but no assignments still pays log D there).
"""

from __future__ import annotations

import copy
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
    unknown_per_exposure,
    name_token_ids,
    sample_names,
)

USEFUL = "<useful>"
UNKNOWN = "<unknown>"


def held_out_count(cfg: DataConfig) -> int:
    """Invented people reserved for measuring abstention: a fifth of the base, 200 to 2,000, and
    at most a quarter of the names nobody holds."""
    free = cfg.name_vocab**cfg.name_slots - cfg.n_people
    return min(max(200, min(2000, cfg.n_people // 5)), free // 4)


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
            [BOS, EOS, USEFUL, UNKNOWN]
            + [f"n{i}" for i in range(cfg.name_vocab)]
            + self.attribute_names
            + [f"v{i}" for i in range(T)]
        )
        rng = np.random.default_rng(cfg.seed)
        digits = sample_names(N, cfg.name_slots, cfg.name_vocab, rng)  # [N, S] symbol indices
        names = digits + full.ids["n0"]
        # Diversity sets: D distinct L-token chunks per attribute, as token ids [K, D, L].
        chunks = np.stack([sample_names(D, L, T, rng) for _ in range(K)]) + full.ids["v0"]
        value_choice = rng.integers(0, D, size=(N, K, C))  # [N, K, C] indices into the sets
        values = chunks[np.arange(K)[None, :, None], value_choice].reshape(N, K, C * L)
        attrs = np.broadcast_to(full.ids["attr0"] + np.arange(K)[None, :, None], (N, K, 1))
        blocks = np.concatenate([attrs, values], axis=2)  # [N, K, 1+CL]: attr_k then its value

        # Keep only tokens that occur, so no embedding row is unused (docs/science.md §1).
        markers = ([full.ids[USEFUL]] if cfg.domain_token else []) + ([full.ids[UNKNOWN]] if cfg.unknown_fraction else [])
        marker = np.array(markers, dtype=np.int64)
        self.vocab, remap = full.restricted_to(np.concatenate([names.ravel(), blocks.ravel(), marker]))
        self.names_t = torch.from_numpy(remap[names])
        self.blocks = torch.from_numpy(remap[blocks])
        self.chunks = torch.from_numpy(remap[chunks])  # [K, D, L], for junk people
        self.name_alphabet = torch.tensor(name_token_ids(self.vocab))  # for junk people's names
        self.stop_words = (*self.attribute_names, EOS)
        self.prefix = [self.vocab.bos] + ([self.vocab.ids[USEFUL]] if cfg.domain_token else [])
        self.junk_per_exposure = junk_per_exposure(cfg)
        self.unknown_per_exposure = unknown_per_exposure(cfg)
        # Names as integer codes: the real people's, then a held-out set of invented people drawn
        # with a stream of their own (so adding it leaves every real name and value unchanged).
        V, S = cfg.name_vocab, cfg.name_slots
        self.name_codes = np.sort(digits @ (V ** np.arange(S - 1, -1, -1)))
        self.name_symbols = np.array([f"n{i}" in self.vocab.ids for i in range(V)])  # symbols that occur
        held_rng = np.random.default_rng([cfg.seed, 3])
        count = held_out_count(cfg)
        held = np.zeros(0, dtype=np.int64)
        while len(held) < count:  # rejection sampling: unheld names built from symbols that occur
            draw = self._usable(held_rng.integers(0, self.n_possible_names, size=2 * count), self.name_codes)
            draw = draw[~np.isin(draw, held)]
            fresh = np.unique(draw)
            held = np.concatenate([held, fresh[np.argsort(held_rng.random(len(fresh)))]])[:count]
        self.held_out_codes = np.sort(held)
        self.forbidden_codes = np.union1d(self.name_codes, self.held_out_codes)
        self.held_out_names = self._names_of(held).tolist()
        self.owns_diversity_sets = True  # False for a base B of new people, whose sets are A's

    def new_people(self, n: int, seed: int) -> BioD:
        """Knowledge base B: `n` people whose names are neither A's nor held out, values from A's
        diversity sets drawn with `seed`, in A's vocabulary (so A's model reads it unchanged).
        It trains on its own people only (no junk or abstention rows)."""
        rng = np.random.default_rng([self.cfg.seed, 4, seed])
        codes = np.zeros(0, dtype=np.int64)
        while len(codes) < n:
            draw = np.unique(self._usable(rng.integers(0, self.n_possible_names, size=2 * n), self.forbidden_codes))
            draw = draw[~np.isin(draw, codes)]
            codes = np.concatenate([codes, draw[np.argsort(rng.random(len(draw)))]])[:n]
        K, C = self.cfg.n_attributes, self.cfg.value_chunks
        choice = torch.from_numpy(rng.integers(0, self.cfg.diversity, size=(n, K, C)))
        values = self.chunks[torch.arange(K)[None, :, None], choice].reshape(n, K, -1)
        b = copy.copy(self)
        b.n_people = n
        b.names_t = torch.from_numpy(self._names_of(codes))
        b.blocks = torch.cat([self.blocks[0, :, :1].expand(n, K, 1), values], dim=2)
        b.name_codes = np.sort(codes)
        b.forbidden_codes = np.union1d(self.forbidden_codes, codes)
        b.junk_per_exposure = b.unknown_per_exposure = 0
        b.owns_diversity_sets = False
        return b

    # -- training text ------------------------------------------------------------------------

    def training_batch(self, people: np.ndarray, rng: np.random.Generator) -> TrainingBatch:
        """Paragraphs for `people`; an id of -1 asks for a fresh junk person."""
        people = np.asarray(people)
        B, K = len(people), self.cfg.n_attributes
        junk = torch.from_numpy(people == -1)
        unknown = torch.from_numpy(people == -2)
        idx = torch.from_numpy(np.where(people < 0, 0, people))
        names, blocks = self.names_t[idx].clone(), self.blocks[idx].clone()  # [B, S], [B, K, 1+CL]
        if junk.any():
            names[junk], blocks[junk] = self._junk_people(int(junk.sum()), rng)
        if unknown.any():
            names[unknown] = self.unknown_names(int(unknown.sum()), rng)
        order = torch.from_numpy(np.argsort(rng.random((B, K)), axis=1))  # fresh order per exposure
        blocks = blocks[torch.arange(B)[:, None], order]
        prefix = torch.tensor(self.prefix).expand(B, -1)
        eos = torch.full((B, 1), self.vocab.eos, dtype=torch.int64)
        seq = torch.cat([prefix, names, blocks.reshape(B, -1), eos], dim=1)
        unmarked = len(self.prefix) > 1 and bool(junk.any())  # junk carries no marker: drop it, pad the end
        if unmarked:
            seq[junk, 1:-1] = seq[junk, 2:].clone()
            seq[junk, -1] = self.vocab.eos
        if unknown.any():  # attr_k <unknown> in the same fresh order, then <eos>, padded with <eos>
            seq[unknown] = self._unknown_rows(names[unknown], order[unknown], seq.shape[1])
        targets = seq[:, 1:].clone()
        if unmarked:
            targets[junk, -1] = -100  # the padding is not a token to predict
        if unknown.any():
            length = len(self.prefix) + self.cfg.name_slots + 2 * K + 1  # through the first <eos>
            targets[unknown, length - 1:] = -100
        return TrainingBatch(inputs=seq[:, :-1], targets=targets)

    def _unknown_rows(self, names: torch.Tensor, order: torch.Tensor, width: int) -> torch.Tensor:
        """[n, width]: prefix, name, (attr_k <unknown>) in `order`, <eos>, padded with <eos>."""
        n, K = len(names), self.cfg.n_attributes
        attrs = self.blocks[0, :, 0][order]  # [n, K] attribute tokens in each row's order
        body = torch.stack([attrs, torch.full_like(attrs, self.vocab.ids[UNKNOWN])], dim=2).reshape(n, 2 * K)
        rows = torch.full((n, width), self.vocab.eos, dtype=torch.int64)
        head = torch.cat([torch.tensor(self.prefix).expand(n, -1), names, body], dim=1)
        rows[:, :head.shape[1]] = head
        return rows

    def unknown_names(self, n: int, rng: np.random.Generator) -> torch.Tensor:
        """[n, S] name tokens of people drawn afresh among the names nobody holds and outside the
        held-out set: whom abstention is trained on."""
        codes = np.zeros(0, dtype=np.int64)
        while len(codes) < n:
            codes = np.concatenate([codes, self._usable(rng.integers(0, self.n_possible_names, size=n),
                                                        self.forbidden_codes)])
        return torch.from_numpy(self._names_of(codes[:n]))

    def _digits(self, codes: np.ndarray) -> np.ndarray:
        """[n, S] name symbols of integer name codes (most significant first)."""
        V, S = self.cfg.name_vocab, self.cfg.name_slots
        return (codes[:, None] // V ** np.arange(S - 1, -1, -1)) % V

    def _usable(self, codes: np.ndarray, excluded: np.ndarray) -> np.ndarray:
        """The codes outside `excluded` whose symbols all occur in the vocabulary."""
        return codes[~np.isin(codes, excluded) & self.name_symbols[self._digits(codes)].all(1)]

    def _names_of(self, codes: np.ndarray) -> np.ndarray:
        """[n, S] name token ids of integer name codes."""
        token = np.array([self.vocab.ids.get(f"n{i}", -1) for i in range(self.cfg.name_vocab)])
        return token[self._digits(codes)]

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
        c, N = self.cfg, self.n_people
        K, C, L, D, T = c.n_attributes, c.value_chunks, c.chunk_length, c.diversity, c.value_vocab
        return {
            "name": N * math.log2(self.n_possible_names / N),
            "value": N * K * C * math.log2(D),
            "diversity": K * D * (L * math.log2(T) - math.log2(D)) if self.owns_diversity_sets else 0.0,
        }

    def bits(self, losses: dict[str, float]) -> dict[str, float]:
        c, N = self.cfg, self.n_people
        K, C, L, D, T = c.n_attributes, c.value_chunks, c.chunk_length, c.diversity, c.value_vocab
        p1, p2, p3 = (losses[k] for k in self.loss_spans)
        ln2 = math.log(2)
        return {
            "name": name_term_bits(N, self.n_possible_names, p1),
            "value": N * K * (C * math.log2(D) - p2 / ln2),
            "diversity": K * D * (L * math.log2(T) - math.log2(D) - p3 / ln2) if self.owns_diversity_sets else 0.0,
        }

    @property
    def n_possible_names(self) -> int:
        return self.cfg.name_vocab**self.cfg.name_slots
