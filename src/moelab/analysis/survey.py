"""The survey: knowledge-benchmark accuracy of public models against their total and active
parameters, and size estimates for closed models, with intervals and out-of-sample checks.

Data: a CSV with the columns of the bundled `moelab/data/knowledge_vs_params.csv` (sources in
`moelab/data/SOURCES.md`). Rules, applied per benchmark:

* Weights groups. Reasoning and non-reasoning variants of one set of weights are separate rows;
  rows of one developer with the same total and active counts form one weights group (fine-tunes
  share their base's counts). A group enters a fit once, as its best-scoring variant: a variant
  cannot recall facts its weights lack, so the best one measures what the weights hold (size
  models instead take one point per group and mode, with the mode as a covariate).
* Attribution: correlations of accuracy with log10 total and log10 active parameters, partial
  correlations of each given the other, and gamma in acc = a + b log10(N_total^g N_active^(1-g)),
  all with 95% bootstrap intervals; for all models and for MoE models alone.
* Modes: a row's reasoning mode from its variant's flag, else from its name, else from a sibling
  row of the same weights (`row_mode`, `assign_modes`); unknown modes are predicted between the two.
* Estimation (analysis/size.py): log10 total parameters regressed on a knowledge measure with the
  mode, attempt rate, drift terms and lab effects as candidates, chosen by a rolling origin (fit on
  the models released before a month, predict the next three); closed models' totals with 80%
  intervals calibrated on those forecasts, widening with the months since the fit's data and the
  decades beyond its sizes. A row's own parameter counts are never seen by its estimate.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
from dataclasses import dataclass, field, replace
from datetime import date
from importlib import resources
from pathlib import Path

import numpy as np

from moelab.analysis import size
from moelab.analysis.fit import ATTRIBUTION_STATISTICS, Estimate, attribution
from moelab.errors import MoelabError

COLUMNS = ["model", "developer", "open_weights", "architecture", "total_params_b", "active_params_b",
           "benchmark", "variant", "accuracy_pct", "omniscience_index", "hallucination_rate_pct",
           "source", "as_of"]
OPTIONAL_COLUMNS = ["release_date"]  # YYYY-MM-DD; tables without the column still load
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
    release_date: date | None = None
    reasoning: bool | None = field(default=None, compare=False)  # None: not known (see `row_mode`)
    mode_source: str = field(default="", compare=False)

    def __post_init__(self):
        if not self.mode_source:
            reasoning, source = row_mode(self.variant, self.model)
            object.__setattr__(self, "reasoning", reasoning)
            object.__setattr__(self, "mode_source", source)

    @property
    def is_moe(self) -> bool:
        return self.architecture == "moe" or (self.active_b is not None and self.total_b is not None
                                              and self.active_b < self.total_b)


# ---------------------------------------------------------------------------------------------
# the mode a row was scored in

_NOT_REASONING = re.compile(r"non-reasoning|non-thinking|w/o extended thinking|thinking\s*=\s*false|\binstruct\b"
                            r"|\(minimal\)", re.I)
_REASONING = re.compile(r"reasoning|thinking|\bthink(er)?\b|\((low|medium|high|xhigh|max)\)|effort", re.I)
_NO_FLAG = re.compile(r"^\s*unspecified|no reasoning flag", re.I)


def mode_from_name(name: str) -> bool | None:
    """A model's mode where its name says it: "(Non-reasoning)", "Instruct" and "(minimal)" (the
    lowest effort, which AA flags as non-reasoning) say no; "(Reasoning)", "Thinking", "Think",
    "Thinker" and an effort ("(low)", "(medium)", "(high)", "(xhigh)", "(max)") say yes; else None.
    Checked against AA's own flag in tests/analysis/test_survey.py."""
    if _NOT_REASONING.search(name):
        return False
    if _REASONING.search(name):
        return True
    return None


def row_mode(variant: str, model: str) -> tuple[bool | None, str]:
    """(reasoning, how it is known) from a row alone: "flag" when the variant states the mode,
    "name" when a capture without a flag leaves it to the model's name, "unknown" when neither
    says, and "default" for sources without mode words (model cards, base-model tables), read as
    non-reasoning."""
    if _NO_FLAG.search(variant):
        mode = mode_from_name(model)
        return (None, "unknown") if mode is None else (mode, "name")
    mode = mode_from_name(variant)
    if mode is not None:
        return mode, "name" if "from the model name" in variant.lower() else "flag"
    mode = mode_from_name(model)
    return (False, "default") if mode is None else (mode, "name")


