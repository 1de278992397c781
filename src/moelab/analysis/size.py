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
    reasoning   the row's mode (1 for reasoning/thinking); a row whose mode is unknown is
                predicted at the fitted share of reasoning points, its interval carrying the
                mixture's extra spread share (1 - share) b_mode^2
    date        release date in years since 2025-01-01: "linear", "by-score" (a slope that
                changes with the score, so small and large models may drift apart), "hinge" (a
                second slope over the last HINGE_MONTHS before the fit's newest release, a trend
                that can bend); with `halflife_months`, recent points weigh more (weighted least
                squares, weight 2^(-age / halflife))
    developer   "random": a random intercept per developer (RandomInterceptFit, REML); "newest":
                the same fit, each lab's effect then read from its NEWEST_PER_LAB latest points
                only (a lab's knowledge density drifts); "none": OLS
    sparsity    log10 of the active fraction: never known for a closed model, so never used to
                estimate one; offered only to measure the effect (`sparsity_effect`)

Validation is the task the estimator is used for, **rolling origin**: for each month from
ROLLING_START on, fit on every point released before it, predict the points released in the
next HORIZON_MONTHS months. The candidate with the lowest median |log10 error| there is chosen
(its forecasts up to CALIBRATION_MONTHS ahead then calibrate its interval).
The interval is then centre +- t sqrt((s sd)^2 + (r h)^2 + (q d)^2): sd the fit's own predictive
spread, s a factor (one for labs the fit saw, one for unseen labs), h the months between the fit's
newest release and the model's, d the decades the estimate lies above the largest fitted total;
s, r and q are calibrated on the rolling-origin forecasts (`calibrate`), so intervals widen with
the horizon and with extrapolation in size where the forecasts showed they must.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Literal

import numpy as np

from moelab.analysis.fit import Estimate, LinearFit, NotFittedError, RandomInterceptFit, t_quantile

LEVEL = 0.8
EPOCH = date(2025, 1, 1)
ROLLING_START = date(2025, 7, 1)  # the first origin: about a third of AA's open releases lie before it
HORIZON_MONTHS = 3  # what chooses the model: the next three months
CALIBRATION_MONTHS = 12  # what calibrates its widening: estimates are used up to a year after a fit
HORIZON_BANDS = ((0, 1), (1, 2), (2, 3), (3, 6), (6, 12))  # months ahead, as reported
HINGE_MONTHS = 9
HALFLIFE_MONTHS = 12.0
NEWEST_PER_LAB = 3
MONTH_DAYS = 365.25 / 12
MIN_POINTS = 10  # a fit needs at least this many points
MIN_TEST = 5  # fewer held-out points: no summary
# Extra spread (decades, sd) per decade an estimate lies above the largest fitted total, when the
# held-out forecasts hold too few such estimates to calibrate it: at one decade beyond, one sd
# more is a factor 2 (0.3 decades); the misspecification a straight line in the score risks there.
PER_DECADE_PRIOR = 0.3
MIN_FORECASTS = 20  # fewer rolling-origin forecasts: choose and calibrate by leaving one developer out

Measure = Literal["accuracy", "logit", "attempted"]
DateTerm = Literal["none", "linear", "by-score", "hinge"]
DeveloperTerm = Literal["none", "random", "newest"]


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
    reasoning: bool | None  # None: the mode is not known
    released: date | None
    line: int | None = None
    seen: date | None = None  # the score's capture date: the latest the model can have been released

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


def size_point(row, hide_counts: bool = False) -> SizePoint:
    """A survey ModelRow with an accuracy as a SizePoint (without its parameter counts when
    `hide_counts`: what estimating a row's size from its score may use)."""
    incorrect = attempts(row.accuracy_pct, row.omniscience_index, row.hallucination_rate_pct)
    attempted = None if incorrect is None else row.accuracy_pct + incorrect
    try:
        seen = date.fromisoformat(row.as_of.strip())
    except ValueError:
        seen = None
    return SizePoint(row.model, row.developer, None if hide_counts else row.total_b,
                     None if hide_counts else row.active_b, row.accuracy_pct,
                     100 * row.accuracy_pct / attempted if attempted else None,
                     None if attempted is None else attempted / 100, row.reasoning, row.release_date, row.line, seen)


def months_between(start: date, end: date) -> float:
    return (end - start).days / MONTH_DAYS


def add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True)
class Candidate:
    """What a size model uses (module docstring); `name` spells it out."""

    measure: Measure = "accuracy"
    attempt: bool = False
    reasoning: bool = True
    date: DateTerm = "none"
    halflife_months: float | None = None
    developer: DeveloperTerm = "none"
    sparsity: bool = False

    def __post_init__(self):
        if self.halflife_months is not None and self.developer != "none":
            raise ValueError("recency weights are fitted by weighted least squares: use them without a developer effect")

    @property
    def name(self) -> str:
        parts = [self.measure] + [f for f in ("attempt", "reasoning") if getattr(self, f)]
        parts += {"none": [], "linear": ["date"], "by-score": ["date", "date x score"],
                  "hinge": ["date", "recent date"]}[self.date]
        parts += ["sparsity"] if self.sparsity else []
        text = " + ".join(parts)
        if self.halflife_months is not None:
            text += f", recent x2 per {self.halflife_months:g} months"
        return text + {"none": "", "random": " | developer", "newest": " | developer (newest)"}[self.developer]

    @property
    def columns(self) -> list[str]:
        """The names of the predictors, in the order of the design matrix."""
        return self.name.split(" | ")[0].split(", ")[0].split(" + ")

    def score(self, p: SizePoint) -> float | None:
        return {"accuracy": p.accuracy_pct, "logit": logit(p.accuracy_pct), "attempted": p.attempted_pct}[self.measure]

    def usable(self, p: SizePoint) -> bool:
        """Whether the point has what a prediction needs (an unknown mode is allowed)."""
        needs = [self.score(p)]
        needs += [p.attempt_rate] if self.attempt else []
        needs += [p.released] if self.date != "none" else []
        needs += [p.log_active_fraction] if self.sparsity else []
        return all(v is not None for v in needs)

    def fittable(self, p: SizePoint) -> bool:
        """Whether a fit can use the point: usable, with a total and, when the mode is a
        predictor, a known mode."""
        return self.usable(p) and p.total_b is not None and (p.reasoning is not None or not self.reasoning)


