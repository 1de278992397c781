"""What a sweep shows while it runs, and the order runs start in."""

import io
import json
import pytest
from pathlib import Path

from rich.console import Console

from moelab.sweeps import Store, load_sweep
from moelab.sweeps.progress import SweepProgress, duration
from moelab.sweeps.runner import Progress, RunProgress, estimated_cost, planned_steps, run_sweep
from tests.sweeps.fakes import InstantExecutor

SWEEP = """
name = "order"
base = "tiny-dense"
[set]
"data.n_people" = 100
[[grid]]
"model.moe.n_experts" = [0, 4, 32]
[[grid]]
"train.exposures" = [300]
"""


def with_progress(cfg, out_dir):
    """What a worker leaves behind: a progress file half way, then metrics."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "progress.json").write_text(json.dumps({"step": 5, "steps": 10, "loss": 1.5}))
    return "done", {"bits_per_param": 0.5}


def test_runs_start_longest_first_and_progress_counts_steps(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(SWEEP)
    sweep = load_sweep(spec)
    costs = {r.config.name: estimated_cost(r.config) for r in sweep.runs}
    executor, seen = InstantExecutor(with_progress), []
    run_sweep(sweep, Store(tmp_path / "out"), executor=executor, on_progress=seen.append)
    assert [c.name for c in executor.submitted] == sorted(costs, key=lambda name: -costs[name])
    assert executor.submitted[0].name.endswith("exposures=300")  # 3x the steps of any other run
    total = sum(planned_steps(r.config) for r in sweep.runs)
    assert seen[-1].steps_total == total and seen[-1].steps_done == total and seen[-1].done == 4
    assert any(p.active and p.active[0].step == 5 and p.active[0].loss == 1.5 for p in seen)


def test_a_log_gets_plain_lines_with_each_running_run():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200, markup=False)
    p = Progress(total=3, done=1, failed=0, running=1, best=0.8, steps_done=150, steps_total=300, eta_seconds=125,
                 active=[RunProgress("E=[8] k=1", 50, 100, 1.234)])
    with SweepProgress(console) as view:
        view.update(p)
        view.update(p)  # same counts within 30 s: no second line
    text = out.getvalue()
    assert text.count("\n") == 1
    assert "1/3 runs finished" in text and "50% of steps" in text and "time left 2m05s" in text
    assert "E=[8] k=1 50/100 loss 1.234" in text and "best 0.800 bits/param" in text
    assert duration(None) == "estimating" and duration(3725) == "1h02m"


def test_the_time_left_counts_only_the_steps_this_driver_trained(tmp_path, monkeypatch):
    """A run resumed half way has steps from an earlier driver; they are no evidence of this one's speed."""
    spec = tmp_path / "s.toml"
    spec.write_text(SWEEP.split("[[grid]]")[0])
    sweep = load_sweep(spec)
    [run] = sweep.runs
    steps = planned_steps(run.config)
    store = Store(tmp_path / "out")
    store.run_dir(run.key).mkdir(parents=True, exist_ok=True)
    progress = store.run_dir(run.key) / "progress.json"
    progress.write_text(json.dumps({"step": steps // 2, "steps": steps, "loss": 2.0}))  # where it stopped

    def resumed(cfg, out_dir):
        progress.write_text(json.dumps({"step": steps // 2 + steps // 10, "steps": steps, "loss": 1.9}))
        return "done", {"bits_per_param": 0.5}

    clock = iter([0.0] + [100.0] * 100)
    monkeypatch.setattr("moelab.sweeps.runner.time.perf_counter", lambda: next(clock))
    seen = []
    run_sweep(sweep, store, executor=InstantExecutor(resumed), on_progress=seen.append)
    [running] = [p for p in seen if p.active]
    left, trained = steps - running.steps_done, steps // 10
    assert running.eta_seconds == pytest.approx(left * 100.0 / trained)  # not left * 100 / (steps // 2 + trained)
