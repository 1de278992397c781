import numpy as np
import torch

from moelab.config import DataConfig
from moelab.knowledge import TwoHop, build_knowledge_base

CFG = DataConfig(kind="twohop", graph_nodes=6, graph_hops=2, n_people=100, seed=0)


def parse(kb, row):
    """The permutation listed in a token row, and its (query, answer) pairs."""
    words = kb.vocab.decode(row)
    edges, queries = {}, []
    body, *asked = " ".join(words[1:-1]).split(" ? ")
    for pair in body.split(" , "):
        a, b = pair.split()
        edges[a] = b
    for q in asked:
        u, answer = q.split(" = ")
        queries.append((u, answer))
    return edges, queries


def test_answers_are_two_hops_in_the_prompts_graph():
    kb = build_knowledge_base(CFG)
    assert isinstance(kb, TwoHop) and kb.information_bits() == {} and kb.bits({}) == {}
    batch = kb.training_batch(np.zeros(20), np.random.default_rng(1))
    for inputs, targets in zip(batch.inputs, batch.targets):
        row = inputs.tolist() + [kb.vocab.eos]
        edges, queries = parse(kb, row)
        assert sorted(edges) == sorted(edges.values()) and len(edges) == CFG.graph_nodes  # a permutation
        for u, answer in queries:
            assert edges[edges[u]] == answer
        supervised = targets[targets != -100].tolist()
        assert kb.vocab.decode(supervised) == [a for _, a in queries]  # only the answers are trained


def test_held_out_graphs_come_from_their_own_stream():
    kb = TwoHop(CFG)
    probe = kb.probes()["test"]
    assert torch.equal(probe.tokens, TwoHop(CFG).probes()["test"].tokens)  # deterministic
    assert probe.spans["answer"].sum(1).eq(3).all()  # three answers scored per graph
    train = kb.training_batch(np.zeros(64), np.random.default_rng(CFG.seed)).inputs
    test_prompts = {tuple(r[: train.shape[1] - 8]) for r in probe.tokens.tolist()}
    assert not any(tuple(r[: train.shape[1] - 8]) in test_prompts for r in train.tolist())
    answers = probe.tokens[probe.spans["answer"]]
    counts = torch.bincount(answers - kb.node0, minlength=CFG.graph_nodes)
    assert counts.min() > 0.7 * counts.float().mean()  # answers spread over all nodes