def candidates(points: list[SizePoint]) -> list[Candidate]:
    """Every combination the points support, without sparsity (closed models have no active
    count): covariates that never vary are left out."""
    has = {
        "attempted": any(p.attempted_pct is not None for p in points),
        "date": sum(p.released is not None for p in points) >= MIN_POINTS,
        "reasoning": len({p.reasoning for p in points if p.reasoning is not None}) > 1,
    }
    out = []
    weighting = [("none", None), ("random", None), ("newest", None), ("none", HALFLIFE_MONTHS)]
    for measure, attempt, date_, (developer, halflife) in itertools.product(
            ("accuracy", "logit", "attempted"), (False, True), ("none", "linear", "by-score", "hinge"), weighting):
        if (measure == "attempted" or attempt) and not has["attempted"]:
            continue
        if (date_ != "none" or halflife is not None) and not has["date"]:
            continue
        out.append(Candidate(measure, attempt, has["reasoning"], date_, halflife, developer))
    return out


@dataclass(frozen=True)
class Scales:
    """How an interval widens: factors on the fit's own spread for labs the fit saw (`known`)
    and for unseen ones (`unseen`), and spreads in decades added (in quadrature) per month
    beyond the fit's newest release (`per_month`) and per decade outside its totals
    (`per_decade`)."""

    unseen: float = 1.0
    known: float = 1.0
    per_month: float = 0.0
    per_decade: float = 0.0
    per_decade_calibrated: bool = True  # False: too few held-out forecasts above the fitted sizes

    def scaled(self, factor: float) -> Scales:
        return replace(self, unseen=self.unseen * factor, known=self.known * factor,
                       per_month=self.per_month * factor, per_decade=self.per_decade * factor)


