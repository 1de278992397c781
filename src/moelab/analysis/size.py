"""Size models: log10 total parameters predicted from a knowledge score (docs/science.md §6).

A size model regresses y = log10(total parameters in billions) on a knowledge measure and the
covariates held-out rows showed matter, on one point per weights group and mode (the group's
best row in reasoning mode and in non-reasoning mode):

    measure     "accuracy" (correct / all questions, in points), "logit": its log-odds (a model
                near the top of the scale gains less per decade), or "attempted": accuracy among the questions
                attempted, correct / (correct + incorrect), which does not read declining to answer
                as not knowing. incorrect = correct - Omniscience Index (AA: OI = correct -
                incorrect, in points), or hallucination rate x (100 - correct) without the index.
    attempt     the attempt rate (correct + incorrect) / 100 as a covariate
    reasoning   the row's mode (1 for reasoning/thinking)
    date        release date, in years since 2025-01-01
    sparsity    log10 of the active fraction (0 for dense)
    developer   a random intercept per developer (RandomInterceptFit, REML); without it, OLS

Every candidate is scored the way it would be used: leave one developer out (an unseen lab: its
intercept unknown, so the interval carries the spread of lab effects) and time splits (fit on
models released before a date, predict the later ones; their labs may be known). The survey
chooses the candidate with the lowest mean of the two median errors; its interval width is then
calibrated on the leave-one-developer-out residuals so that 80% intervals cover 80% there, and
the time splits check that calibration on data it never saw.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from moelab.analysis.fit import Estimate, LinearFit, NotFittedError, RandomInterceptFit, t_quantile

LEVEL = 0.8
EPOCH = date(2025, 1, 1)
TIME_SPLITS = (date(2025, 7, 1), date(2025, 10, 1))  # about the 33rd and 50th percentiles of AA's open releases
MIN_POINTS = 10  # a fit needs at least this many points
MIN_TEST = 5  # a time split needs at least this many later points


@dataclass(frozen=True)
class SizePoint:
    """One weights group in one mode: what a size model fits on or predicts."""

    model: str
    developer: str
    total_b: float | None
    active_b: float | None
    accuracy_pct: float
    attempted_pct: float | None  # accuracy among attempted questions
    attempt_rate: float | None  # share of questions attempted, 0-1
    reasoning: bool
    released: date | None
    line: int | None = None

    @property
    def years(self) -> float | None:
        return None if self.released is None else (self.released - EPOCH).days / 365.25

    @property
    def log_active_fraction(self) -> float | None:
        if self.total_b is None or self.active_b is None:
            return None
        return math.log10(self.active_b / self.total_b)


def logit(accuracy_pct: float) -> float:
    """Log-odds of an accuracy in percent, clipped to [0.5%, 99.5%]."""
    p = min(max(accuracy_pct / 100, 0.005), 0.995)
    return math.log(p / (1 - p))


def attempts(accuracy_pct: float, omniscience_index: float | None, hallucination_pct: float | None) -> float | None:
    """Incorrect answers in points of all questions, from the Omniscience Index or the hallucination rate."""
    if omniscience_index is not None:
        return max(accuracy_pct - omniscience_index, 0.0)
    if hallucination_pct is not None:
        return hallucination_pct * (100 - accuracy_pct) / 100
    return None


def size_point(row) -> SizePoint:
    """A survey ModelRow with an accuracy as a SizePoint."""
    incorrect = attempts(row.accuracy_pct, row.omniscience_index, row.hallucination_rate_pct)
    attempted = None if incorrect is None else row.accuracy_pct + incorrect
    return SizePoint(row.model, row.developer, row.total_b, row.active_b, row.accuracy_pct,
                     100 * row.accuracy_pct / attempted if attempted else None,
                     None if attempted is None else attempted / 100, row.reasoning, row.release_date, row.line)


@dataclass(frozen=True)
class Candidate:
    measure: str = "accuracy"  # "accuracy", "logit" or "attempted"
    attempt: bool = False
    reasoning: bool = True
    date: bool = False
    sparsity: bool = False
    developer: bool = False

    @property
    def name(self) -> str:
        parts = [self.measure] + [f for f in ("attempt", "reasoning", "date", "sparsity") if getattr(self, f)]
        return " + ".join(parts) + (" | developer" if self.developer else "")

    def features(self, p: SizePoint) -> list[float] | None:
        """The predictors of a point, or None if it lacks one."""
        values = [{"accuracy": p.accuracy_pct, "logit": logit(p.accuracy_pct),
                   "attempted": p.attempted_pct}[self.measure]]
        if self.attempt:
            values.append(p.attempt_rate)
        if self.reasoning:
            values.append(float(p.reasoning))
        if self.date:
            values.append(p.years)
        if self.sparsity:
            values.append(p.log_active_fraction)
        return None if any(v is None for v in values) else [float(v) for v in values]

    def usable(self, p: SizePoint) -> bool:
        return self.features(p) is not None


def candidates(points: list[SizePoint]) -> list[Candidate]:
    """Every combination the points support: covariates that never vary are left out."""
    has = {
        "attempted": any(p.attempted_pct is not None for p in points),
        "date": sum(p.released is not None for p in points) >= MIN_POINTS,
        "reasoning": len({p.reasoning for p in points}) > 1,
        "sparsity": len({p.log_active_fraction for p in points if p.log_active_fraction is not None}) > 1,
    }
    out = []
    for measure, attempt, date_, sparsity, developer in itertools.product(
            ("accuracy", "logit", "attempted"), (False, True), (False, True), (False, True), (False, True)):
        if (measure == "attempted" or attempt) and not has["attempted"]:
            continue
        if (date_ and not has["date"]) or (sparsity and not has["sparsity"]):
            continue
        out.append(Candidate(measure, attempt, has["reasoning"], date_, sparsity, developer))
    return out


@dataclass(frozen=True)
class Scales:
    """Interval widening factors: for labs a fit never saw, and for labs it saw."""

    unseen: float = 1.0
    known: float = 1.0


@dataclass
class SizeModel:
    """A size model in scikit-learn's conventions: `SizeModel(candidate, scales)` holds the choices
    (the predictors; how much to widen intervals, one factor for labs the fit never saw and one
    for labs it saw, since a known lab's later models drift from its estimated effect; 1 until
    calibrated), `fit(points)` returns self and makes every fitted attribute (`points_`, `fit_`),
    `predict` returns log10 total (billions) and `predict_interval` its interval."""

    candidate: Candidate
    scales: Scales = field(default_factory=Scales)

    def fit(self, points: list[SizePoint]) -> SizeModel:
        points_ = [p for p in points if p.total_b is not None and self.candidate.usable(p)]
        if len(points_) < MIN_POINTS:
            raise ValueError(f"{len(points_)} usable points; a size model needs {MIN_POINTS}")
        X = np.array([self.candidate.features(p) for p in points_])
        y = np.log10([p.total_b for p in points_])
        if self.candidate.developer:
            self.fit_ = RandomInterceptFit().fit(X, y, [p.developer for p in points_])
        else:
            self.fit_ = LinearFit().fit(X, y)
        self.points_ = points_
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "fit_"):
            raise NotFittedError(f"SizeModel {self.candidate.name} is not fitted yet; call fit(points) first")

    def _centre_and_interval(self, points: list[SizePoint], known_developers: bool,
                             level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._check_fitted()
        X = np.array([self.candidate.features(p) for p in points], dtype=float)
        if isinstance(self.fit_, RandomInterceptFit):
            groups = [p.developer for p in points] if known_developers else None
            centre, low, high = self.fit_.predict(X, groups, level)
        else:
            centre = self.fit_.predict(X)
            low, high = self.fit_.prediction_interval(X, level)
        seen = {p.developer for p in self.points_}
        scale = np.array([self.scales.known if known_developers and p.developer in seen else self.scales.unseen
                          for p in points])
        return centre, centre - scale * (centre - low), centre + scale * (high - centre)

    def predict(self, points: list[SizePoint], known_developers: bool = True) -> np.ndarray:
        """log10 total (billions) per point; with `known_developers` false every developer is
        treated as unseen (leave-one-developer-out does this by construction)."""
        return self._centre_and_interval(points, known_developers, LEVEL)[0]

    def predict_interval(self, points: list[SizePoint], known_developers: bool = True,
                         level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of log10 total per point at `level`, widened by `scales`."""
        _, low, high = self._centre_and_interval(points, known_developers, level)
        return low, high

    def coefficients(self, level: float = 0.95) -> dict[str, Estimate]:
        """Each predictor's coefficient (decades of total per unit) with its interval."""
        self._check_fitted()
        names = self.candidate.name.split(" | ")[0].split(" + ")
        if isinstance(self.fit_, RandomInterceptFit):
            t = t_quantile(level, self.fit_.dof_)
            se = np.sqrt(np.diag(self.fit_.cov_))
            return {n: Estimate(float(c), float(c - t * e), float(c + t * e), level)
                    for n, c, e in zip(names, self.fit_.coef_[1:], se[1:])}
        return {n: self.fit_.coef_interval(i + 1, level) for i, n in enumerate(names)}

    def extrapolation(self, estimate_b: float) -> float:
        """Decades outside the totals the fit saw (0 inside)."""
        self._check_fitted()
        low, high = min(p.total_b for p in self.points_), max(p.total_b for p in self.points_)
        if estimate_b > high:
            return math.log10(estimate_b / high)
        if estimate_b < low:
            return math.log10(low / estimate_b)
        return 0.0


