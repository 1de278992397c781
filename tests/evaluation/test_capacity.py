"""The bit estimator (SCIENCE.md §3, identities of §5.1), checked through the whole probe pipeline.

An oracle "model" that knows the knowledge base (evaluation/identities.py) emits exact next-token
distributions, so the bits the pipeline reports can be compared with the closed forms to 1e-6.
"""

import math

import pytest
import torch

from moelab.evaluation import measure_capacity
from moelab.evaluation.identities import IDENTITY_DATA, identity_table, oracle_capacity
from moelab.knowledge import BioD

CFG = IDENTITY_DATA


@pytest.fixture(scope="module")
def kb():
    kb = BioD(CFG)
    # The oracle's "uniform over the set" needs every chunk of each diversity set to occur.
    assert all(len(set(kb.blocks[:, a, 1:].flatten().tolist())) == CFG.diversity
               for a in range(CFG.n_attributes))
    return kb


def capacity(kb, q):
    return oracle_capacity(kb, q)


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


def test_a_random_model_scores_below_zero_value_bits_never_clipped(kb):
    from moelab.config import ModelConfig
    from moelab.models import Transformer

    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_model=16, n_heads=2, d_ff=32), len(kb.vocab))
    result = measure_capacity(model, kb, batch_size=64, device=torch.device("cpu"))
    assert result.bit_terms["value"] < 0  # worse than uniform over the diversity set


@pytest.mark.slow
def test_a_trained_runs_bits_follow_the_formula_from_its_span_losses(trained_run):
    """bits = N log2(N0 / e^p1) + N K log2(D^C / e^p2) + K D log2(T^L / (D e^p3)), recomputed by
    hand from the run's recorded summed losses (nats)."""
    cfg, _, m = trained_run
    d, nats = cfg.data, m["losses_nats"]
    N, K = d.n_people, d.n_attributes
    p1, p2, p3 = nats["name.name"], nats["value.value"], nats["value.first_chunk"]
    name = N * (math.log2(d.name_vocab ** d.name_slots) - p1 / math.log(2))
    value = N * K * (d.value_chunks * math.log2(d.diversity) - p2 / math.log(2))
    diversity = K * d.diversity * (math.log2(d.value_vocab ** d.chunk_length / d.diversity) - p3 / math.log(2))
    assert m["bit_terms"] == pytest.approx({"name": name, "value": value, "diversity": diversity}, rel=1e-9)
    assert m["bits"] == pytest.approx(name + value + diversity, rel=1e-9)
    assert 0 < m["bits"] < m["information_bits"] and m["bits_per_param"] < m["r_max"]



def test_identity_table_holds_every_identity():
    rows = identity_table()
    assert len(rows) == 7
    assert all(r["relative_error"] < 1e-6 for r in rows), rows
