"""Survey data validation, weights groups, estimation and the CLI on the bundled data."""

import csv
import html
import json
import math
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from moelab.analysis import survey as sv
from moelab.cli import app

HEADER = ",".join(sv.COLUMNS)


def row(model="M", developer="D", open_weights="true", arch="dense", total="10", active="10",
        benchmark="AA-Omniscience", variant="non-reasoning", accuracy="20", index="", halluc=""):
    return ",".join([model, developer, open_weights, arch, total, active, benchmark, variant, accuracy,
                     index, halluc, "https://example.org", "2026-04-10"])


def write(tmp_path, *rows, name="t.csv"):
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def test_bundled_csv_loads_without_errors():
    rows, problems = sv.load_rows()
    with open(sv.bundled_csv(), newline="") as f:
        lines = list(csv.DictReader(f))
    assert problems == [] and len(rows) == len(lines)  # every row of the bundled table is valid
    assert {r.model for r in rows} == {line["model"].strip() for line in lines}
    assert sv.benchmark_groups(rows)["AA-Omniscience"] >= 100


@pytest.mark.parametrize("bad, line, column, what", [
    (row(accuracy="120"), 2, "accuracy_pct", "out of range"),
    (row(accuracy="abc"), 2, "accuracy_pct", "not a number"),
    (row(total="10", active="20"), 2, "active_params_b", "exceeds total_params_b"),
    (row(total="-3", active=""), 2, "total_params_b", "out of range"),
    (row(benchmark="MMLU"), 2, "benchmark", "unknown benchmark"),
    (row(open_weights="maybe"), 2, "open_weights", "use true or false"),
    (row(model=""), 2, "model", "required"),
    (row(index="-150"), 2, "omniscience_index", "out of range"),
])
def test_every_bad_field_is_reported_with_line_and_column(tmp_path, bad, line, column, what):
    path = write(tmp_path, row(), bad)
    with pytest.raises(sv.SurveyDataError) as err:
        sv.load_rows(path)
    assert f"line {line + 1}, column {column}: " in str(err.value) and what in str(err.value)
    rows, problems = sv.load_rows(path, skip_bad_rows=True)
    assert len(rows) == 1 and len(problems) == 1


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("model,developer\nA,B\n")
    with pytest.raises(sv.SurveyDataError, match="missing column.*open_weights"):
        sv.load_rows(path)


def test_cli_exits_2_on_bad_rows_and_skips_them_when_asked(tmp_path):
    good = [row(model=f"M{i}", developer=f"D{i}", total=str(10 * 2 ** i), active=str(10 * 2 ** i),
                accuracy=str(10 + 3 * i)) for i in range(8)]
    path = write(tmp_path, *good[:1], row(accuracy="101"), *good[1:])
    runner = CliRunner()
    result = runner.invoke(app, ["survey", str(path)])
    assert result.exit_code == 2 and "line 3, column accuracy_pct" in result.output
    result = runner.invoke(app, ["survey", str(path), "--skip-bad-rows", "--json", "--n-boot", "100"])
    assert result.exit_code == 0, result.output
    assert re.search(r"skipped: \S+ line 3, column accuracy_pct", result.output)
    assert json.loads(result.output[result.output.index("{"):])["benchmarks"]  # the good rows were surveyed


def test_variants_of_one_set_of_weights_count_once_as_the_best(tmp_path):
    rows, _ = sv.parse_rows(write(tmp_path,
                                  row(model="X", variant="non-reasoning", accuracy="20"),
                                  row(model="X Reasoning", variant="reasoning", accuracy="25"),
                                  row(model="Y", total="70", active="70", accuracy="30")))
    points = sv.fit_points(rows, "AA-Omniscience", by_reasoning=False)
    assert sorted(p.accuracy_pct for p in points) == [25.0, 30.0]
    assert len(sv.fit_points(rows, "AA-Omniscience", by_reasoning=True)) == 3
    assert [r.reasoning for r in rows] == [False, True, False]