def assign_modes(rows: list[ModelRow]) -> list[ModelRow]:
    """Rows whose mode is unknown take the other mode from a sibling: when a developer lists
    "X (Non-reasoning)" beside a plain "X" on the same benchmark, the plain row is X's reasoning
    mode (and the reverse), AA's way of naming a model's non-default mode."""
    named = {(r.developer, r.benchmark, _mode_free(r.model)): r.reasoning for r in rows if r.reasoning is not None
             and _mode_free(r.model) != r.model.lower()}
    out = []
    for r in rows:
        other = named.get((r.developer, r.benchmark, r.model.lower())) if r.reasoning is None else None
        out.append(replace(r, reasoning=not other, mode_source="sibling") if other is not None else r)
    return out


def _mode_free(name: str) -> str:
    return " ".join(re.sub(r"\((non-)?reasoning[^)]*\)", "", name, flags=re.I).split()).lower()


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
    if path.is_dir():
        raise SurveyDataError(f"{path}: a folder, not a survey CSV file")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SurveyDataError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise SurveyDataError(f"{path}: not a text file; a survey is a UTF-8 CSV file") from None
    rows, problems = [], []
    with io.StringIO(text, newline="") as handle:
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
            released = None
            if record.get("release_date", "").strip():
                try:
                    released = date.fromisoformat(record["release_date"].strip())
                except ValueError:
                    problems.append(f"{where}, column release_date: {record['release_date']!r} is not a date; "
                                    "use YYYY-MM-DD or leave it empty")
            if total is not None and active is not None and active > total:
                problems.append(f"{where}, column active_params_b: {active} exceeds total_params_b {total}")
            if not allow_missing_params and total is None and open_text == "true":
                problems.append(f"{where}, column total_params_b: empty for an open-weights model")
            if len(problems) > before:
                continue
            rows.append(ModelRow(line, record["model"].strip(), record["developer"].strip(),
                                 open_text == "true", record["architecture"], total, active,
                                 record["benchmark"], record["variant"], accuracy, index, hallucination,
                                 record["source"], record["as_of"], released))
    return assign_modes(rows), problems


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


# ---------------------------------------------------------------------------------------------
# attribution


@dataclass
class Attribution:
    subset: str
    n_groups: int
    stats: dict[str, Estimate]  # fit.ATTRIBUTION_STATISTICS that the points support
    notes: list[str]


def attribute(points: list[Point], subset: str, n_boot: int = 2000) -> Attribution:
    points = [p for p in points if p.active_b is not None]
    if len(points) < MIN_GROUPS:
        return Attribution(subset, len(points), {}, [f"{len(points)} groups: need {MIN_GROUPS}"])
    stats, notes = attribution([p.total_b for p in points], [p.active_b for p in points],
                               [p.accuracy_pct for p in points], n_boot)
    return Attribution(subset, len(points), stats, notes)


# ---------------------------------------------------------------------------------------------
# the whole analysis of one benchmark


def size_points(rows: list[ModelRow], benchmark: str) -> list[size.SizePoint]:
    """Open models with a total and an accuracy: each weights group's best row in each mode."""
    best: dict[tuple, ModelRow] = {}
    for r in rows:
        if r.benchmark != benchmark or r.total_b is None or r.accuracy_pct is None or not r.open_weights:
            continue
        key = (r.developer, r.total_b, r.active_b, r.reasoning)
        if key not in best or r.accuracy_pct > best[key].accuracy_pct:
            best[key] = r
    return [size.size_point(r) for r in best.values()]


@dataclass
class SizeEstimate:
    model: str
    developer: str
    benchmark: str
    variant: str
    accuracy_pct: float
    reasoning: bool | None
    estimate_b: float
    low_b: float
    high_b: float
    extrapolated: bool
    extrapolation_decades: float
    size_model: str = ""
    line: int | None = None
    true_b: float | None = None  # the row's own total, when it has one (a held-out check)
    months_ahead: float = 0.0  # months between the fit's newest release and this model's
    mode_source: str = ""  # how the row's mode is known (`row_mode`)