@dataclass
class Scores:
    """Held-out errors of one validation: |log10 predicted / true| per point, and coverage."""

    errors: list[float] = field(default_factory=list)
    covered: list[bool] = field(default_factory=list)
    z: list[float] = field(default_factory=list)  # error over the interval's half-width, signed

    def add(self, truth: float, centre: float, low: float, high: float) -> None:
        self.errors.append(abs(centre - truth))
        self.covered.append(low <= truth <= high)
        half = (high - low) / 2
        self.z.append((truth - centre) / half if half > 0 else math.inf)

    @property
    def n(self) -> int:
        return len(self.errors)

    def summary(self) -> dict:
        if not self.errors:
            return {"n": 0, "median_abs_error_decades": math.nan, "within_2x": math.nan, "coverage": math.nan}
        e = np.array(self.errors)
        return {"n": len(e), "median_abs_error_decades": float(np.median(e)),
                "within_2x": float(np.mean(e <= math.log10(2))), "coverage": float(np.mean(self.covered))}


def leave_one_developer_out(candidate: Candidate, points: list[SizePoint], scales: Scales = Scales()) -> Scores:
    scores = Scores()
    for developer in sorted({p.developer for p in points}):
        test = [p for p in points if p.developer == developer]
        try:
            model = SizeModel(candidate, scales).fit([p for p in points if p.developer != developer])
        except ValueError:
            continue
        centre = model.predict(test, known_developers=False)
        for p, c, lo, hi in zip(test, centre, *model.predict_interval(test, known_developers=False)):
            scores.add(math.log10(p.total_b), c, lo, hi)
    return scores


