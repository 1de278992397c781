"""A probe's result as a survey row, checked by the survey's own loader."""

import pytest

from moelab.analysis.survey import parse_rows
from moelab.errors import MoelabError
from moelab.probe.prompts import ProbeSettings
from moelab.probe.runner import run_probe
from moelab.probe.survey_rows import append_survey_row, survey_row
from tests.probe.test_runner import ANSWERS, Scripted, capital_task


def test_survey_row_is_a_valid_survey_line(tmp_path):
    m = run_probe(Scripted(ANSWERS), capital_task(), tmp_path / "p", ProbeSettings())
    csv_path = tmp_path / "survey.csv"
    append_survey_row(csv_path, survey_row(m, developer="Acme"))
    append_survey_row(csv_path, survey_row(m, model="scripted-2", developer="Acme"))
    rows, problems = parse_rows(csv_path)
    assert problems == [] and [r.model for r in rows] == ["scripted", "scripted-2"]
    row = rows[0]
    assert (row.total_b, row.active_b, row.benchmark, row.accuracy_pct) == (8.0, 1.0, "moelab-probe", 40.0)
    assert row.omniscience_index == 0.0 and row.hallucination_rate_pct == pytest.approx(66.67)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(MoelabError, match="not a survey CSV header"):
        append_survey_row(tmp_path / "other.csv", survey_row(m))
