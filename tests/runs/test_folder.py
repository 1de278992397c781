"""The run folder's record: metrics.json as runs/folder.py declares it, read without torch."""

import subprocess
import sys

import pytest

from moelab.errors import MoelabError
from moelab.runs.folder import Metrics, finished_metrics, read_metrics


def test_a_run_writes_every_key_the_record_declares_and_no_other(trained_run):
    cfg, out, metrics = trained_run
    assert set(metrics) == set(Metrics.__annotations__)
    written = read_metrics(out / "metrics.json")
    assert set(written) == set(metrics) and written["bits"] == metrics["bits"] and written["run_key"] == metrics["run_key"]
    assert finished_metrics(cfg, out) == written
    other = cfg.__class__(**{**cfg.__dict__, "seed": cfg.seed + 1})
    assert finished_metrics(other, out) is None  # another config's run key: not this run


def test_damaged_metrics_are_refused_by_name(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"bits": 12.5, "acc')
    with pytest.raises(MoelabError, match=r"metrics.json: not valid JSON.*truncated"):
        read_metrics(path)
    path.write_text('{"bits": 12.5}')
    with pytest.raises(MoelabError, match="not a moelab run's metrics"):
        read_metrics(path)


def test_reading_a_run_folder_imports_no_torch():
    code = "import sys, moelab.runs.folder; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