@dataclass(frozen=True)
class Forecast:
    """One prediction before its interval: the centre, the fit's own spread and what widens it."""

    point: SizePoint
    centre: float  # log10 total (billions)
    sd: float  # the fit's predictive sd, in decades
    dof: int
    known: bool  # the fit saw the point's developer
    months: float  # after the fit's newest release (0 before it)
    beyond: float  # decades the centre lies above the largest fitted total (0 below it)
    origin: date | None = None  # rolling origin: the month the fit stopped at
    truth_beyond: float = 0.0  # decades the true total lies above the largest fitted one

    @property
    def ahead(self) -> int:
        """Whole calendar months after the origin (0: released in the origin's month); without an
        origin, whole months after the fit's newest release."""
        if self.origin is None:
            return int(self.months)
        released = self.point.released
        return (released.year - self.origin.year) * 12 + released.month - self.origin.month

    def half_width(self, scales: Scales, level: float = LEVEL) -> float:
        s = scales.known if self.known else scales.unseen
        return t_quantile(level, self.dof) * math.sqrt((s * self.sd) ** 2 + (scales.per_month * self.months) ** 2
                                                       + (scales.per_decade * self.beyond) ** 2)

    @property
    def error(self) -> float:
        return self.centre - math.log10(self.point.total_b)