def synthetic_rows(n_dev=14, per_dev=5, seed=0, lab_sd=0.2, noise=0.15):
    """log10 total = -0.5 + 0.06 accuracy - 0.2 reasoning + a lab effect (sd `lab_sd`) + noise,
    each weights group scored in both modes (reasoning rows 5 points higher, same weights)."""
    rng = np.random.default_rng(seed)
    out = []
    for d in range(n_dev):
        effect = rng.normal(0, lab_sd)
        for m in range(per_dev):
            accuracy = float(rng.uniform(5, 45))
            total = float(10 ** (-0.5 + 0.06 * accuracy + effect + rng.normal(0, noise)))
            for reasoning in (False, True):
                acc = accuracy + (5.0 if reasoning else 0.0)
                # the reasoning row's weights are the same; its score is higher, so truth needs -0.2 per +5
                total_row = total if not reasoning else total
                out.append(sv.ModelRow(len(out) + 2, f"m{d}-{m}{'-r' if reasoning else ''}", f"dev{d}", True,
                                       "dense", total_row, total_row, "AA-Omniscience",
                                       "reasoning" if reasoning else "non-reasoning", acc, None, None, "", ""))
    return out


def test_the_chosen_size_model_recovers_known_coefficients_with_developer_effects():
    from moelab.analysis.size import Candidate, SizeModel

    rows = synthetic_rows(n_dev=30, lab_sd=0.3)
    result = sv.survey_benchmark(rows, "AA-Omniscience", n_boot=200)
    chosen = result.selection.chosen
    assert chosen.candidate.developer != "none" and chosen.candidate.reasoning and chosen.candidate.measure == "accuracy"
    model = SizeModel(Candidate("accuracy", reasoning=True, developer="random")).fit(result.points)
    c = model.coefficients()
    # the reasoning row is the same weights 5 points higher: -0.06 x 5 = -0.3 decades
    assert c["accuracy"].low < 0.06 < c["accuracy"].high and c["reasoning"].low < -0.3 < c["reasoning"].high
    assert 0.15 < math.sqrt(model.fit_.tau2_) < 0.45  # the lab effects' spread, 0.3
    assert result.selection.validation == "leave one developer out"  # no release dates: no rolling origin
    assert all(r.lodo["median_abs_error_decades"] < 0.5 for r in result.selection.results)


def test_unseen_labs_are_covered_at_the_nominal_rate_on_synthetic_data():
    """Fitted on 200 labs (three draws), predicting 20,000 rows of 2,000 labs it never saw: the
    80% intervals, which carry the spread of lab effects, cover 80% +- 3 points on average."""
    from moelab.analysis.size import Candidate, SizeModel

    test = sv.size_points(synthetic_rows(n_dev=2000, lab_sd=0.3, seed=2), "AA-Omniscience")
    truth = np.log10([p.total_b for p in test])
    coverage = []
    for seed in (1, 3, 4):
        train = sv.size_points(synthetic_rows(n_dev=200, lab_sd=0.3, seed=seed), "AA-Omniscience")
        model = SizeModel(Candidate("accuracy", reasoning=True, developer="random")).fit(train)
        low, high = model.predict_interval(test, known_developers=False)
        coverage.append(np.mean((low <= truth) & (truth <= high)))
    assert abs(np.mean(coverage) - 0.8) <= 0.03


def test_estimates_recover_held_out_sizes_and_flag_extrapolation():
    rows = synthetic_rows()
    result = sv.survey_benchmark(rows, "AA-Omniscience", n_boot=200)
    assert result.attribution[0].stats["r_total"].value > 0.9
    closed = sv.ModelRow(999, "closed", "lab", False, "", None, None, "AA-Omniscience", "non-reasoning",
                         (math.log10(300) + 0.5) / 0.06, None, None, "", "")
    estimate = result.estimate_row(closed)
    assert estimate.low_b < 300 < estimate.high_b and not estimate.extrapolated
    far = result.estimate_row(sv.ModelRow(1000, "giant", "lab", False, "", None, None, "AA-Omniscience",
                                          "non-reasoning", 90, None, None, "", ""))
    largest = max(r.total_b for r in rows)
    assert far.extrapolated and far.estimate_b > largest
    assert far.extrapolation_decades == pytest.approx(math.log10(far.estimate_b / largest))
    agreement = sv.mode_agreement(result, rows)
    assert len(agreement) == 14 * 5 and all(0.5 < a["ratio"] < 2 for a in agreement)


