"""The command line: a run from a config file, and one-line errors with exit status 2."""

import json

from typer.testing import CliRunner

from moelab.cli import app
from moelab.config import save_config
from tests.conftest import small_config

runner = CliRunner()


def test_train_from_a_config_file(tmp_path):
    cfg = small_config()
    cfg.train.exposures = 2
    save_config(cfg, tmp_path / "run.toml")
    result = runner.invoke(app, ["train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "out"),
                                 "--seed", "7"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["seed"] == 7 and "bits / param" in result.output

    again = runner.invoke(app, ["train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "out")])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_config_errors_exit_2_with_one_line_and_no_traceback(tmp_path):
    (tmp_path / "bad.toml").write_text("[model.moe]\nn_experts = 2\ntop_k = 3\n")
    result = runner.invoke(app, ["train", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "model.moe.top_k" in lines[0] and "Traceback" not in result.output


def test_unknown_preset_and_preset_list():
    assert runner.invoke(app, ["train", "--preset", "nope"]).exit_code == 2
    listed = runner.invoke(app, ["train", "--list-presets"])
    assert "tiny-dense" in listed.output and "tiny-moe" in listed.output
