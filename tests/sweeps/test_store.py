import csv
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from moelab.config import KEY_FIELDS_IF_SET, KEY_SCHEMA, NOT_IN_RUN_KEY, RUN_KEY_FIELDS, RunConfig, field_types, run_key
from moelab.errors import MoelabError
from moelab.sweeps import Store, load_sweep_preset
from moelab.sweeps.grid import selection_runs

RESULTS = Path(__file__).parents[2] / "docs" / "results"


def metrics(bits: float) -> dict:
    return {"name": "r", "p_total": 10, "p_active": 10, "bits": bits, "bits_per_param": bits / 10,
            "accuracy": 0.5, "config": {}}


def test_status_transitions_and_recovery(tmp_path):
    store = Store(tmp_path)
    cfg = RunConfig()
    for key in ("a", "b", "c", "d", "e"):
        store.add(key, key, cfg)
    store.add("a", "renamed", cfg)  # known runs are not reset; only their label follows the sweep
    for key in ("a", "b", "c", "d", "e"):
        store.mark_running(key)
    store.mark_done("a", metrics(1.0))
    store.mark_failed("b", "loss became nan")
    store.mark_failed("e", "the worker died; killed, or out of memory?")
    # c finished its folder just before the driver died; d was interrupted mid-run; e finished its
    # folder although a broken pool was blamed for it
    for key, bits in (("c", 3.0), ("e", 5.0)):
        store.run_dir(key).mkdir(parents=True)
        (store.run_dir(key) / "metrics.json").write_text(json.dumps(metrics(bits)))

    store.recover(["a", "b", "c", "d", "e"], retry_failed=False)
    assert store.statuses() == {"a": "done", "b": "failed", "c": "done", "d": "pending", "e": "done"}
    rows = {r["key"]: r for r in store.rows()}
    assert rows["c"]["metrics"]["bits"] == 3.0 and rows["e"]["metrics"]["bits"] == 5.0
    assert rows["b"]["reason"] == "loss became nan"
    assert rows["a"]["label"] == "renamed" and rows["a"]["config"]["model"]["d_model"] == cfg.model.d_model

    store.recover(["b"], retry_failed=True)
    assert store.statuses(["b"]) == {"b": "pending"}
    store.close()
    assert Store(tmp_path).statuses()["a"] == "done"  # persisted


def test_truncated_metrics_are_named_and_redone_or_restored(tmp_path):
    store = Store(tmp_path)
    for key in ("running", "done"):
        store.add(key, key, RunConfig())
        store.mark_running(key)
        store.run_dir(key).mkdir(parents=True)
    store.mark_done("done", metrics(7.0))
    (store.run_dir("running") / "metrics.json").write_text('{"bits": 3.0, "acc')  # torn write
    (store.run_dir("done") / "metrics.json").write_text('{"bi')

    store.recover(["running", "done"], retry_failed=False)  # no JSONDecodeError
    assert store.statuses() == {"running": "pending", "done": "done"}
    assert not (store.run_dir("running") / "metrics.json").exists()
    assert json.loads((store.run_dir("done") / "metrics.json").read_text())["bits"] == 7.0
    assert any(str(store.run_dir("running") / "metrics.json") in note for note in store.notes)


def test_every_config_field_is_in_the_run_key_or_explicitly_left_out():
    fields = set(field_types())
    lists = [set(RUN_KEY_FIELDS), set(KEY_FIELDS_IF_SET), set(NOT_IN_RUN_KEY)]
    assert set.union(*lists) == fields
    assert sum(map(len, lists)) == len(fields)  # each field in one list only


def test_run_key_ignores_where_a_run_executes_but_not_what_it_computes():
    base = RunConfig()
    for section, name, value in (("train", "threads", 2), ("train", "device", "auto"),
                                 ("train", "log_every", 7), ("train", "eval_batch_size", 64)):
        other = RunConfig()
        setattr(getattr(other, section), name, value)
        other.name = "renamed"
        assert run_key(other) == run_key(base), name
    other = RunConfig()
    other.train.lr = 3e-3
    assert run_key(other) != run_key(base)
    other = RunConfig()
    other.model.moe.n_experts = 4
    assert run_key(other) != run_key(base)