@dataclass
class SizeModel:
    """A size model in scikit-learn's conventions: `SizeModel(candidate, scales)` holds the choices
    (the predictors; how intervals widen, `Scales`), `fit(points)` returns self and makes every
    fitted attribute, `predict` returns log10 total (billions) and `predict_interval` its interval."""

    candidate: Candidate
    scales: Scales = field(default_factory=Scales)

    def fit(self, points: list[SizePoint]) -> SizeModel:
        points_ = [p for p in points if self.candidate.fittable(p)]
        if len(points_) < MIN_POINTS:
            raise ValueError(f"{len(points_)} usable points; a size model needs {MIN_POINTS}")
        c = self.candidate
        dated = [p.released for p in points_ if p.released is not None]
        self.newest_ = max(dated) if dated else None
        self.knot_ = None if self.newest_ is None else (self.newest_ - EPOCH).days / 365.25 - HINGE_MONTHS / 12
        self.score_centre_ = float(np.mean([c.score(p) for p in points_]))
        self.mode_share_ = float(np.mean([bool(p.reasoning) for p in points_])) if c.reasoning else 0.0
        X, y = self._design(points_), np.log10([p.total_b for p in points_])
        if c.developer != "none":
            self.fit_ = RandomInterceptFit().fit(X, y, [p.developer for p in points_])
            if c.developer == "newest":
                self._anchor_on_newest(points_, X, y)
        else:
            weights = None
            if c.halflife_months is not None:
                weights = [2 ** (-months_between(p.released, self.newest_) / c.halflife_months) for p in points_]
            self.fit_ = LinearFit().fit(X, y, weights)
        self.points_ = points_
        self.total_range_ = (min(p.total_b for p in points_), max(p.total_b for p in points_))
        return self

    def _anchor_on_newest(self, points: list[SizePoint], X: np.ndarray, y: np.ndarray) -> None:
        """Each lab's effect from the residuals of its NEWEST_PER_LAB latest points, shrunk as the
        random intercept shrinks it (a lab's older models stop telling what its newest hold)."""
        fit = self.fit_
        residual = y - np.column_stack([np.ones(len(X)), X]) @ fit.coef_
        by_lab: dict[str, list[tuple[date, float]]] = {}
        for p, r in zip(points, residual):
            by_lab.setdefault(p.developer, []).append((p.released or date.min, float(r)))
        for lab, items in by_lab.items():
            newest = [r for _, r in sorted(items, key=lambda item: item[0])[-NEWEST_PER_LAB:]]
            n = len(newest)
            fit.effects_[lab] = fit.ratio_ / (1 + n * fit.ratio_) * sum(newest)
            fit.effect_var_[lab] = fit.tau2_ / (1 + n * fit.ratio_)

    def _row(self, p: SizePoint) -> list[float]:
        c = self.candidate
        values = [c.score(p)]
        if c.attempt:
            values.append(p.attempt_rate)
        if c.reasoning:
            values.append(math.nan if p.reasoning is None else float(p.reasoning))
        if c.date != "none":
            values.append(p.years)
        if c.date == "by-score":
            values.append(p.years * (c.score(p) - self.score_centre_))
        if c.date == "hinge":
            values.append(max(0.0, p.years - self.knot_))
        if c.sparsity:
            values.append(p.log_active_fraction)
        return [float(v) for v in values]

    def _design(self, points: list[SizePoint]) -> np.ndarray:
        unusable = [p.model for p in points if not self.candidate.usable(p)]
        if unusable:
            raise ValueError(f"{self.candidate.name} cannot use {', '.join(unusable[:3])}: a predictor is missing")
        return np.array([self._row(p) for p in points], dtype=float)

    def _check_fitted(self) -> None:
        if not hasattr(self, "fit_"):
            raise NotFittedError(f"SizeModel {self.candidate.name} is not fitted yet; call fit(points) first")

    def forecasts(self, points: list[SizePoint], known_developers: bool = True) -> list[Forecast]:
        """Each point's centre and spread before widening; with `known_developers` false every
        developer is treated as unseen (leave-one-developer-out does this by construction)."""
        self._check_fitted()
        X = self._design(points)
        unknown_mode = np.isnan(X).any(axis=1)
        mode_var = np.zeros(len(points))
        if unknown_mode.any():
            column = 1 + self.candidate.attempt  # the mode's column in X
            X[unknown_mode, column] = self.mode_share_
            b_mode = float(self.fit_.coef_[column + 1])
            mode_var[unknown_mode] = self.mode_share_ * (1 - self.mode_share_) * b_mode**2
        seen = {p.developer for p in self.points_}
        known = [known_developers and p.developer in seen for p in points]
        if isinstance(self.fit_, RandomInterceptFit):
            centre, sd = self.fit_.predict_sd(X, [p.developer if k else None for p, k in zip(points, known)])
        else:
            centre, sd = self.fit_.predict_sd(X)
        sd = np.sqrt(sd**2 + mode_var)
        out = []
        for p, c, s, k in zip(points, centre, sd, known):
            when = p.released or p.seen
            months = max(0.0, months_between(self.newest_, when)) if when and self.newest_ else 0.0
            beyond = max(0.0, float(c) - math.log10(self.total_range_[1]))
            out.append(Forecast(p, float(c), float(s), self.fit_.dof_, k, months, beyond))
        return out

    def predict(self, points: list[SizePoint], known_developers: bool = True) -> np.ndarray:
        """log10 total (billions) per point."""
        return np.array([f.centre for f in self.forecasts(points, known_developers)])

    def predict_interval(self, points: list[SizePoint], known_developers: bool = True,
                         level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of log10 total per point at `level`, widened by `scales`."""
        forecasts = self.forecasts(points, known_developers)
        half = np.array([f.half_width(self.scales, level) for f in forecasts])
        centre = np.array([f.centre for f in forecasts])
        return centre - half, centre + half

    def coefficients(self, level: float = 0.95) -> dict[str, Estimate]:
        """Each predictor's coefficient (decades of total per unit) with its interval."""
        self._check_fitted()
        names = self.candidate.columns
        if isinstance(self.fit_, RandomInterceptFit):
            t = t_quantile(level, self.fit_.dof_)
            se = np.sqrt(np.diag(self.fit_.cov_))
            return {n: Estimate(float(c), float(c - t * e), float(c + t * e), level)
                    for n, c, e in zip(names, self.fit_.coef_[1:], se[1:])}
        return {n: self.fit_.coef_interval(i + 1, level) for i, n in enumerate(names)}

    def extrapolation(self, estimate_b: float) -> float:
        """Decades outside the totals the fit saw (0 inside)."""
        self._check_fitted()
        low, high = self.total_range_
        if estimate_b > high:
            return math.log10(estimate_b / high)
        if estimate_b < low:
            return math.log10(low / estimate_b)
        return 0.0


# ---------------------------------------------------------------------------------------------
# validation


def summarise(forecasts: list[Forecast], scales: Scales = Scales(), level: float = LEVEL) -> dict:
    """Median |log10 error|, share within 2x, coverage of the `level` interval, and the median
    signed error (positive: sizes overestimated)."""
    if len(forecasts) < MIN_TEST:
        return {"n": len(forecasts), "median_abs_error_decades": math.nan, "within_2x": math.nan,
                "coverage": math.nan, "median_error_decades": math.nan}
    e = np.array([f.error for f in forecasts])
    half = np.array([f.half_width(scales, level) for f in forecasts])
    return {"n": len(e), "median_abs_error_decades": float(np.median(np.abs(e))),
            "within_2x": float(np.mean(np.abs(e) <= math.log10(2))),
            "coverage": float(np.mean(np.abs(e) <= half)), "median_error_decades": float(np.median(e))}


def origins(points: list[SizePoint], start: date = ROLLING_START) -> list[date]:
    """The first day of every month from `start` to the month of the newest release."""
    newest = max((p.released for p in points if p.released is not None), default=None)
    if newest is None or newest < start:
        return []
    out, month = [], date(start.year, start.month, 1)
    while month <= newest:
        out.append(month)
        month = add_months(month, 1)
    return out


def rolling_origin(candidate: Candidate, points: list[SizePoint], start: date = ROLLING_START,
                   horizon: int = HORIZON_MONTHS) -> list[Forecast]:
    """For each origin month: fit on the points released before it, forecast those released in
    the `horizon` months from it (their labs may be known to the fit)."""
    dated = [p for p in points if p.released is not None and p.total_b is not None]
    out = []
    for origin in origins(dated, start):
        train = [p for p in dated if p.released < origin]
        test = [p for p in dated if origin <= p.released < add_months(origin, horizon) and candidate.usable(p)]
        if not test:
            continue
        try:
            model = SizeModel(candidate).fit(train)
        except ValueError:
            continue
        largest = model.total_range_[1]
        for f in model.forecasts(test):
            # the horizon counts from the origin (the fit's information date), not its newest point
            out.append(replace(f, origin=origin, months=months_between(origin, f.point.released),
                               truth_beyond=max(0.0, math.log10(f.point.total_b / largest))))
    return out


def horizon_label(low: int, high: int) -> str:
    return f"{high} month{'s' if high > 1 else ''} ahead" if high == low + 1 else f"{low + 1}-{high} months ahead"


def by_horizon(forecasts: list[Forecast], scales: Scales = Scales()) -> dict[str, dict]:
    """Summaries per band of months ahead ("1 month ahead": released in the origin's month)."""
    return {horizon_label(low, high): summarise([f for f in forecasts if low <= f.ahead < high], scales)
            for low, high in HORIZON_BANDS}


def within(forecasts: list[Forecast], months: int = HORIZON_MONTHS) -> list[Forecast]:
    """The forecasts of models released less than `months` calendar months from their origin."""
    return [f for f in forecasts if f.ahead < months]


SIZE_BANDS = ((-math.inf, 0.0, "within the fitted sizes"), (0.0, 0.3, "up to 2x above the largest fitted"),
              (0.3, math.inf, "over 2x above the largest fitted"))


def by_size(forecasts: list[Forecast], scales: Scales = Scales()) -> dict[str, dict]:
    """Summaries by how far the true total lies above the largest total the fit saw."""
    return {name: summarise([f for f in forecasts if low < f.truth_beyond <= high], scales) for low, high, name in SIZE_BANDS}


def leave_one_developer_out(candidate: Candidate, points: list[SizePoint]) -> list[Forecast]:
    out = []
    for developer in sorted({p.developer for p in points}):
        test = [p for p in points if p.developer == developer and candidate.usable(p) and p.total_b is not None]
        try:
            model = SizeModel(candidate).fit([p for p in points if p.developer != developer])
        except ValueError:
            continue
        if test:
            out += [replace(f, months=0.0) for f in model.forecasts(test, known_developers=False)]
    return out


def _coverage_factor(errors: np.ndarray, half: np.ndarray, level: float) -> float:
    """The factor on `half` that puts `level` of |errors| inside."""
    return float(np.quantile(np.abs(errors) / half, level))


def _spread_for(forecasts: list[Forecast], scales: Scales, field_: str, level: float) -> float:
    """The smallest value of the spread `field_` (per_month or per_decade) at which `level` of the
    forecasts fall inside, found by bisection (coverage only grows with it)."""
    errors = np.abs([f.error for f in forecasts])

    def covered(value: float) -> float:
        trial = replace(scales, **{field_: value})
        return float(np.mean(errors <= [f.half_width(trial, level) for f in forecasts]))

    if covered(0.0) >= level:
        return 0.0
    low, high = 0.0, 0.05
    while covered(high) < level and high < 10:
        high *= 2
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (low, middle) if covered(middle) >= level else (middle, high)
    return high


def calibrate(forecasts: list[Forecast], level: float = LEVEL) -> Scales:
    """Scales that make `level` intervals cover held-out forecasts, step by step:
    1. the factors on the fit's own spread, from the forecasts less than HORIZON_MONTHS ahead
       (one for labs the fit saw, one for unseen labs; equal when either kind is missing);
    2. the spread per month ahead: the smallest at which every band of months beyond that
       (HORIZON_BANDS) is covered at `level` (the largest of the bands' values, so intervals widen
       monotonically with the horizon and no band is under-covered);
    3. the spread per decade above the fitted sizes the same way, from the forecasts whose estimate
       lies there, or PER_DECADE_PRIOR (marked as not calibrated) when fewer than MIN_TEST do."""
    if len(forecasts) < MIN_TEST:
        return Scales()
    near = within(forecasts) or forecasts

    def factor(chosen: list[Forecast]) -> float | None:
        if len(chosen) < MIN_TEST:
            return None
        return _coverage_factor(np.array([f.error for f in chosen]),
                                np.array([f.half_width(Scales(), level) for f in chosen]), level)

    known = factor([f for f in near if f.known and f.beyond == 0])
    unseen = factor([f for f in near if not f.known and f.beyond == 0])
    fallback = factor([f for f in near if f.beyond == 0]) or 1.0
    scales = Scales(unseen=unseen or known or fallback, known=known or unseen or fallback)
    later = [[f for f in forecasts if low <= f.ahead < high and f.beyond == 0]
             for low, high in HORIZON_BANDS if low >= HORIZON_MONTHS]
    per_month = max([_spread_for(band, scales, "per_month", level) for band in later if len(band) >= MIN_TEST],
                    default=0.0)
    scales = replace(scales, per_month=per_month)
    above = [f for f in forecasts if f.beyond > 0]
    if len(above) < MIN_TEST:
        return replace(scales, per_decade=PER_DECADE_PRIOR, per_decade_calibrated=False)
    return replace(scales, per_decade=_spread_for(above, scales, "per_decade", level))


@dataclass
class CandidateResult:
    candidate: Candidate
    rolling: dict  # summary of the rolling-origin forecasts at unit scales
    lodo: dict | None = None  # leave one developer out, for the models the survey shows

    @property
    def score(self) -> float:
        """What the choice minimises: the rolling-origin median error (or, with too few
        forecasts, leave-one-developer-out's)."""
        v = self.rolling if self.rolling["n"] >= MIN_FORECASTS else self.lodo
        return v["median_abs_error_decades"] if v and v["n"] else math.inf


# Survey v2, for comparison, with the interval factors it shipped with (x1.00 for unseen labs, x1.32
# for known ones; no widening with time or size): the model it used for every row without
# parameter counts (closed models), and the model it chose, less the sparsity no such row has.
V2_SCALES = Scales(unseen=1.0, known=1.3235)
REFERENCES = {"survey v2": Candidate("logit", attempt=True, reasoning=True),
              "v2's choice less sparsity": Candidate("logit", attempt=True, reasoning=True, date="linear",
                                                     developer="random")}


@dataclass
class SizeSelection:
    """Every candidate's validation, the chosen one fitted on all points and calibrated, and the
    calibrated rolling-origin forecasts of the chosen model and of survey v2's."""

    results: list[CandidateResult]
    chosen: SizeModel
    validation: str  # "rolling origin" or "leave one developer out": what chose and calibrated
    forecasts: list[Forecast]  # the chosen candidate's held-out forecasts (of `validation`; up to CALIBRATION_MONTHS)
    reference: dict[str, tuple[Candidate, Scales, list[Forecast]]] = field(default_factory=dict)
    fallbacks: dict[Candidate, SizeModel] = field(default_factory=dict)  # fitted by `fallback`, once each


def select(points: list[SizePoint]) -> SizeSelection | None:
    """Validate every candidate on the points they all can use; choose the lowest score."""
    points = [p for p in points if p.total_b is not None]
    pool = candidates(points)
    common = [p for p in points if all(c.fittable(p) for c in pool)]
    if len({p.developer for p in common}) < 3 or len(common) < MIN_POINTS:
        return None
    # forecasts out to CALIBRATION_MONTHS, once per candidate: the first HORIZON_MONTHS of them
    # choose (`within`), all of them calibrate the chosen one and score the references
    rolling = {c: rolling_origin(c, common, horizon=CALIBRATION_MONTHS) for c in pool}
    use_rolling = max(len(within(f)) for f in rolling.values()) >= MIN_FORECASTS
    results = []
    for c in pool:
        lodo = None if use_rolling else summarise(leave_one_developer_out(c, common))
        results.append(CandidateResult(c, summarise(within(rolling[c])), lodo))
    results = [r for r in results if math.isfinite(r.score)]
    if not results:
        return None
    best = min(results, key=lambda r: r.score)
    if use_rolling:
        held_out = rolling[best.candidate]
    else:
        held_out = leave_one_developer_out(best.candidate, common)
    chosen = SizeModel(best.candidate, calibrate(held_out)).fit(points)
    selection = SizeSelection(results, chosen, "rolling origin" if use_rolling else "leave one developer out", held_out)
    for name, candidate in REFERENCES.items() if use_rolling else ():
        if candidate in rolling:
            selection.reference[name] = (candidate, V2_SCALES, rolling[candidate])
    return selection


def fallback(selection: SizeSelection, point: SizePoint, points: list[SizePoint]) -> SizeModel | None:
    """The chosen model if the point has its features, else the best-validated candidate it
    has (a closed model without a release date, say), fitted with the chosen widths."""
    if selection.chosen.candidate.usable(point):
        return selection.chosen
    for r in sorted(selection.results, key=lambda r: r.score):
        if r.candidate.usable(point):
            if r.candidate not in selection.fallbacks:
                selection.fallbacks[r.candidate] = SizeModel(r.candidate, selection.chosen.scales).fit(points)
            return selection.fallbacks[r.candidate]
    return None


def sparsity_effect(selection: SizeSelection, points: list[SizePoint]) -> Estimate | None:
    """Decades of total per decade of active fraction at the same score: the chosen model with
    sparsity added, on the open points (a measurement; no estimate uses it)."""
    candidate = replace(selection.chosen.candidate, sparsity=True)
    try:
        model = SizeModel(candidate).fit(points)
    except ValueError:
        return None
    return model.coefficients().get("sparsity")