def time_split(candidate: Candidate, points: list[SizePoint], cut: date, scales: Scales = Scales()) -> Scores:
    """Fit on points released before `cut`, predict the ones released on or after it."""
    scores = Scores()
    train = [p for p in points if p.released is not None and p.released < cut]
    test = [p for p in points if p.released is not None and p.released >= cut]
    if len(test) < MIN_TEST:
        return scores
    try:
        model = SizeModel(candidate, scales).fit(train)
    except ValueError:
        return scores
    for p, c, lo, hi in zip(test, model.predict(test), *model.predict_interval(test)):
        scores.add(math.log10(p.total_b), c, lo, hi)
    return scores


@dataclass
class CandidateResult:
    candidate: Candidate
    lodo: dict
    time: dict  # the time splits pooled
    time_by_cut: dict[str, dict]

    @property
    def score(self) -> float:
        """What the choice minimises: the mean of the two validations' median errors."""
        values = [v["median_abs_error_decades"] for v in (self.lodo, self.time) if v["n"]]
        return float(np.mean(values)) if values else math.inf


def evaluate(candidate: Candidate, points: list[SizePoint], scales: Scales = Scales()) -> CandidateResult:
    lodo = leave_one_developer_out(candidate, points, scales)
    pooled, by_cut = Scores(), {}
    for cut in TIME_SPLITS:
        s = time_split(candidate, points, cut, scales)
        by_cut[cut.isoformat()] = s.summary()
        pooled.errors += s.errors
        pooled.covered += s.covered
        pooled.z += s.z
    return CandidateResult(candidate, lodo.summary(), pooled.summary(), by_cut)