def test_a_store_keyed_by_an_old_schema_is_rekeyed_with_its_folders_and_sweep_file(tmp_path):
    store = Store(tmp_path)
    cfg = RunConfig()
    store.add("oldkey", "dense", cfg)
    store.mark_done("oldkey", metrics(1.0))
    twin = RunConfig()
    twin.train.threads = 4  # the same run under the new key: one of the two is kept
    store.add("oldtwin", "dense threads=4", twin)
    store.run_dir("oldkey").mkdir(parents=True)
    (store.run_dir("oldkey") / "metrics.json").write_text(json.dumps(metrics(1.0)))
    (tmp_path / "sweep.json").write_text(json.dumps({"name": "s", "keys": ["oldkey"]}))
    store.db.execute("PRAGMA user_version = 1")
    store.close()

    store = Store(tmp_path)
    new = run_key(cfg)
    assert store.statuses() == {new: "done"}
    assert (store.run_dir(new) / "metrics.json").exists() and not store.run_dir("oldkey").exists()
    assert json.loads((tmp_path / "sweep.json").read_text())["keys"] == [new]
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == KEY_SCHEMA
    store.close()
    assert Store(tmp_path).statuses() == {new: "done"}  # idempotent


@pytest.mark.parametrize("preset", sorted(p.name for p in RESULTS.iterdir() if (p / "store.sqlite").exists()))
def test_stored_results_are_on_the_current_keys_and_resume(tmp_path, preset):
    with sqlite3.connect(RESULTS / preset / "store.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == KEY_SCHEMA
    shutil.copytree(RESULTS / preset, tmp_path / preset, ignore=shutil.ignore_patterns("runs"))
    store = Store(tmp_path / preset)
    keys = json.loads((tmp_path / preset / "sweep.json").read_text())["keys"]
    statuses = store.statuses()
    # a store keeps the rows of configurations its preset has since cut (finished, or never started)
    assert set(keys) <= set(statuses)
    assert {s for key, s in statuses.items() if key not in keys} <= {"done", "pending"}
    sweep = load_sweep_preset(preset)
    # every run of the preset is found under its current key (a store still being filled resumes)
    planned = sweep.runs if sweep.selection is None else selection_runs(sweep)
    assert {r.key for r in planned} <= set(statuses) and "failed" not in statuses.values()


def test_a_real_store_from_before_the_key_change_reports_and_resumes(tmp_path):
    """tests/data/legacy-balancing: the balancing preset's store as committed before run keys changed."""
    from typer.testing import CliRunner

    from moelab.cli import app

    folder = tmp_path / "balancing"
    shutil.copytree(Path(__file__).parents[1] / "data" / "legacy-balancing", folder)
    old_keys = json.loads((folder / "sweep.json").read_text())["keys"]
    result = CliRunner().invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    new_keys = json.loads((folder / "sweep.json").read_text())["keys"]
    assert len(new_keys) == len(old_keys) == 6 and not set(new_keys) & set(old_keys)
    assert set(new_keys) == {r.key for r in load_sweep_preset("balancing").runs}
    with open(folder / "runs.csv", newline="") as f:
        csv_keys = {row["key"] for row in csv.DictReader(f)}
    assert csv_keys == set(new_keys)


def test_a_pending_run_is_adopted_from_another_store_that_finished_it(tmp_path):
    source, target = Store(tmp_path / "a"), Store(tmp_path / "b")
    cfg = RunConfig()
    for key in ("x", "y"):
        source.add(key, key, cfg)
        target.add(key, key, cfg)
    source.mark_done("x", {**metrics(7.0), "device": "cpu (AMD EPYC, AVX-512)"})
    source.mark_failed("y", "loss became nan")  # only finished runs are adopted
    assert target.reuse([source], ["x", "y"]) == ["x"]
    assert target.statuses() == {"x": "done", "y": "pending"} and target.metrics("x")["bits"] == 7.0
    assert f"run x reused from {source.folder} (trained on cpu (AMD EPYC, AVX-512))" in target.notes
    with pytest.raises(MoelabError, match="--reuse .*nowhere: no store.sqlite here"):
        Store.existing(tmp_path / "nowhere", "--reuse")
    assert not (tmp_path / "nowhere").exists()  # nothing created


def test_sweep_reuse_trains_only_what_no_other_sweep_finished(tmp_path):
    from typer.testing import CliRunner

    from moelab.cli import app
    from tests.sweeps.test_executors import SWEEP

    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP)
    first = CliRunner().invoke(app, ["sweep", str(spec), "--out", str(tmp_path / "first"), "--workers", "1"])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(app, ["sweep", str(spec), "--out", str(tmp_path / "second"), "--workers", "1",
                                      "--reuse", str(tmp_path / "first")])
    assert second.exit_code == 0, second.output
    assert second.output.count("reused from") == 2
    assert not (tmp_path / "second" / "runs").exists()  # nothing trained
    a, b = Store(tmp_path / "first"), Store(tmp_path / "second")
    assert {r["key"]: r["metrics"]["bits"] for r in a.rows()} == {r["key"]: r["metrics"]["bits"] for r in b.rows()}
