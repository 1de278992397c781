"""Ray and the local pool give the same metrics for the same runs."""

import json

import pytest
from typer.testing import CliRunner

from moelab.cli import app
from moelab.sweeps import Store
from moelab.sweeps.executors import LocalExecutor

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
"seed" = [0]
"""


def metrics_by_key(folder):
    store = Store(folder)
    rows = store.rows()
    store.close()
    assert all(r["status"] == "done" for r in rows), [r["reason"] for r in rows]
    return {r["key"]: r["metrics"] for r in rows}


@pytest.mark.slow
def test_ray_executor_matches_local(tmp_path):
    pytest.importorskip("ray")
    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP)
    runner = CliRunner()
    for engine in ("local", "ray"):  # Ray asked for GPU shares on a cluster without GPUs: CPU runs
        gpus = ["--gpus-per-run", "0.25"] if engine == "ray" else []
        result = runner.invoke(app, ["sweep", str(spec), "--out", str(tmp_path / engine),
                                     "--executor", engine, "--workers", "2", *gpus])
        assert result.exit_code == 0, result.output
    assert "the Ray cluster has no GPUs, so the runs train on CPU" in result.output
    local, ray = metrics_by_key(tmp_path / "local"), metrics_by_key(tmp_path / "ray")
    assert set(local) == set(ray) and len(local) == 2
    for key in local:
        for field in ("bits", "accuracy", "final_loss", "bit_terms", "p_total", "p_active"):
            assert ray[key][field] == local[key][field], field
    assert all(m["device"].startswith("cpu") for m in ray.values())
    assert (tmp_path / "ray" / "report.html").exists()
    assert json.loads((tmp_path / "ray" / "sweep.json").read_text())["name"] == "engines"


def test_unknown_executor_is_refused(tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP)
    result = CliRunner().invoke(app, ["sweep", str(spec), "--out", str(tmp_path / "x"), "--executor", "slurm"])
    assert result.exit_code == 2 and "--executor 'slurm'" in result.output


def test_ray_tasks_ask_for_gpu_shares_and_run_on_cuda_where_the_cluster_has_gpus():
    from moelab.config import RunConfig
    from moelab.sweeps.executors import ray_task

    cfg = RunConfig()
    options, run = ray_task(cfg, gpus_per_run=0.25, cluster_gpus=8)
    assert options == {"num_cpus": 1, "num_gpus": 0.25, "max_retries": 0} and run.train.device == "cuda"
    options, run = ray_task(cfg, gpus_per_run=0.25, cluster_gpus=0)
    assert options["num_gpus"] == 0 and run.train.device == "cpu"
    cfg.train.device = "cuda"  # asked for in the config: one whole GPU, as before
    options, run = ray_task(cfg, gpus_per_run=0.0, cluster_gpus=8)
    assert options["num_gpus"] == 1 and run.train.device == "cuda" and cfg is not run


def test_gpu_shares_need_ray():
    from moelab.errors import MoelabError
    from moelab.sweeps.executors import make_executor

    with pytest.raises(MoelabError, match="go with --executor ray"):
        make_executor("local", gpus_per_run=0.5)


@pytest.mark.parametrize("kill", [False, True])
def test_closing_the_local_pool_joins_its_manager_thread(kill):
    # A manager thread still running at exit races the interpreter's exit hook for its wake-up
    # pipe: a cleanly stopped sweep then printed an "OSError: Bad file descriptor" traceback.
    executor = LocalExecutor(1)
    assert executor.pool.submit(abs, -3).result(timeout=60) == 3
    manager = executor.pool._executor_manager_thread
    assert manager.is_alive()
    executor.close(kill=kill)
    assert not manager.is_alive()
