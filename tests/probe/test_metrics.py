import math

import pytest

from moelab.probe.metrics import f_score, grade_metrics, wilson

C, I, P, A = "correct", "incorrect", "partial", "not_attempted"


def test_metrics_of_a_hand_computed_grade_table():
    grades = [C] * 5 + [I] * 3 + [P] + [A]
    m = grade_metrics(grades, output_tokens=[4] * 10, reasoning_tokens=[None] * 10)
    assert (m["n"], m["correct"], m["incorrect"], m["partial"], m["not_attempted"]) == (10, 5, 3, 1, 1)
    assert m["accuracy"] == 0.5
    assert m["omniscience_index"] == pytest.approx(20.0)  # 100 (5 - 3) / 10
    assert m["hallucination_rate"] == pytest.approx(0.6)  # 3 / (3 + 1 + 1)
    assert m["attempted_rate"] == pytest.approx(0.9)  # (5 + 3 + 1) / 10
    assert m["accuracy_given_attempted"] == pytest.approx(0.625)  # 5 / 8
    assert m["f_score"] == pytest.approx(2 * 0.5 * 0.625 / 1.125)  # 0.5556
    assert m["output_tokens_per_question"] == 4.0 and m["output_tokens_per_correct"] == 8.0
    assert m["accuracy_per_1k_output_tokens"] == pytest.approx(125.0)
    assert m["reasoning_tokens_per_question"] is None
    # OI interval: per-sample scores +1 x5, -1 x3, 0 x2 -> sd 0.9189; 1.96 * 91.89 / sqrt(10) = 56.96
    low, high = m["omniscience_index_interval"]
    assert (low, high) == pytest.approx((20 - 56.96, 20 + 56.96), abs=0.01)
    assert m["f_score_interval"][0] < m["f_score"] < m["f_score_interval"][1]


def test_wilson_interval_known_values():
    assert wilson(5, 10) == pytest.approx([0.2366, 0.7634], abs=1e-4)
    assert wilson(0, 10) == pytest.approx([0.0, 0.2775], abs=1e-4)
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_edge_cases_all_abstain_and_all_correct():
    m = grade_metrics([A] * 4)
    assert m["accuracy"] == 0 and m["omniscience_index"] == 0 and m["hallucination_rate"] == 0
    assert math.isnan(m["accuracy_given_attempted"]) and m["f_score"] == 0.0
    m = grade_metrics([C] * 4, reasoning_tokens=[10, None, 30, None])
    assert m["omniscience_index"] == 100 and m["f_score"] == 1.0 and math.isnan(m["hallucination_rate"])
    assert m["reasoning_tokens_per_question"] == 20.0  # over the answers that report them
    assert math.isnan(f_score(0, 0, 0))


def test_unknown_grades_are_refused():
    with pytest.raises(ValueError, match="unknown grade"):
        grade_metrics([C, "maybe"])
