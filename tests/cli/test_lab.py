"""`moelab train`, `sweep` and `report` on inputs a user can get wrong: exit 2, a message naming
the path or field and the fix, and nothing already there lost."""

import os
import sqlite3

import pytest
from typer.testing import CliRunner

from moelab.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("keep me")
    for args in (["train", "--preset", "tiny-dense", "--out", tmp_path / "f"],
                 ["sweep", "--preset", "sparsity-ladder", "--out", tmp_path / "f"]):
        result = run(*args)
        assert result.exit_code == 2 and "a file, not a" in result.output, result.output
    assert (tmp_path / "f").read_text() == "keep me"


def test_a_config_that_is_a_folder_empty_binary_or_out_of_range_is_refused(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.toml").write_text("")
    (tmp_path / "binary.toml").write_bytes(bytes(range(256)))
    (tmp_path / "negative.toml").write_text("seed = -1\n")
    for name, message in (("folder", "a folder, not a config file"), ("empty.toml", "the file is empty"),
                          ("binary.toml", "not a text file"), ("negative.toml", "seed = -1")):
        result = run("train", tmp_path / name, "--out", tmp_path / "run")
        assert result.exit_code == 2 and message in result.output, (name, result.output)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_damaged_or_empty_store_is_refused_and_left_as_it_was(tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    junk = os.urandom(300)
    (damaged / "store.sqlite").write_bytes(junk)
    for args in (["report", damaged], ["sweep", "--preset", "sparsity-ladder", "--out", damaged]):
        result = run(*args)
        assert result.exit_code == 2 and "not a readable sweep store" in result.output, result.output
    assert (damaged / "store.sqlite").read_bytes() == junk

    empty = tmp_path / "empty"
    empty.mkdir()
    sqlite3.connect(empty / "store.sqlite").close()
    (empty / "report.html").write_text("an earlier report")
    result = run("report", empty)
    assert result.exit_code == 2 and "holds no runs" in result.output
    assert (empty / "report.html").read_text() == "an earlier report"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_a_read_only_sweep_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    result = run("sweep", "--preset", "sparsity-ladder", "--out", folder / "inner")
    folder.chmod(0o700)
    assert result.exit_code == 2 and "not writable" in result.output


@pytest.mark.slow
def test_a_sweep_with_a_failed_run_exits_4_after_writing_its_report(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('name = "f"\nbase = "tiny-dense"\n[set]\n"data.n_people" = 100\n"train.exposures" = 5\n'
                    '"train.grad_clip" = 0.0\n[[grid]]\n"train.lr" = [1e-2, 1e30]\n')
    result = run("sweep", spec, "--out", tmp_path / "out", "--workers", "1")
    assert result.exit_code == 4, result.output
    assert "1 of 2 runs failed" in result.output and (tmp_path / "out" / "report.html").exists()


def test_report_with_another_sweep_analyses_both_and_counts_a_shared_run_once(tmp_path):
    import json

    from moelab.config import RunConfig
    from moelab.sweeps import Store

    for name, keys in (("memory", ["shared", "pkm"]), ("frontier", ["shared", "hash", "unreported"])):
        store = Store(tmp_path / name)
        for key in keys:
            store.add(key, f"{key} seed=0", RunConfig())
            store.mark_done(key, {"name": key, "p_total": 10, "p_active": 10, "bits": 5.0, "bits_per_param": 0.5,
                                  "accuracy": 0.5, "config": {}})
        store.close()
        (tmp_path / name / "sweep.json").write_text(json.dumps(
            {"name": name, "keys": keys, "reported": [k for k in keys if k != "unreported"]}))
    result = run("report", tmp_path / "memory", "--with", tmp_path / "frontier")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "memory" / "report.html").read_text()
    assert "memory with frontier" in page and "3 of 3 runs done" in page  # the unreported run stays out
    assert page.count("hash seed=0") >= 1 and page.count("shared seed=0") == page.count("pkm seed=0")
    result = run("report", tmp_path / "memory", "--with", tmp_path / "nowhere")
    assert result.exit_code == 2 and "--with" in result.output and "no store.sqlite" in result.output


def test_routing_reads_finished_moe_runs_and_refuses_dense_or_missing_ones(tmp_path, trained_run):
    from moelab.run import execute
    from tests.conftest import small_config

    cfg = small_config(n_experts=4, top_k=1, router="hash")
    cfg.train.exposures = 5
    execute(cfg, tmp_path / "hash")
    result = run("routing", tmp_path / "hash")
    assert result.exit_code == 0, result.output
    assert "token determinism" in result.output and "1.000" in result.output
    _, dense_dir, _ = trained_run
    result = run("routing", dense_dir)
    assert result.exit_code == 2 and "no finished MoE run" in result.output
    result = run("routing", tmp_path / "nowhere")
    assert result.exit_code == 2 and "nowhere" in result.output
