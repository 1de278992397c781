"""The survey: knowledge-benchmark accuracy of public models against their total and active
parameters, and size estimates for closed models, with intervals and out-of-sample checks.

Data: a CSV with the columns of the bundled `moelab/data/knowledge_vs_params.csv` (sources in
`moelab/data/SOURCES.md`). Rules, applied per benchmark:

* Weights groups. Reasoning and non-reasoning variants of one set of weights are separate rows;
  rows of one developer with the same total and active counts form one weights group (fine-tunes
  share their base's counts). A group enters a fit once, as its best-scoring variant: a variant
  cannot recall facts its weights lack, so the best one measures what the weights hold. The
  alternative, one point per (group, reasoning flag) with the flag as a covariate, competes out
  of sample, and so do the accuracy scales (linear, logit).
* Attribution: correlations of accuracy with log10 total and log10 active parameters, partial
  correlations of each given the other, and gamma in acc = a + b log10(N_total^g N_active^(1-g)),
  all with 95% bootstrap intervals; for all models and for MoE models alone.
* Estimation: the chosen fit inverted at a closed model's accuracy gives its total parameters
  with an 80% calibration interval (parameter uncertainty plus residual spread). Estimates
  outside the range of open models the fit saw are flagged with their distance in decades.
* Validation: leave-one-developer-out: each lab's models are held out, their totals predicted
  from accuracy; median absolute error in decades and coverage of the 80% interval.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from moelab.analysis.fit import (
    Estimate, LinearFit, NotFittedError, partial_correlation, pearson, spearman, total_share,
)
from moelab.errors import MoelabError

COLUMNS = ["model", "developer", "open_weights", "architecture", "total_params_b", "active_params_b",
           "benchmark", "variant", "accuracy_pct", "omniscience_index", "hallucination_rate_pct",
           "source", "as_of"]
REQUIRED = ["model", "developer", "benchmark"]
BENCHMARKS = ["AA-Omniscience", "SimpleQA", "IKP", "TriviaQA", "NaturalQuestions", "moelab-probe"]
LEVEL = 0.8  # estimate intervals
MIN_GROUPS = 8  # fewer open weights groups on a benchmark: no fit


class SurveyDataError(MoelabError):
    """Bad rows in a survey CSV; the message lists every one with its line and column."""


@dataclass(frozen=True)
class ModelRow:
    line: int
    model: str
    developer: str
    open_weights: bool
    architecture: str
    total_b: float | None
    active_b: float | None
    benchmark: str
    variant: str
    accuracy_pct: float | None
    omniscience_index: float | None
    hallucination_rate_pct: float | None
    source: str
    as_of: str

    @property
    def reasoning(self) -> bool:
        """Whether the row scores a reasoning/thinking setting, read from its variant and name."""
        text = f"{self.variant} {self.model}".lower()
        if any(word in text for word in ("non-reasoning", "non-thinking", "w/o extended thinking")):
            return False
        return "reasoning" in text or "thinking" in text

    @property
    def is_moe(self) -> bool:
        return self.architecture == "moe" or (self.active_b is not None and self.total_b is not None
                                              and self.active_b < self.total_b)


# ---------------------------------------------------------------------------------------------
# loading and validation


def bundled_csv() -> Path:
    return Path(str(resources.files("moelab.data").joinpath("knowledge_vs_params.csv")))


def _number(text: str, column: str, low: float, high: float, problems: list[str],
            where: str, exclusive_low: bool = False) -> float | None:
    if text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        problems.append(f"{where}, column {column}: {text!r} is not a number")
        return None
    too_low = value <= low if exclusive_low else value < low
    if not math.isfinite(value) or too_low or value > high:
        bound = f"> {low}" if exclusive_low else f">= {low}"
        problems.append(f"{where}, column {column}: {value} is out of range (must be {bound} and <= {high})")
        return None
    return value


def parse_rows(path: str | Path, allow_missing_params: bool = True) -> tuple[list[ModelRow], list[str]]:
    """All valid rows and a list of problems ('FILE line N, column C: what'), one per bad field."""
    path = Path(path)
    try:
        handle = open(path, newline="")
    except FileNotFoundError:
        raise SurveyDataError(f"{path}: no such file") from None
    rows, problems = [], []
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        duplicated = sorted({c for c in header if header.count(c) > 1})
        if duplicated:
            raise SurveyDataError(f"{path} line 1: duplicate column(s) {', '.join(duplicated)}; "
                                  "keep one of each (which value would count is ambiguous)")
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise SurveyDataError(f"{path} line 1: missing column(s) {', '.join(missing)}; "
                                  f"the header must be {','.join(COLUMNS)}")
        for record in reader:
            line = reader.line_num
            where = f"{path} line {line}"
            before = len(problems)
            if [record.get(c) for c in header] == header:
                problems.append(f"{where}: duplicate header line (the files were concatenated?); delete it")
                continue
            if None in record or any(v is None for v in record.values()):
                problems.append(f"{where}: expected {len(COLUMNS)} fields, got a different count")
                continue
            for column in REQUIRED:
                if not record[column].strip():
                    problems.append(f"{where}, column {column}: empty; it is required")
            if record["benchmark"].strip() and record["benchmark"] not in BENCHMARKS:
                problems.append(f"{where}, column benchmark: unknown benchmark {record['benchmark']!r}; "
                                f"known: {', '.join(BENCHMARKS)}")
            open_text = record["open_weights"].strip().lower()
            if open_text not in ("true", "false"):
                problems.append(f"{where}, column open_weights: {record['open_weights']!r}; use true or false")
            if record["architecture"] not in ("", "dense", "moe"):
                problems.append(f"{where}, column architecture: {record['architecture']!r}; "
                                "use dense, moe or leave empty")
            total = _number(record["total_params_b"], "total_params_b", 0, 1e6, problems, where, True)
            active = _number(record["active_params_b"], "active_params_b", 0, 1e6, problems, where, True)
            accuracy = _number(record["accuracy_pct"], "accuracy_pct", 0, 100, problems, where)
            index = _number(record["omniscience_index"], "omniscience_index", -100, 100, problems, where)
            hallucination = _number(record["hallucination_rate_pct"], "hallucination_rate_pct", 0, 100,
                                    problems, where)
            if total is not None and active is not None and active > total:
                problems.append(f"{where}, column active_params_b: {active} exceeds total_params_b {total}")
            if not allow_missing_params and total is None and open_text == "true":
                problems.append(f"{where}, column total_params_b: empty for an open-weights model")
            if len(problems) > before:
                continue
            rows.append(ModelRow(line, record["model"].strip(), record["developer"].strip(),
                                 open_text == "true", record["architecture"], total, active,
                                 record["benchmark"], record["variant"], accuracy, index, hallucination,
                                 record["source"], record["as_of"]))
    return rows, problems


def load_inputs(path: str | Path | None, benchmarks: list[str] | None, predict: str | Path | None,
                skip_bad_rows: bool, n_boot: int) -> tuple[list[ModelRow], list[ModelRow] | None, list[str]]:
    """`moelab survey`'s inputs checked: the table, the rows to predict (or None) and the problems
    skipped (with `skip_bad_rows`); a bad option or row raises a MoelabError naming it."""
    if n_boot < 100:
        raise MoelabError(f"--n-boot {n_boot}: use at least 100 resamples")
    unknown = [b for b in benchmarks or [] if b not in BENCHMARKS]
    if unknown:
        raise MoelabError(f"--benchmark {unknown[0]!r}: unknown; known: {', '.join(BENCHMARKS)}")
    rows, problems = load_rows(path, skip_bad_rows)
    targets = None
    if predict is not None:
        targets, predict_problems = parse_rows(predict)
        if predict_problems and not skip_bad_rows:
            raise SurveyDataError(f"{len(predict_problems)} bad field(s) in --predict file; fix them "
                                  "or pass --skip-bad-rows:\n" + "\n".join(predict_problems))
        problems += predict_problems
    return rows, targets, problems


def load_rows(path: str | Path | None = None, skip_bad_rows: bool = False) -> tuple[list[ModelRow], list[str]]:
    """Rows of a survey CSV (the bundled one by default). Bad rows raise SurveyDataError naming
    each line and column, unless `skip_bad_rows`, which returns them as problems and skips them."""
    rows, problems = parse_rows(path or bundled_csv())
    if problems and not skip_bad_rows:
        raise SurveyDataError(f"{len(problems)} bad field(s); fix them or pass --skip-bad-rows:\n"
                              + "\n".join(problems))
    return rows, problems


# ---------------------------------------------------------------------------------------------
# points: one per weights group (or per group and reasoning flag)


@dataclass(frozen=True)
class Point:
    developer: str
    total_b: float
    active_b: float | None
    accuracy_pct: float
    reasoning: bool
    is_moe: bool
    model: str


def fit_points(rows: list[ModelRow], benchmark: str, by_reasoning: bool) -> list[Point]:
    """Open models with a total count and an accuracy: the best row of each weights group
    (and of each reasoning flag within it, when `by_reasoning`)."""
    best: dict[tuple, ModelRow] = {}
    for r in rows:
        if r.benchmark != benchmark or r.total_b is None or r.accuracy_pct is None or not r.open_weights:
            continue
        key = (r.developer, r.total_b, r.active_b) + ((r.reasoning,) if by_reasoning else ())
        if key not in best or r.accuracy_pct > best[key].accuracy_pct:
            best[key] = r
    return [Point(r.developer, r.total_b, r.active_b, r.accuracy_pct, r.reasoning, r.is_moe, r.model)
            for r in best.values()]


def to_scale(accuracy_pct: np.ndarray | float, scale: str) -> np.ndarray:
    """Accuracy in percent on the fit's scale: as is, or logit of the fraction (clipped to 0.5%)."""
    a = np.asarray(accuracy_pct, dtype=float)
    if scale == "linear":
        return a
    p = np.clip(a / 100, 0.005, 0.995)
    return np.log(p / (1 - p))


