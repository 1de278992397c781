"""Probe metrics: pure functions of per-sample grades (and token counts).

With c, i, p, a the counts of correct, incorrect, partial and not-attempted answers, N their sum:
    accuracy                  c / N
    omniscience index         100 (c - i) / N           (AA-Omniscience; partial and abstention score 0)
    hallucination rate        i / (i + p + a)           (AA-Omniscience: wrong answers among non-correct ones)
    attempted rate            (c + i + p) / N
    accuracy given attempted  c / (c + i)               (SimpleQA)
    f-score                   harmonic mean of c / N and c / (c + i)   (SimpleQA)
Effort against difficulty (`effort`): over questions with a difficulty, the least-squares slope
of tokens spent (output plus reasoning) against difficulty and Spearman's rank correlation
between the two, each with a percentile bootstrap interval over questions: does a model spend
more tokens only where questions are harder?

Rates carry 95% Wilson intervals; the f-score a percentile bootstrap over samples. The
omniscience index is a difference of two proportions of one multinomial, c/N - i/N; its interval
comes from its components (Newcombe's square-and-add, "MOVER", on the two Wilson intervals, with
the multinomial correlation -sqrt(p_c p_i / ((1 - p_c)(1 - p_i)))), so it stays within
[-100, 100] and is not degenerate when every answer is wrong.
"""

from __future__ import annotations

import math

import numpy as np

from moelab.analysis.fit import bootstrap, spearman
from moelab.intervals import LEVEL, omniscience_interval, wilson
from moelab.probe.grading import CORRECT, GRADES, INCORRECT


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def f_score(c: int, i: int, n: int) -> float:
    """SimpleQA's F: the harmonic mean of accuracy c/N and accuracy given attempted c/(c+i)."""
    if n == 0:
        return math.nan
    if c == 0:
        return 0.0
    overall, given_attempted = c / n, c / (c + i)
    return 2 * overall * given_attempted / (overall + given_attempted)


def _f_score_of(is_correct: np.ndarray, is_incorrect: np.ndarray) -> np.ndarray:
    """f_score of each row of [B, n] indicator arrays (vectorised for the bootstrap)."""
    c, i, n = is_correct.sum(-1), is_incorrect.sum(-1), is_correct.shape[-1]
    with np.errstate(all="ignore"):
        overall, given = c / n, c / (c + i)
        f = 2 * overall * given / (overall + given)
    return np.where(c == 0, 0.0, f)


DIFFICULTY_LEVELS = {"easy": 1.0, "medium": 2.0, "hard": 3.0}  # labels with an order


def difficulty_value(difficulty: float | str | None) -> float | None:
    """A difficulty as a number: numbers (and numerals) as they are, easy/medium/hard as 1/2/3,
    other labels None."""
    if isinstance(difficulty, int | float) and not isinstance(difficulty, bool):
        return float(difficulty)
    if difficulty is None:
        return None
    try:
        value = float(difficulty)
        return value if math.isfinite(value) else None
    except ValueError:
        return DIFFICULTY_LEVELS.get(str(difficulty).lower())


def level_order(level: float | str) -> tuple:
    """The sort key of difficulty levels: ordered ones by value (labels tied with numbers after
    them), then the other labels alphabetically. JSON files keep keys sorted as text, so readers
    order `by_difficulty` with this."""
    value = difficulty_value(level)
    return (value is None, value or 0, str(level))


def _slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise least-squares slope of y on x, [B, n] -> [B] (nan where x is constant)."""
    xc = x - x.mean(-1, keepdims=True)
    with np.errstate(all="ignore"):
        return (xc * (y - y.mean(-1, keepdims=True))).sum(-1) / (xc * xc).sum(-1)


def effort(difficulties: list, tokens: list[float], n_boot: int = 1000) -> dict | None:
    """Slope of tokens against difficulty and their rank correlation, with bootstrap intervals,
    over the questions whose difficulty has an order; None when fewer than two levels do."""
    values = [difficulty_value(d) for d in difficulties]
    pairs = [(v, t) for v, t in zip(values, tokens) if v is not None]
    if len({v for v, _ in pairs}) < 2:
        return None
    x, y = (np.array(v, dtype=float) for v in zip(*pairs))
    slope, rho = bootstrap(_slope, [x, y], n_boot=n_boot, level=LEVEL), spearman(x, y, n_boot=n_boot, level=LEVEL)
    return {"questions": len(pairs), "tokens_per_difficulty": slope.value, "tokens_per_difficulty_interval": [slope.low, slope.high],
            "rank_correlation": rho.value, "rank_correlation_interval": [rho.low, rho.high]}


def grade_metrics(grades: list[str], output_tokens: list[int] | None = None,
                  reasoning_tokens: list[int | None] | None = None, n_boot: int = 1000) -> dict:
    """Every metric of a list of grades; token metrics when counts are given (None where unknown)."""
    n = len(grades)
    c, i, p, a = (sum(g == kind for g in grades) for kind in GRADES)
    if c + i + p + a != n:
        raise ValueError(f"unknown grade(s): {sorted(set(grades) - set(GRADES))}")
    oi = 100 * (c - i) / n if n else math.nan
    out = {
        "n": n, "correct": c, "incorrect": i, "partial": p, "not_attempted": a,
        "accuracy": _ratio(c, n), "accuracy_interval": wilson(c, n),
        "omniscience_index": oi, "omniscience_index_interval": omniscience_interval(c, i, n),
        "hallucination_rate": _ratio(i, i + p + a), "hallucination_rate_interval": wilson(i, i + p + a),
        "attempted_rate": _ratio(c + i + p, n), "attempted_rate_interval": wilson(c + i + p, n),
        "accuracy_given_attempted": _ratio(c, c + i), "accuracy_given_attempted_interval": wilson(c, c + i),
        "f_score": f_score(c, i, n),
    }
    if n:
        columns = [np.array([g == CORRECT for g in grades]), np.array([g == INCORRECT for g in grades])]
        e = bootstrap(_f_score_of, columns, n_boot=n_boot, level=LEVEL)
        out["f_score_interval"] = [e.low, e.high]
    else:
        out["f_score_interval"] = [math.nan, math.nan]
    if output_tokens is not None:
        total = float(sum(output_tokens))
        out["output_tokens_per_question"] = _ratio(total, n)
        out["output_tokens_per_correct"] = _ratio(total, c)
        if n:  # percentile bootstrap over questions
            spent, right = np.array(output_tokens, dtype=float), np.array([g == CORRECT for g in grades], dtype=float)
            per_question = bootstrap(lambda t: t.mean(-1), [spent], n_boot=n_boot, level=LEVEL)
            out["output_tokens_per_question_interval"] = [per_question.low, per_question.high]
            if c:
                per_correct = bootstrap(lambda t, r: t.sum(-1) / r.sum(-1), [spent, right], n_boot=n_boot, level=LEVEL)
                out["output_tokens_per_correct_interval"] = [per_correct.low, per_correct.high]
        out["accuracy_per_1k_output_tokens"] = _ratio(out["accuracy"], out["output_tokens_per_question"] / 1000)
    reported = [r for r in (reasoning_tokens or []) if r is not None]
    out["reasoning_tokens_per_question"] = _ratio(float(sum(reported)), len(reported)) if reported else None
    if reported:
        per_question = bootstrap(lambda t: t.mean(-1), [np.array(reported, dtype=float)], n_boot=n_boot, level=LEVEL)
        out["reasoning_tokens_per_question_interval"] = [per_question.low, per_question.high]
    return out