def calibration_scales(candidate: Candidate, points: list[SizePoint], level: float = LEVEL) -> Scales:
    """Widening factors (never below 1) that make `level` of held-out points fall inside: for
    unseen labs from leave-one-developer-out, for known labs from the time splits' predictions of
    labs the earlier fit saw (an unseen lab in a time split is scored at the unseen width). The
    coverages printed for the chosen model at these widths are therefore in-sample for the
    widths; `moelab survey --predict` on rows the fit never saw is the out-of-sample check
    (docs/results.md, "Survey")."""
    def factor(z: list[float]) -> float:
        z = np.abs(np.array(z, dtype=float))
        z = z[np.isfinite(z)]
        return max(1.0, float(np.quantile(z, level))) if len(z) >= MIN_TEST else 1.0

    unseen = factor(leave_one_developer_out(candidate, points).z)
    known_z = []
    for cut in TIME_SPLITS:
        earlier = {p.developer for p in points if p.released is not None and p.released < cut}
        later = [p for p in points if p.released is not None and p.released >= cut]
        scores = time_split(candidate, points, cut)
        known_z += [z for p, z in zip(later, scores.z) if p.developer in earlier]
    return Scales(unseen=unseen, known=factor(known_z))


@dataclass
class SizeSelection:
    """Every candidate's validation, the chosen one fitted on all points and calibrated."""

    results: list[CandidateResult]
    chosen: SizeModel
    chosen_result: CandidateResult  # the chosen candidate re-validated with its calibrated width
    fallbacks: dict[Candidate, SizeModel] = field(default_factory=dict)  # fitted by `fallback`, once each


def select(points: list[SizePoint]) -> SizeSelection | None:
    """Validate every candidate on the points they all can use; choose the lowest score."""
    points = [p for p in points if p.total_b is not None]
    pool = candidates(points)
    common = [p for p in points if all(c.usable(p) for c in pool)]
    if len({p.developer for p in common}) < 3 or len(common) < MIN_POINTS:
        return None
    results = [evaluate(c, common) for c in pool]
    results = [r for r in results if r.lodo["n"]]
    if not results:
        return None
    best = min(results, key=lambda r: r.score)
    scales = calibration_scales(best.candidate, common)
    chosen = SizeModel(best.candidate, scales).fit(points)
    return SizeSelection(results, chosen, evaluate(best.candidate, common, scales))


def fallback(selection: SizeSelection, point: SizePoint, points: list[SizePoint]) -> SizeModel | None:
    """The chosen model if the point has its features, else the best-validated candidate it
    has (a closed model without a release date, say), fitted and calibrated the same way."""
    if selection.chosen.candidate.usable(point):
        return selection.chosen
    for r in sorted(selection.results, key=lambda r: r.score):
        if r.candidate.usable(point):
            if r.candidate not in selection.fallbacks:
                common = [p for p in points if p.total_b is not None and r.candidate.usable(p)]
                selection.fallbacks[r.candidate] = SizeModel(r.candidate, selection.chosen.scales).fit(common)
            return selection.fallbacks[r.candidate]
    return None
