"""Abstention: training rows about people not in the base, held-out invented people, the
Omniscience Index and the threshold baseline."""

import dataclasses

import numpy as np
import pytest

from moelab.config import DataConfig, resolve
from moelab.evaluation.abstention import selective_curve
from moelab.knowledge import build_knowledge_base
from moelab.knowledge.biod import UNKNOWN
from tests.conftest import small_config


def kb_with_unknowns(**kw):
    return build_knowledge_base(DataConfig(**({"n_people": 300, "unknown_fraction": 0.25} | kw)))


def test_abstention_rows_never_name_a_real_or_held_out_person():
    kb = kb_with_unknowns()
    real = {tuple(kb.name(p)) for p in range(kb.n_people)}
    held = {tuple(n) for n in kb.held_out_names}
    rng = np.random.default_rng(0)
    unknown = kb.vocab.ids[UNKNOWN]
    seen = set()
    for _ in range(50):
        batch = kb.training_batch(np.full(64, -2), rng)
        names = batch.inputs[:, 1:4].tolist()
        assert all(tuple(n) not in real and tuple(n) not in held for n in names)
        assert (batch.inputs[:, 5:12:2] == unknown).all()  # attr_k <unknown> for every attribute
        seen |= {tuple(n) for n in names}
    assert len(seen) > 1000  # drawn afresh, not a small fixed pool


def test_held_out_invented_people_are_disjoint_from_the_base_and_fixed_by_its_seed():
    kb = kb_with_unknowns()
    real = {tuple(kb.name(p)) for p in range(kb.n_people)}
    held = [tuple(n) for n in kb.held_out_names]
    assert len(set(held)) == len(held) == 200 and not set(held) & real
    assert kb_with_unknowns().held_out_names == kb.held_out_names
    # the real people, their values and the information content do not depend on abstention rows
    plain = build_knowledge_base(DataConfig(n_people=300))
    assert plain.information_bits() == kb.information_bits()
    assert [plain.vocab.decode(plain.answer(p, 1)) for p in range(300)] == \
        [kb.vocab.decode(kb.answer(p, 1)) for p in range(300)]
    assert kb.unknown_per_exposure == 100 and plain.unknown_per_exposure == 0


def test_the_threshold_curve_never_gains_coverage_as_the_threshold_rises():
    rng = np.random.default_rng(0)
    conf = rng.random(500)
    curve = selective_curve(conf, rng.random(500) < conf, rng.random(200) * 0.5)
    coverage = [r["coverage"] for r in curve]
    assert coverage[0] == 1.0 and coverage[-1] == 0.0
    assert all(a >= b for a, b in zip(coverage, coverage[1:]))
    assert [r["threshold"] for r in curve] == sorted(r["threshold"] for r in curve)
    # confident answers are the right ones here, so answering fewer raises accuracy
    assert curve[len(curve) // 2]["accuracy_answered"] > curve[0]["accuracy_answered"]


@pytest.mark.slow
def test_a_model_trained_with_unknowns_abstains_on_invented_people_and_answers_real_ones(tmp_path):
    from moelab.run import execute

    # a name space (64 x 64) large enough that the people abstention is trained on rarely repeat,
    # so abstaining must mean "not one of the people I know", not "one of the names I was shown"
    plain = small_config()
    cfg = resolve(dataclasses.replace(plain, data=dataclasses.replace(plain.data, unknown_fraction=0.3, name_vocab=64),
                                      train=dataclasses.replace(plain.train, exposures=150)))
    metrics = execute(cfg, tmp_path / "trained")
    a = metrics["abstention"]
    assert a["trained"] and a["invented"]["people"] == 200
    assert a["invented"]["abstained"]["share"] > 0.75  # held-out invented people: abstains (0.86 measured)
    assert a["real"]["correct"]["share"] > 0.9 and a["real"]["abstained"]["share"] < 0.1  # real people: answers
    assert metrics["omniscience_index"] == pytest.approx(a["omniscience_index"])
    low, high = a["omniscience_index_interval"]
    assert low <= a["omniscience_index"] <= high
    assert metrics["unknown_rows_per_exposure"] == round(120 * 0.3 / 0.7)

    untrained = execute(resolve(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, unknown_fraction=0.0))),
                        tmp_path / "plain")["abstention"]
    assert not untrained["trained"] and untrained["invented"]["abstained"]["share"] == 0.0
    assert untrained["hallucination_rate"] > a["hallucination_rate"]
    best = untrained["threshold_best"]
    assert best["omniscience_index"] >= untrained["omniscience_index"]  # t = 0 is one of the thresholds


def test_the_probe_grades_the_abstain_token_as_not_attempted():
    from moelab.probe.grading import CORRECT, NOT_ATTEMPTED, grade
    from moelab.probe.tasks import Question

    real = Question("p0-attr0", "<bos> n1 n2 attr0", "v1 v2", domain="attr0", max_tokens=2)
    invented = Question("x0-attr0", "<bos> n3 n4 attr0", None, domain="attr0", max_tokens=2)
    assert grade(real, "<unknown>") == NOT_ATTEMPTED
    assert grade(invented, "<unknown>") == CORRECT
