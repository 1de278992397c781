"""Where routing by token id can put a knowledge base's facts."""

import torch

from moelab.evaluation.routing import scored_inputs, token_id_reach
from moelab.knowledge import build_knowledge_base
from moelab.models.moe import hash_experts
from tests.conftest import small_config


def test_scored_inputs_are_the_tokens_before_every_scored_position_once():
    kb = build_knowledge_base(small_config().data)
    probes, inputs = kb.probes(), scored_inputs(kb)
    assert set(inputs) == {name.partition(".")[0] for name in kb.loss_spans}
    for probe, ids in inputs.items():
        scored = torch.zeros_like(probes[probe].tokens, dtype=torch.bool)
        for name in kb.loss_spans:
            if name.startswith(probe + "."):
                scored |= probes[probe].spans[name.partition(".")[2]]
        rows, cols = scored.nonzero(as_tuple=True)
        assert (cols > 0).all()  # a scored token always has one before it
        assert torch.equal(ids, probes[probe].tokens[rows, cols - 1])


def test_token_id_routing_reaches_no_more_experts_than_contexts():
    kb = build_knowledge_base(small_config().data)
    inputs = scored_inputs(kb)["value"]
    contexts = int(inputs.unique().numel())
    one = token_id_reach(kb, 1)["value"]
    assert one == {"contexts": contexts, "hash_experts": 1, "hash_largest_share": 1.0}
    many = token_id_reach(kb, 4 * contexts)["value"]  # more experts than contexts: most never see a fact
    assert many["hash_experts"] == hash_experts(inputs.unique(), 4 * contexts).unique().numel() <= contexts
    busiest = torch.bincount(hash_experts(inputs, 4 * contexts)[:, 0]).max() / len(inputs)
    assert abs(many["hash_largest_share"] - float(busiest)) < 1e-6


def test_fact_routing_of_token_id_routing_is_deterministic_and_counts_its_experts():
    from moelab.evaluation.routing import fact_routing
    from moelab.runs.weights import build

    cfg = small_config(n_experts=8, top_k=1, router="hash")
    kb, model = build(cfg, torch.device("cpu"))
    layers = fact_routing(model, kb, 64, torch.device("cpu"))
    reach = token_id_reach(kb, 8)["value"]
    assert len(layers) == cfg.model.n_layers
    for layer in layers:
        assert layer["token_determinism"] == 1.0 and layer["experts_used"] == reach["hash_experts"]
        assert 1.0 <= layer["effective_experts"] <= layer["experts_used"]


def test_fact_routing_measures_a_split_of_one_context_by_person(monkeypatch):
    """Rows of even index go to expert 0, odd ones to expert 1: each input token's predictions
    split between two experts, so determinism is the larger half's share, token by token."""
    from moelab.evaluation import routing
    from moelab.runs.weights import build

    kb, model = build(small_config(n_experts=4, top_k=1), torch.device("cpu"))
    monkeypatch.setattr(routing, "top1_experts", lambda model, rows: [
        (torch.arange(len(rows)).view(-1, 1) % 2).expand_as(rows).reshape(-1)])
    probe = kb.probes()["value"]
    mask = probe.spans["value"][:, 1:]
    inputs = probe.tokens[:, :-1][mask]
    parity = (torch.arange(len(probe.tokens)).view(-1, 1) % 2).expand_as(mask)[mask]
    expected = sum(max(int(((inputs == t) & (parity == p)).sum()) for p in (0, 1)) for t in inputs.unique())
    (layer,) = routing.fact_routing(model, kb, len(probe.tokens), torch.device("cpu"))  # one batch: rows keep parity
    assert abs(layer["token_determinism"] - expected / len(inputs)) < 1e-9 and layer["token_determinism"] < 1
    assert layer["experts_used"] == 2 and abs(layer["effective_experts"] - 2.0) < 0.05
