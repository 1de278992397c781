import math

import pytest

import numpy as np

from moelab.intervals import omniscience_interval, wilson
from moelab.probe.metrics import f_score, grade_metrics

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
    # OI interval by MOVER: Wilson(5/10) = [.2366, .7634], Wilson(3/10) = [.1078, .6032],
    # rho = -sqrt(.5 * .3 / (.5 * .7)) = -.6547; low = .2 - sqrt(.2634^2 + .3032^2 + 2 * .6547 * .2634 * .3032)
    low, high = m["omniscience_index_interval"]
    assert (low, high) == pytest.approx((-31.56, 61.55), abs=0.05)
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


def test_omniscience_interval_stays_in_range_at_the_extremes():
    for c, i, n in ((0, 500, 500), (500, 0, 500), (0, 0, 30), (1, 499, 500)):
        low, high = omniscience_interval(c, i, n)
        assert -100 <= low < high <= 100, (c, i, n)
    assert omniscience_interval(0, 500, 500)[0] == -100 and omniscience_interval(0, 500, 500)[1] > -100


def test_omniscience_interval_covers_at_its_level():
    rng = np.random.default_rng(0)
    for probabilities in ((0.3, 0.5, 0.2), (0.05, 0.9, 0.05), (0.6, 0.1, 0.3)):
        truth = 100 * (probabilities[0] - probabilities[1])
        counts = rng.multinomial(80, probabilities, size=2000)
        covered = np.mean([low <= truth <= high for low, high in
                           (omniscience_interval(int(c), int(i), 80) for c, i, _ in counts)])
        assert 0.93 <= covered <= 0.975, (probabilities, covered)


def test_difficulty_levels_order_the_same_from_labels_numbers_and_json_keys():
    from moelab.probe.metrics import difficulty_value, level_order

    assert [difficulty_value(d) for d in ("easy", "Hard", 2, "2.5", "tricky", None, "nan")] == [1, 3, 2, 2.5, None, None, None]
    assert sorted(["tricky", "hard", "2.5", "easy", "medium", "0"], key=level_order) == [
        "0", "easy", "medium", "2.5", "hard", "tricky"]