@dataclass
class BenchmarkSurvey:
    benchmark: str
    attribution: list[Attribution]
    selection: size.SizeSelection | None
    points: list[size.SizePoint]
    estimates: list[SizeEstimate]
    note: str = ""  # why there are no estimates, when there are none

    def estimate_row(self, row: ModelRow) -> SizeEstimate | None:
        """The row's total from its score (its own parameter cells hidden), or None when no
        validated size model can use the row."""
        if self.selection is None:
            return None
        point = size.size_point(row, hide_counts=True)
        model = size.fallback(self.selection, point, self.points)
        if model is None:
            return None
        forecast = model.forecasts([point])[0]
        half = forecast.half_width(model.scales)
        centre = forecast.centre
        decades = model.extrapolation(10**centre)
        return SizeEstimate(row.model, row.developer, row.benchmark, row.variant, row.accuracy_pct,
                            row.reasoning, 10**centre, 10 ** (centre - half), 10 ** (centre + half),
                            decades > 0, decades, model.candidate.name, row.line, row.total_b,
                            forecast.months, row.mode_source)


def survey_benchmark(rows: list[ModelRow], benchmark: str, n_boot: int = 2000) -> BenchmarkSurvey | None:
    """Attribution, the size model chosen by held-out error, and closed-model estimates."""
    points = fit_points(rows, benchmark, by_reasoning=False)
    if len(points) < MIN_GROUPS:
        return None
    attribution_ = [attribute(points, "all models", n_boot),
                    attribute([p for p in points if p.is_moe], "MoE only", n_boot)]
    sized = size_points(rows, benchmark)
    selection = size.select(sized)
    result = BenchmarkSurvey(benchmark, attribution_, selection, sized, [])
    if selection is None:
        result.note = (f"no size estimates: {len(sized)} points from {len({p.developer for p in sized})} developers "
                       f"are too few to validate a size model (leaving one developer out must leave "
                       f"{size.MIN_POINTS} points every candidate can use, from 3 or more developers)")
        return result
    closed = [r for r in rows if r.benchmark == benchmark and r.accuracy_pct is not None
              and (not r.open_weights or r.total_b is None)]
    result.estimates = [e for e in map(result.estimate_row, closed) if e is not None]
    return result


def weights_key(row: ModelRow | SizeEstimate, total_b: float | None) -> tuple:
    """Rows of one set of weights: same developer and counts (open), or same name without its
    mode words (closed models have no counts)."""
    if total_b is not None:
        return (row.developer, total_b)
    base = re.sub(r"\((non-)?reasoning[^)]*\)|\b(thinking|reasoning)\b", "", row.model, flags=re.I)
    return (row.developer, " ".join(base.split()).lower())


def mode_agreement(result: BenchmarkSurvey, rows: list[ModelRow]) -> list[dict]:
    """For every weights group with a reasoning and a non-reasoning row on this benchmark, the
    ratio of the two rows' size estimates (reasoning over non-reasoning; 1 = they agree)."""
    if result.selection is None:
        return []
    by_group: dict[tuple, dict[bool, SizeEstimate]] = {}
    for r in rows:
        if r.benchmark != result.benchmark or r.accuracy_pct is None or r.reasoning is None:
            continue
        e = result.estimate_row(r)
        if e is None:
            continue
        modes = by_group.setdefault(weights_key(r, r.total_b if r.open_weights else None), {})
        if r.reasoning not in modes or r.accuracy_pct > modes[r.reasoning].accuracy_pct:
            modes[r.reasoning] = e
    return [{"group": f"{key[0]}: {modes[True].model} / {modes[False].model}",
             "ratio": modes[True].estimate_b / modes[False].estimate_b}
            for key, modes in by_group.items() if len(modes) == 2]


def held_out_check(estimates: list[SizeEstimate]) -> dict:
    """Median |log10 error|, share within 2x and 80% coverage over estimates of rows that carry
    their true total (`moelab survey --predict` on a table with parameter counts)."""
    known = [e for e in estimates if e.true_b is not None]
    if not known:
        return {"n": 0, "median_abs_error_decades": math.nan, "within_2x": math.nan, "coverage": math.nan}
    errors = np.array([math.log10(e.estimate_b / e.true_b) for e in known])
    covered = [e.low_b <= e.true_b <= e.high_b for e in known]
    return {"n": len(known), "median_abs_error_decades": float(np.median(np.abs(errors))),
            "within_2x": float(np.mean(np.abs(errors) <= math.log10(2))), "coverage": float(np.mean(covered)),
            "median_error_decades": float(np.median(errors))}


FRONTIER_RANGE_B = (5_000, 10_000)  # the seed's "5-10T"