# ---------------------------------------------------------------------------------------------
# the size model


@dataclass
class SizeModel:
    """accuracy (on `scale`) ~ log10 total_b [+ reasoning flag], fitted on weights-group points."""

    scale: str  # "linear" or "logit"
    covariate: bool  # reasoning flag as a covariate
    points_: list[Point] = field(default_factory=list, init=False)  # the points it was fitted on
    fit_: LinearFit | None = field(default=None, init=False)

    def fit(self, points: list[Point]) -> SizeModel:
        self.points_ = points
        self.fit_ = LinearFit().fit(self._X(points), to_scale([p.accuracy_pct for p in points], self.scale))
        return self

    def _fitted(self) -> LinearFit:
        if self.fit_ is None:
            raise NotFittedError(f"SizeModel {self.name} is not fitted yet; call fit(points) first")
        return self.fit_

    def _X(self, points: list[Point]) -> np.ndarray:
        u = np.log10([p.total_b for p in points])
        return np.column_stack([u, [float(p.reasoning) for p in points]]) if self.covariate else u[:, None]

    @property
    def name(self) -> str:
        return f"{self.scale}{' + reasoning' if self.covariate else ''}"

    def estimate(self, accuracy_pct: float, reasoning: bool, level: float = LEVEL) -> Estimate:
        """Total parameters (billions) at this accuracy, with the calibration interval."""
        others = [float(reasoning)] if self.covariate else []
        return self._fitted().inverse(float(to_scale(accuracy_pct, self.scale)), 0, others, level).pow10()

    def extrapolation(self, estimate_b: float) -> float:
        """Decades outside the totals the fit saw (0 inside, nan if no estimate)."""
        if not math.isfinite(estimate_b) or estimate_b <= 0:
            return math.nan
        self._fitted()
        low, high = min(p.total_b for p in self.points_), max(p.total_b for p in self.points_)
        if estimate_b > high:
            return math.log10(estimate_b / high)
        if estimate_b < low:
            return math.log10(low / estimate_b)
        return 0.0


