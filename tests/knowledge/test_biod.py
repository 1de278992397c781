import math

import numpy as np
import torch

from moelab.config import DataConfig
from moelab.knowledge import BioD

CFG = DataConfig(n_people=50, name_slots=3, name_vocab=8, n_attributes=3, value_chunks=2,
                 chunk_length=2, diversity=5, value_vocab=6, seed=1)


def test_deterministic_from_seed_and_different_across_seeds():
    a, b = BioD(CFG), BioD(CFG)
    assert torch.equal(a.blocks, b.blocks) and torch.equal(a.names_t, b.names_t)
    c = BioD(DataConfig(**{**CFG.__dict__, "seed": 2}))
    assert not torch.equal(a.blocks, c.blocks)


def test_names_are_distinct_and_values_come_from_each_attributes_diversity_set():
    kb = BioD(CFG)
    assert len({tuple(n) for n in kb.names_t.tolist()}) == CFG.n_people
    for a in range(CFG.n_attributes):
        chunks = kb.blocks[:, a, 1:].reshape(-1, CFG.chunk_length)
        assert len({tuple(c) for c in chunks.tolist()}) <= CFG.diversity


def test_paragraph_holds_every_fact_in_a_fresh_order():
    kb = BioD(CFG)
    rng = np.random.default_rng(0)
    people = np.zeros(40, dtype=np.int64)  # the same person 40 times
    batch = kb.training_batch(people, rng)
    seq = torch.cat([batch.inputs, batch.targets[:, -1:]], dim=1)
    S, block = CFG.name_slots, 1 + CFG.value_chunks * CFG.chunk_length
    assert (seq[:, 0] == kb.vocab.bos).all() and (seq[:, -1] == kb.vocab.eos).all()
    assert (seq[:, 1:1 + S] == kb.names_t[0]).all()
    blocks = seq[:, 1 + S:-1].reshape(40, CFG.n_attributes, block)
    orders = set()
    for row in blocks:
        got = sorted(map(tuple, row.tolist()))
        assert got == sorted(map(tuple, kb.blocks[0].tolist()))
        orders.add(tuple(row[:, 0].tolist()))
    assert len(orders) > 1


def test_vocabulary_has_no_unused_tokens():
    kb = BioD(CFG)
    used = set(kb.names_t.flatten().tolist()) | set(kb.blocks.flatten().tolist()) | {kb.vocab.bos, kb.vocab.eos}
    assert used == set(range(len(kb.vocab)))


def test_information_content_terms():
    kb = BioD(CFG)
    c = CFG
    info = kb.information_bits()
    assert info["name"] == c.n_people * math.log2(c.name_vocab**c.name_slots / c.n_people)
    assert info["value"] == c.n_people * c.n_attributes * c.value_chunks * math.log2(c.diversity)
    assert info["diversity"] == c.n_attributes * c.diversity * math.log2(c.value_vocab**c.chunk_length / c.diversity)


def test_probe_spans_cover_names_and_values():
    kb = BioD(CFG)
    probes = kb.probes()
    assert probes["name"].spans["name"].sum() == CFG.n_people * CFG.name_slots
    value = probes["value"]
    assert value.tokens.shape[0] == CFG.n_people * CFG.n_attributes
    assert value.spans["value"].sum() == value.tokens.shape[0] * CFG.value_chunks * CFG.chunk_length
    assert value.spans["first_chunk"].sum() == value.tokens.shape[0] * CFG.chunk_length
    # row 4 asks about person 1, attribute 1: its scored tokens are that value
    assert torch.equal(value.tokens[4][value.spans["value"][4]], kb.blocks[1, 1, 1:])


def test_junk_people_are_fresh_and_only_useful_paragraphs_carry_the_domain_token():
    kb = BioD(DataConfig(**{**CFG.__dict__, "junk_fraction": 0.75, "domain_token": True}))
    plain = BioD(CFG)
    assert kb.junk_per_exposure == 150  # N f / (1 - f)
    assert kb.information_bits() == plain.information_bits()  # junk adds no knowledge to store
    marker = kb.vocab.ids["<useful>"]
    batch = kb.training_batch(np.array([0, -1, 1, -1]), np.random.default_rng(0))
    seq = torch.cat([batch.inputs[:, :1], batch.targets.clamp(min=0)], dim=1)
    assert seq[0, 1] == marker and seq[2, 1] == marker and (seq[[1, 3], 1] != marker).all()
    assert (batch.targets[[1, 3], -1] == -100).all() and (batch.targets[[0, 2], -1] == kb.vocab.eos).all()
    useful_names = {tuple(n) for n in kb.names_t.tolist()}
    junk_names = {tuple(seq[r, 1:1 + CFG.name_slots].tolist()) for r in (1, 3)}
    assert not junk_names & useful_names  # (collisions are possible in principle; not with this seed)
    attrs = {kb.vocab.ids[a] for a in kb.attribute_names}
    assert sum(int(t) in attrs for t in seq[1]) == CFG.n_attributes
    for probe in kb.probes().values():
        assert (probe.tokens[:, :2] == torch.tensor([kb.vocab.bos, marker])).all()
    assert kb.question(kb.name(0), 0)[:2] == [kb.vocab.bos, marker]
    assert "<useful>" not in plain.vocab.ids  # no unused embedding row without the option


def test_junk_adds_steps_in_proportion():
    from moelab.config import TrainConfig
    from moelab.training import n_steps, people_order

    order = people_order(10, 3, np.random.default_rng(0), junk=30)
    assert len(order) == 120 and (order == -1).sum() == 90
    assert sorted(order[:40][order[:40] >= 0].tolist()) == list(range(10))  # each pass holds everyone once
    assert n_steps(TrainConfig(exposures=100, batch_size=32), 2000 + 6000) == 25000
