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