@dataclass
class Validation:
    model: str
    n_points: int
    n_developers: int
    median_abs_error_decades: float
    coverage: float  # share of held-out totals inside their 80% interval


def leave_one_developer_out(rows: list[ModelRow], benchmark: str, scale: str, covariate: bool) -> Validation | None:
    """Hold out each developer in turn; every candidate model is scored on the same held-out
    points (each weights group's best reasoning and best non-reasoning variant)."""
    train_points = fit_points(rows, benchmark, by_reasoning=covariate)
    test_points = fit_points(rows, benchmark, by_reasoning=True)
    developers = sorted({p.developer for p in test_points})
    errors, covered = [], []
    for developer in developers:
        train = [p for p in train_points if p.developer != developer]
        if len(train) < MIN_GROUPS:
            continue
        try:
            model = SizeModel(scale, covariate).fit(train)
        except ValueError:
            continue
        for p in test_points:
            if p.developer != developer:
                continue
            est = model.estimate(p.accuracy_pct, p.reasoning)
            errors.append(abs(math.log10(est.value) - math.log10(p.total_b)) if est.value > 0 else math.inf)
            covered.append(est.low <= p.total_b <= est.high)
    if not errors:
        return None
    name = SizeModel(scale, covariate).name
    return Validation(name, len(errors), len(developers), float(np.median(errors)), float(np.mean(covered)))


