"""What a probe sends: padded prompts and the passages BM25 keeps."""

import pytest

from moelab.errors import MoelabError
from moelab.probe.prompts import padded_prompt, retrieve
from tests.probe.test_runner import capital_task


def test_padded_prompts_reach_the_length_and_place_the_needle():
    q = capital_task().questions[0]
    pool = capital_task().distractors
    for depth, where in ((0.0, 0), (1.0, -2)):
        passages = padded_prompt(q, 100, depth, pool, seed=0).split("\n\n")
        assert passages[where] == q.needle and passages[-1] == q.question
        assert 100 <= sum(len(p.split()) for p in passages) < 100 + 7
    assert padded_prompt(q, 100, 0.5, pool, 0) == padded_prompt(q, 100, 0.5, pool, 0)
    with pytest.raises(MoelabError, match="distractor"):
        padded_prompt(q, 100, 0.5, [q.needle], 0)


def test_the_retriever_finds_the_needle_among_distractors():
    passages = [f"Filler sentence number {i} says nothing about anything." for i in range(30)]
    passages.insert(17, "The capital of Kenya is Nairobi.")
    kept = retrieve(passages, "Capital of Kenya?", 3)
    assert "The capital of Kenya is Nairobi." in kept and len(kept) == 3
    assert kept == [p for p in passages if p in kept]  # original order kept