def test_a_small_user_table_says_why_it_has_no_estimates(tmp_path):
    rows = [row(model=f"M{i}", developer=f"D{i % 2}", total=str(2 ** (i + 1)), active=str(2 ** (i + 1)),
                accuracy=str(5 + 3 * i)) for i in range(9)]
    rows.append(row(model="Closed", open_weights="false", total="", active="", arch="", accuracy="20"))
    result = CliRunner().invoke(app, ["survey", str(write(tmp_path, *rows)), "--n-boot", "100"])
    assert result.exit_code == 0, result.output
    assert "no size estimates" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_survey_on_bundled_data_prints_what_the_issue_asks():
    result = CliRunner().invoke(app, ["survey", "--benchmark", "AA-Omniscience", "--n-boot", "200"],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    for text in ("r(total)", "r(active)", "partial r(total | active)", "gamma", "chosen by rolling origin",
                 "7-12 months ahead", "survey v2", "80% coverage", "closed models", "months after fit",
                 "decades outside sizes", "two modes", "include 5-10T", "per month after its newest release"):
        assert text in result.output, text


@pytest.mark.slow
def test_predict_json_returns_estimates_per_row(tmp_path):
    path = write(tmp_path, row(model="Mystery A", open_weights="false", total="", active="", arch="",
                               accuracy="22"),
                 row(model="Mystery B", open_weights="false", total="", active="", arch="",
                     benchmark="IKP", accuracy="60"))
    result = CliRunner().invoke(app, ["survey", "--predict", str(path), "--json", "--n-boot", "200"])
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.output)["predictions"]
    assert [p["model"] for p in predictions] == ["Mystery A", "Mystery B"]
    for p in predictions:
        assert {"model", "benchmark", "accuracy_pct", "estimate_b", "low_b", "high_b", "extrapolated"} <= set(p)
        assert p["low_b"] < p["estimate_b"] < p["high_b"]


@pytest.mark.slow
def test_html_report(tmp_path):
    result = CliRunner().invoke(app, ["survey", "--benchmark", "IKP", "--html", str(tmp_path), "--n-boot", "200"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and (tmp_path / "IKP.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = sv.survey(sv.load_rows()[0], ["IKP"], n_boot=200)
    for e in results[0].estimates:  # every closed model's estimate is in the table, escaped
        assert f"<td>{html.escape(e.model)}</td>" in page
    for r in results[0].selection.results:
        assert f"<td>{html.escape(r.candidate.name)}" in page


def test_a_duplicated_column_or_header_line_is_refused_as_duplicate(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(HEADER + ",accuracy_pct\n" + row() + ",30\n")
    with pytest.raises(sv.SurveyDataError, match="line 1: duplicate column.*accuracy_pct"):
        sv.load_rows(path)
    path = write(tmp_path, row(), HEADER, row(model="N"))
    with pytest.raises(sv.SurveyDataError, match="line 3: duplicate header line"):
        sv.load_rows(path)


def test_survey_json_is_strict_json_with_null_for_undefined_statistics(tmp_path):
    rows = [row(model=f"M{i}", developer=f"D{i % 4}", total=str(2 ** i), active=str(2 ** i), accuracy=str(5 + 3 * i))
            for i in range(10)]  # dense models only: nothing can be said of MoE models alone
    result = CliRunner().invoke(app, ["survey", str(write(tmp_path, *rows)), "--json", "--n-boot", "100"])
    assert result.exit_code == 0, result.output

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    document = json.loads(result.stdout, parse_constant=refuse)
    assert "null" in result.stdout and document["benchmarks"]


def test_the_size_model_follows_scikit_learns_conventions():
    """Choices in the constructor, every fitted attribute made by fit, predict returns the
    prediction and predict_interval its interval, widened by the scales it was built with."""
    from moelab.analysis.size import Candidate, Scales, SizeModel

    points = sv.size_points(synthetic_rows(), "AA-Omniscience")
    plain = SizeModel(Candidate("accuracy", reasoning=True, developer="random"))
    assert not hasattr(plain, "fit_") and not hasattr(plain, "points_")
    assert plain.fit(points) is plain and hasattr(plain, "fit_") and hasattr(plain, "points_")
    centre = plain.predict(points[:5])
    assert centre.shape == (5,)
    low, high = plain.predict_interval(points[:5])
    wide_low, wide_high = SizeModel(plain.candidate, Scales(unseen=2.0, known=2.0)).fit(points).predict_interval(
        points[:5])
    np.testing.assert_allclose(high - centre, (wide_high - centre) / 2)
    np.testing.assert_allclose(centre - low, (centre - wide_low) / 2)