# ---------------------------------------------------------------------------------------------
# attribution


@dataclass
class Attribution:
    subset: str
    n_groups: int
    r_total: Estimate | None = None
    r_active: Estimate | None = None
    spearman_total: Estimate | None = None
    spearman_active: Estimate | None = None
    partial_total: Estimate | None = None  # total given active
    partial_active: Estimate | None = None  # active given total
    gamma: Estimate | None = None


def attribute(points: list[Point], subset: str, n_boot: int = 2000) -> Attribution:
    points = [p for p in points if p.active_b is not None]
    out = Attribution(subset, len(points))
    if len(points) < MIN_GROUPS:
        return out
    acc = np.array([p.accuracy_pct for p in points])
    total = np.array([p.total_b for p in points])
    active = np.array([p.active_b for p in points])
    u_total, u_active = np.log10(total), np.log10(active)
    out.r_total, out.r_active = pearson(u_total, acc, n_boot), pearson(u_active, acc, n_boot)
    out.spearman_total, out.spearman_active = spearman(u_total, acc, n_boot), spearman(u_active, acc, n_boot)
    if np.ptp(u_total - u_active) > 0:  # total and active not identical (some MoE models)
        out.partial_total = partial_correlation(u_total, acc, u_active, n_boot)
        out.partial_active = partial_correlation(u_active, acc, u_total, n_boot)
        out.gamma = total_share(total, active, acc, n_boot)
    return out


# ---------------------------------------------------------------------------------------------
# the whole analysis of one benchmark


@dataclass
class SizeEstimate:
    model: str
    developer: str
    benchmark: str
    variant: str
    accuracy_pct: float
    reasoning: bool
    estimate_b: float
    low_b: float
    high_b: float
    extrapolated: bool
    extrapolation_decades: float
    line: int | None = None


@dataclass
class BenchmarkSurvey:
    benchmark: str
    attribution: list[Attribution]
    validation: list[Validation]
    chosen: SizeModel
    estimates: list[SizeEstimate]

    def estimate_row(self, row: ModelRow) -> SizeEstimate:
        est = self.chosen.estimate(row.accuracy_pct, row.reasoning)
        decades = self.chosen.extrapolation(est.value)
        return SizeEstimate(row.model, row.developer, row.benchmark, row.variant, row.accuracy_pct,
                            row.reasoning, est.value, est.low, est.high,
                            not (decades == 0.0), decades, row.line)