def frontier_claim(result: BenchmarkSurvey, top: int = 8) -> tuple[list[SizeEstimate], str]:
    """The `top` closed models by accuracy, and one sentence on what the data support about 5-10T."""
    best = sorted(result.estimates, key=lambda e: -e.accuracy_pct)[:top]
    if not best:
        return [], ""
    low, high = FRONTIER_RANGE_B
    include = [e.model for e in best if e.low_b <= high and e.high_b >= low]
    beyond = [e.model for e in best if e.extrapolated and e.estimate_b > 1]
    largest = max(p.total_b for p in result.selection.chosen.points_)
    text = (f"On {result.benchmark}, of the {len(best)} best-scoring closed models, "
            f"{len(include)} have 80% intervals that include 5-10T ({', '.join(include) or 'none'}); "
            f"{len(beyond)} of the {len(best)} estimates lie beyond the largest open model the fit saw "
            f"({largest:,.0f}B) and are extrapolations.")
    return best, text


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
    estimates = (by_benchmark[r.benchmark].estimate_row(r) for r in rows
                 if r.accuracy_pct is not None and r.benchmark in by_benchmark)
    return [e for e in estimates if e is not None]


def _estimate_json(e: Estimate | None) -> dict | None:
    return None if e is None else {"value": e.value, "low": e.low, "high": e.high, "level": e.level}


def estimate_json(e: SizeEstimate) -> dict:
    return {"model": e.model, "developer": e.developer, "benchmark": e.benchmark, "variant": e.variant,
            "accuracy_pct": e.accuracy_pct, "reasoning": e.reasoning, "mode_source": e.mode_source,
            "size_model": e.size_model, "months_ahead": e.months_ahead,
            "true_b": e.true_b,
            "estimate_b": e.estimate_b if math.isfinite(e.estimate_b) else None,
            "low_b": e.low_b, "high_b": e.high_b if math.isfinite(e.high_b) else None,
            "interval_level": LEVEL, "extrapolated": e.extrapolated,
            "extrapolation_decades": e.extrapolation_decades if math.isfinite(e.extrapolation_decades) else None,
            "line": e.line}


def held_out_models(selection: size.SizeSelection) -> dict[str, tuple]:
    """The chosen model and the reference ones, each as (candidate, scales, held-out forecasts)."""
    chosen = selection.chosen
    return {"chosen": (chosen.candidate, chosen.scales, selection.forecasts), **selection.reference}


def held_out_json(scales: size.Scales, forecasts: list[size.Forecast]) -> dict:
    first = size.within(forecasts)
    return {f"within {size.HORIZON_MONTHS} months": size.summarise(first, scales),
            "by_months_ahead": size.by_horizon(forecasts, scales),
            f"by_size_within {size.HORIZON_MONTHS} months": size.by_size(first, scales)}


def results_json(results: list[BenchmarkSurvey], rows: list[ModelRow]) -> dict:
    out = {}
    for b in results:
        entry = {
            "attribution": [{"subset": a.subset, "n_groups": a.n_groups, "notes": a.notes,
                             **{k: _estimate_json(a.stats.get(k)) for k in ATTRIBUTION_STATISTICS}}
                            for a in b.attribution],
            "note": b.note,
            "estimates": [estimate_json(e) for e in b.estimates],
        }
        if b.selection is not None:
            chosen = b.selection.chosen
            entry |= {
                "validation": [{"model": r.candidate.name, "rolling_origin": r.rolling,
                                "leave_one_developer_out": r.lodo, "score": r.score}
                               for r in sorted(b.selection.results, key=lambda r: r.score)],
                "chosen_by": b.selection.validation,
                "chosen_model": chosen.candidate.name,
                "held_out": {name: held_out_json(scales, forecasts)
                             for name, (_, scales, forecasts) in held_out_models(b.selection).items()},
                "interval_scales": dataclasses.asdict(chosen.scales),
                "coefficients": {k: _estimate_json(e) for k, e in chosen.coefficients().items()},
                "developer_effect_sd_decades": (math.sqrt(chosen.fit_.tau2_) if chosen.candidate.developer != "none"
                                                else None),
                "sparsity_effect": _estimate_json(size.sparsity_effect(b.selection, b.points)),
                "fit_points": len(chosen.points_),
                "newest_release": chosen.newest_.isoformat() if chosen.newest_ else None,
                "open_total_range_b": list(chosen.total_range_),
                "mode_agreement": mode_agreement(b, rows),
                "frontier_claim": frontier_claim(b)[1],
            }
        out[b.benchmark] = entry
    return out
