"""bioS-style knowledge base: templated biographies closer to text (Allen-Zhu & Li 2024; docs/science.md §2).

Six attributes with the paper's value-set sizes: birth date (12 months x 28 days x 200 years),
birth city (200), university (300), major (100), employer (263) and working city, which is
determined by the employer. Gender (2) shows only through pronouns. Every exposure draws a fresh
sentence order and a fresh template per sentence; the full name is the subject of the first
sentence and a pronoun of the others.

Information content: N log2(N0/N) + N log2 S0, S0 = 12*28*200 * 200 * 300 * 100 * 263 * 2
(log2 S0 = 47.6). The bit estimate is N log2(N0/e^p1) + N log2(S0/e^p2), where p2 is the summed
loss of one person's value tokens and first pronoun in a canonical biography (chain rule over the
independent fields; working city is excluded since the employer determines it).
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
    pad_rows,
    sample_names,
)

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
N_DAYS, N_YEARS, N_CITIES, N_UNIVERSITIES, N_MAJORS, N_EMPLOYERS = 28, 200, 200, 300, 100, 263
ATTRIBUTES = ["birth_date", "birth_city", "university", "major", "employer", "working_city"]
STORED = ATTRIBUTES[:-1]  # working_city is a function of employer

# {s}: subject (full name or he/she); {p}: possessive (name 's or his/her); {v}: the value.
TEMPLATES = {
    "birth_date": ["{s} was born on {v} .", "{s} came into this world on {v} .",
                   "{s} celebrates {p} birthday on {v} .", "{p} life began on {v} ."],
    "birth_city": ["{s} was born in {v} .", "{s} spent {p} early years in {v} .",
                   "{p} birthplace is {v} ."],
    "university": ["{s} studied at {v} .", "{s} graduated from {v} .",
                   "{s} received {p} education at {v} ."],
    "major": ["{s} majored in {v} .", "{s} completed a degree in {v} .",
              "{p} field of study was {v} ."],
    "employer": ["{s} works for {v} .", "{s} is employed by {v} .", "{p} employer is {v} ."],
    "working_city": ["{s} works in {v} .", "{s} lives and works in {v} .",
                     "{p} office is in {v} ."],
}
PRONOUNS = [("he", "his"), ("she", "her")]

SUBJECT, POSSESSIVE, VALUE = -1, -2, -3  # placeholders inside encoded templates


class BioS:
    loss_spans = ("name.name", "bio.value")
    recall_span = "recall.value"
    attribute_names = ATTRIBUTES
    stop_words = (".", EOS)
    junk_per_exposure = 0
    unknown_per_exposure = 0

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.n_people = N = cfg.n_people
        words = sorted({w for ts in TEMPLATES.values() for t in ts for w in t.split()
                        if not w.startswith("{")} | {"'s"} | {w for pair in PRONOUNS for w in pair})
        full = Vocabulary(
            [BOS, EOS]
            + [f"n{i}" for i in range(cfg.name_vocab)]
            + words
            + MONTHS
            + [f"day{d + 1}" for d in range(N_DAYS)]
            + [f"year{1900 + y}" for y in range(N_YEARS)]
            + [f"city{i}" for i in range(N_CITIES)]
            + [f"univ{i}" for i in range(N_UNIVERSITIES)]
            + [f"major{i}" for i in range(N_MAJORS)]
            + [f"company{i}" for i in range(N_EMPLOYERS)]
        )
        ids = full.ids
        rng = np.random.default_rng(cfg.seed)
        names = sample_names(N, cfg.name_slots, cfg.name_vocab, rng) + ids["n0"]
        employer_city = rng.integers(0, N_CITIES, size=N_EMPLOYERS)
        self.gender = rng.integers(0, 2, size=N).tolist()
        month, day, year = (rng.integers(0, n, size=N) for n in (12, N_DAYS, N_YEARS))
        city, univ, major, employer = (rng.integers(0, n, size=N)
                                       for n in (N_CITIES, N_UNIVERSITIES, N_MAJORS, N_EMPLOYERS))
        values = np.array([  # [N, 8]: month day year | birth city | university | major | employer | working city
            [ids[MONTHS[month[i]]], ids[f"day{day[i] + 1}"], ids[f"year{1900 + year[i]}"],
             ids[f"city{city[i]}"], ids[f"univ{univ[i]}"], ids[f"major{major[i]}"],
             ids[f"company{employer[i]}"], ids[f"city{employer_city[employer[i]]}"]]
            for i in range(N)
        ], dtype=np.int64).reshape(N, 8)

        # Keep only tokens that occur, so no embedding row is unused (docs/science.md §1).
        self.vocab, remap = full.restricted_to(
            np.concatenate([names.ravel(), values.ravel(), full.encode(words)]))
        self.names = remap[names].tolist()
        values = remap[values]
        spans = [(0, 3), (3, 4), (4, 5), (5, 6), (6, 7), (7, 8)]  # columns of each attribute
        self.values = [[values[i, a:b].tolist() for a, b in spans] for i in range(N)]
        placeholder = {"{s}": SUBJECT, "{p}": POSSESSIVE, "{v}": VALUE}
        new_ids = self.vocab.ids
        self.templates = [[[placeholder.get(w, new_ids.get(w)) for w in t.split()] for t in TEMPLATES[a]]
                          for a in ATTRIBUTES]
        self.pronouns = [(new_ids[he], new_ids[his]) for he, his in PRONOUNS]
        self.apostrophe_s = new_ids["'s"]

    # -- rendering ----------------------------------------------------------------------------

    def _sentence(self, person: int, attribute: int, template: int, first: bool,
                  out: list[int], value_positions: list[int] | None = None) -> None:
        """Append one sentence's token ids to `out` (and the positions of its value tokens)."""
        he, his = self.pronouns[self.gender[person]]
        named = not first  # the first sentence names the person once, then uses pronouns
        for item in self.templates[attribute][template]:
            if item == SUBJECT:
                out.extend([he] if named else self.names[person])
                named = True
            elif item == POSSESSIVE:
                out.extend([his] if named else self.names[person] + [self.apostrophe_s])
                named = True
            elif item == VALUE:
                if value_positions is not None:
                    value_positions.extend(range(len(out), len(out) + len(self.values[person][attribute])))
                out.extend(self.values[person][attribute])
            else:
                out.append(item)

    def _canonical_bio(self, person: int, value_positions: list[int] | None = None) -> list[int]:
        """Fixed order and template 0; value positions of the stored attributes + first pronoun."""
        row = [self.vocab.bos]
        for a in range(len(ATTRIBUTES)):
            stored = ATTRIBUTES[a] in STORED
            self._sentence(person, a, 0, first=a == 0, out=row,
                           value_positions=value_positions if stored else None)
            if a == 0 and value_positions is not None:
                value_positions.append(len(row))  # the next sentence opens with he/she
        return row + [self.vocab.eos]

    def training_batch(self, people: np.ndarray, rng: np.random.Generator) -> TrainingBatch:
        rows = []
        for person in people:
            row = [self.vocab.bos]
            for n, a in enumerate(rng.permutation(len(ATTRIBUTES))):
                self._sentence(int(person), int(a), int(rng.integers(len(self.templates[a]))),
                               first=n == 0, out=row)
            rows.append(row + [self.vocab.eos])
        seq = pad_rows(rows, self.vocab.eos)
        targets = seq[:, 1:].clone()
        lengths = torch.tensor([len(r) for r in rows])
        targets[torch.arange(seq.shape[1] - 1)[None, :] >= (lengths - 1)[:, None]] = -100
        return TrainingBatch(inputs=seq[:, :-1], targets=targets)

    # -- measurement --------------------------------------------------------------------------

    def probes(self) -> dict[str, Probe]:
        N = self.n_people
        bos = self.vocab.bos
        name_rows = [[bos] + self.names[i] for i in range(N)]

        # Canonical biography: fixed order and template 0; span = stored values + first pronoun.
        bio_rows, bio_positions = [], []
        for i in range(N):
            positions = []
            bio_rows.append(self._canonical_bio(i, positions))
            bio_positions.append(positions)

        # Recall: each attribute asked as the first sentence, <bos> name ... value.
        recall_rows, recall_positions, recall_attr = [], [], []
        for i in range(N):
            for a in range(len(ATTRIBUTES)):
                row, positions = [bos], []
                self._sentence(i, a, 0, first=True, out=row, value_positions=positions)
                del row[positions[-1] + 1:]  # stop after the value
                recall_rows.append(row)
                recall_positions.append(positions)
                recall_attr.append(a)

        def span(rows: list[list[int]], positions: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
            tokens = pad_rows(rows, self.vocab.eos)
            mask = torch.zeros_like(tokens, dtype=torch.bool)
            for r, pos in enumerate(positions):
                mask[r, pos] = True
            return tokens, mask

        name_tokens, name_mask = span(name_rows, [list(range(1, len(r))) for r in name_rows])
        bio_tokens, bio_mask = span(bio_rows, bio_positions)
        recall_tokens, recall_mask = span(recall_rows, recall_positions)
        return {
            "name": Probe(name_tokens, {"name": name_mask}),
            "bio": Probe(bio_tokens, {"value": bio_mask}),
            "recall": Probe(recall_tokens, {"value": recall_mask},
                            attribute=torch.tensor(recall_attr)),
        }

    # -- questions ----------------------------------------------------------------------------

    def name(self, person: int) -> list[int]:
        return list(self.names[person])

    def question(self, name: list[int], attribute: int) -> list[int]:
        # Template 0 of every attribute is "{s} <words> {v} .", so any name can be its subject.
        template = self.templates[attribute][0]
        assert template[0] == SUBJECT and VALUE in template
        return [self.vocab.bos, *name, *template[1:template.index(VALUE)]]

    def answer(self, person: int, attribute: int) -> list[int]:
        return list(self.values[person][attribute])

    def paragraph(self, person: int) -> list[int]:
        return self._canonical_bio(person)

    @property
    def n_possible_names(self) -> int:
        return self.cfg.name_vocab**self.cfg.name_slots

    @property
    def log2_s0(self) -> float:
        return math.log2(12 * N_DAYS * N_YEARS * N_CITIES * N_UNIVERSITIES * N_MAJORS * N_EMPLOYERS * 2)

    def information_bits(self) -> dict[str, float]:
        N = self.n_people
        return {"name": N * math.log2(self.n_possible_names / N), "value": N * self.log2_s0}

    def bits(self, losses: dict[str, float]) -> dict[str, float]:
        p1, p2 = (losses[k] for k in self.loss_spans)
        return {
            "name": name_term_bits(self.n_people, self.n_possible_names, p1),
            "value": self.n_people * (self.log2_s0 - p2 / math.log(2)),
        }