def survey_benchmark(rows: list[ModelRow], benchmark: str, n_boot: int = 2000) -> BenchmarkSurvey | None:
    """Attribution, model choice by leave-one-developer-out error, and closed-model estimates."""
    points = fit_points(rows, benchmark, by_reasoning=False)
    if len(points) < MIN_GROUPS:
        return None
    attribution = [attribute(points, "all models", n_boot),
                   attribute([p for p in points if p.is_moe], "MoE only", n_boot)]
    validation = []
    for covariate in (False, True):
        if covariate and len({p.reasoning for p in fit_points(rows, benchmark, True)}) < 2:
            continue  # the flag does not vary on this benchmark
        for scale in ("linear", "logit"):
            v = leave_one_developer_out(rows, benchmark, scale, covariate)
            if v is not None:
                validation.append(v)
    best = min(validation, key=lambda v: v.median_abs_error_decades)
    covariate = best.model.endswith("+ reasoning")
    chosen = SizeModel(best.model.split()[0], covariate).fit(fit_points(rows, benchmark, covariate))
    result = BenchmarkSurvey(benchmark, attribution, validation, chosen, [])
    closed = [r for r in rows if r.benchmark == benchmark and r.accuracy_pct is not None
              and (not r.open_weights or r.total_b is None)]
    result.estimates = [result.estimate_row(r) for r in closed]
    return result


def survey(rows: list[ModelRow], benchmarks: list[str] | None = None, n_boot: int = 2000) -> list[BenchmarkSurvey]:
    out = []
    for benchmark in benchmarks or BENCHMARKS:
        result = survey_benchmark(rows, benchmark, n_boot)
        if result is not None:
            out.append(result)
    return out


def benchmark_groups(rows: list[ModelRow]) -> dict[str, int]:
    """Open weights groups with an accuracy, per benchmark (what each fit can use)."""
    return {benchmark: len(fit_points(rows, benchmark, by_reasoning=False)) for benchmark in BENCHMARKS}


def estimate_rows(results: list[BenchmarkSurvey], rows: list[ModelRow]) -> list[SizeEstimate]:
    """Estimates for rows of another table (their parameter cells are ignored), on the fit of
    their benchmark; rows without accuracy or on a benchmark without a fit are skipped."""
    by_benchmark = {r.benchmark: r for r in results}
    return [by_benchmark[r.benchmark].estimate_row(r) for r in rows
            if r.accuracy_pct is not None and r.benchmark in by_benchmark]


def _estimate_json(e: Estimate | None) -> dict | None:
    return None if e is None else {"value": e.value, "low": e.low, "high": e.high, "level": e.level}


def estimate_json(e: SizeEstimate) -> dict:
    return {"model": e.model, "developer": e.developer, "benchmark": e.benchmark, "variant": e.variant,
            "accuracy_pct": e.accuracy_pct, "reasoning": e.reasoning,
            "estimate_b": e.estimate_b if math.isfinite(e.estimate_b) else None,
            "low_b": e.low_b, "high_b": e.high_b if math.isfinite(e.high_b) else None,
            "interval_level": LEVEL, "extrapolated": e.extrapolated,
            "extrapolation_decades": e.extrapolation_decades if math.isfinite(e.extrapolation_decades) else None,
            "line": e.line}


def results_json(results: list[BenchmarkSurvey]) -> dict:
    out = {}
    for b in results:
        out[b.benchmark] = {
            "attribution": [{"subset": a.subset, "n_groups": a.n_groups,
                             **{k: _estimate_json(getattr(a, k)) for k in
                                ("r_total", "r_active", "spearman_total", "spearman_active",
                                 "partial_total", "partial_active", "gamma")}} for a in b.attribution],
            "validation": [vars(v) for v in b.validation],
            "chosen_model": b.chosen.name,
            "fit_points": len(b.chosen.points_),
            "open_total_range_b": [min(p.total_b for p in b.chosen.points_), max(p.total_b for p in b.chosen.points_)],
            "estimates": [estimate_json(e) for e in b.estimates],
        }
    return out
