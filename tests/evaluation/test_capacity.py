"""The bit estimator (SCIENCE.md §3, identities of §5.1), checked through the whole probe pipeline.

An oracle "model" that knows the knowledge base emits exact next-token distributions, so the bits
the pipeline reports can be compared with the closed forms to 1e-6 relative.
"""

import math

import pytest
import torch

from moelab.config import DataConfig
from moelab.evaluation import measure_capacity, score_probe
from moelab.knowledge import BioD

CFG = DataConfig(n_people=60, name_slots=2, name_vocab=16, n_attributes=3, value_chunks=2,
                 chunk_length=1, diversity=8, value_vocab=32, seed=3)


class Oracle(torch.nn.Module):
    """Uniform over the real names (a prefix tree, so each name gets exactly 1/N); for value chunk
    tokens (L = 1) it puts probability `q` on the right token and spreads 1 - q uniformly over the
    rest of that attribute's diversity set (q = 1/D is the uniform predictor)."""

    def __init__(self, kb: BioD, q: float):
        super().__init__()
        self.kb, self.q = kb, q
        V = len(kb.vocab)
        self.vocab_size = V
        names = kb.names_t.tolist()
        first = torch.zeros(V)
        for n in names:
            first[n[0]] += 1
        self.first = first / first.sum()
        self.second = {}
        for n in names:
            self.second.setdefault(n[0], torch.zeros(V))[n[1]] += 1
        self.person = {tuple(n): i for i, n in enumerate(names)}
        attr0 = kb.vocab.ids["attr0"]
        self.sets = {attr0 + a: sorted(set(kb.blocks[:, a, 1:].flatten().tolist()))
                     for a in range(CFG.n_attributes)}

    def forward(self, tokens):
        B, S = tokens.shape
        probs = torch.full((B, S, self.vocab_size), 1.0 / self.vocab_size, dtype=torch.float64)
        for b in range(B):
            row = tokens[b].tolist()
            probs[b, 0] = self.first
            if S > 1:
                counts = self.second[row[1]]
                probs[b, 1] = counts / counts.sum()
            if S > 3:
                person, attr = self.person[tuple(row[1:3])], row[3]
                values = self.kb.blocks[person, attr - self.kb.vocab.ids["attr0"], 1:].tolist()
                for j in range(S - 3):
                    p = torch.zeros(self.vocab_size, dtype=torch.float64)
                    others = [v for v in self.sets[attr] if v != values[j]]
                    p[others] = (1 - self.q) / len(others)
                    p[values[j]] = self.q
                    probs[b, 3 + j] = p
        return probs.log(), torch.zeros(())


@pytest.fixture(scope="module")
def kb():
    kb = BioD(CFG)
    # The oracle's "uniform over the set" needs every chunk of each diversity set to occur.
    assert all(len(set(kb.blocks[:, a, 1:].flatten().tolist())) == CFG.diversity
               for a in range(CFG.n_attributes))
    return kb


def capacity(kb, q):
    return measure_capacity(Oracle(kb, q), kb, batch_size=64, device=torch.device("cpu"))


def test_perfect_value_predictor_with_uniform_names_stores_everything(kb):
    c = CFG
    result = capacity(kb, q=1.0)
    expected = c.n_people * math.log2(c.name_vocab**c.name_slots / c.n_people) \
        + c.n_people * c.n_attributes * c.value_chunks * math.log2(c.diversity)
    assert result.bit_terms["name"] + result.bit_terms["value"] == pytest.approx(expected, rel=1e-6)
    assert result.bits == pytest.approx(result.information_bits, rel=1e-6)  # R = R_max
    assert result.accuracy == 1.0


def test_uniform_predictors_store_zero_bits(kb):
    result = capacity(kb, q=1.0 / CFG.diversity)
    assert result.bit_terms["value"] == pytest.approx(0.0, abs=1e-6 * result.information_bits)
    # names uniform over the N real names, not over all N0: log2(N0/N) bits per person remain
    uniform_names = CFG.n_people * math.log2(CFG.name_vocab**CFG.name_slots / CFG.n_people)
    assert result.bit_terms["name"] == pytest.approx(uniform_names, rel=1e-6)
    assert kb.bits({"name.name": math.log(CFG.name_vocab**CFG.name_slots), "value.value": 0,
                    "value.first_chunk": 0})["name"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("q", [0.25, 0.5, 0.9])
def test_probability_q_on_the_right_value_gives_log2_d_plus_log2_q_per_chunk(kb, q):
    result = capacity(kb, q=q)
    facts = CFG.n_people * CFG.n_attributes * CFG.value_chunks  # chunks are independent facts
    assert result.bit_terms["value"] / facts == pytest.approx(math.log2(CFG.diversity) + math.log2(q), rel=1e-6)


def test_real_models_never_exceed_r_max(kb):
    from moelab.config import ModelConfig
    from moelab.models import Transformer

    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_model=16, n_heads=2, d_ff=32), len(kb.vocab))
    result = measure_capacity(model, kb, batch_size=64, device=torch.device("cpu"))
    assert result.bits < result.information_bits
    assert result.bit_terms["value"] < 0  # a random model is worse than uniform: never clipped

