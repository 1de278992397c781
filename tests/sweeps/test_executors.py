"""Ray and the local pool give the same metrics for the same runs."""

import json

import pytest
from typer.testing import CliRunner

from moelab.cli import app
from moelab.sweeps import Store

SWEEP = """
name = "engines"
base = "tiny-dense"
[set]
"data.n_people" = 100
"train.exposures" = 10
"model.d_model" = 24
"model.d_ff" = 48
[[grid]]
"model.moe.n_experts" = [0, 4]
"seed" = [0, 1]
"""


def metrics_by_key(folder):
    store = Store(folder)
    rows = store.rows()
    store.close()
    assert all(r["status"] == "done" for r in rows), [r["reason"] for r in rows]
    return {r["key"]: r["metrics"] for r in rows}


def test_ray_executor_matches_local(tmp_path):
    pytest.importorskip("ray")
    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP)
    runner = CliRunner()
    for engine in ("local", "ray"):
        result = runner.invoke(app, ["sweep", str(spec), "--out", str(tmp_path / engine),
                                     "--executor", engine, "--workers", "2"])
        assert result.exit_code == 0, result.output
    local, ray = metrics_by_key(tmp_path / "local"), metrics_by_key(tmp_path / "ray")
    assert set(local) == set(ray) and len(local) == 4
    for key in local:
        for field in ("bits", "accuracy", "final_loss", "bit_terms", "p_total", "p_active"):
            assert ray[key][field] == local[key][field], field
    assert (tmp_path / "ray" / "report.html").exists()
    assert json.loads((tmp_path / "ray" / "sweep.json").read_text())["name"] == "engines"


def test_unknown_executor_is_refused(tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP)
    result = CliRunner().invoke(app, ["sweep", str(spec), "--out", str(tmp_path / "x"), "--executor", "slurm"])
    assert result.exit_code == 2 and "--executor 'slurm'" in result.output
