"""The driver: results in the store, failures recorded, resume after the driver is SIGKILLed."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import threading
from concurrent.futures.process import BrokenProcessPool

import pytest

from moelab.sweeps import LocalExecutor, Store, load_sweep, run_sweep
from moelab.sweeps.runner import MAX_BREAKS
from tests.sweeps.fakes import InstantExecutor

SWEEP = """
name = "resume"
base = "tiny-dense"
[set]
"data.n_people" = 150
"train.exposures" = 20
"model.d_model" = 24
"model.d_ff" = 48
[[grid]]
"seed" = [0, 1, 2, 3]
"""


def statuses(folder):
    path = folder / "store.sqlite"
    if not path.exists():
        return {}
    with sqlite3.connect(path, timeout=30) as db:
        try:
            return dict(db.execute("SELECT key, status FROM runs").fetchall())
        except sqlite3.OperationalError:
            return {}


@pytest.mark.slow
def test_killed_driver_resumes_without_redoing_finished_runs(tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP.replace('"seed" = [0, 1, 2, 3]', '"seed" = [0, 1, 2]'))
    interrupted = tmp_path / "interrupted"
    command = [sys.executable, "-m", "moelab", "sweep", str(spec), "--out", str(interrupted),
               "--workers", "1"]
    driver = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while "done" not in statuses(interrupted).values():
        assert driver.poll() is None and time.time() < deadline, "sweep ended before it could be killed"
        time.sleep(0.1)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its workers, like kill -9 of the job
    driver.wait()
    before = {r["key"]: r for r in Store(interrupted).rows() if r["status"] == "done"}
    assert 1 <= len(before) < 3

    subprocess.run(command, check=True, capture_output=True)
    after = {r["key"]: r for r in Store(interrupted).rows()}
    assert all(r["status"] == "done" for r in after.values()) and len(after) == 3
    for key, row in before.items():  # finished runs were kept, not redone
        assert after[key]["attempts"] == 1 and after[key]["updated"] == row["updated"]

    clean = Store(tmp_path / "clean")
    run_sweep(load_sweep(spec), clean)  # the default executor: a local pool
    expected = {r["key"]: r["metrics"] for r in clean.rows()}
    assert set(expected) == set(after)
    for key, metrics in expected.items():
        for field in ("bits", "accuracy", "final_loss", "bit_terms"):
            assert after[key]["metrics"][field] == metrics[field]


@pytest.mark.slow
def test_failed_run_is_recorded_and_the_sweep_goes_on_then_retry(tmp_path):
    spec = tmp_path / "sweep.toml"  # lr 1e30 without clipping: the loss stops being finite
    spec.write_text(SWEEP.replace('"seed" = [0, 1, 2, 3]', '"seed" = [0]\n"train.lr" = [1e-2, 1e30]')
                    .replace('[set]\n', '[set]\n"train.grad_clip" = 0.0\n'))
    store = Store(tmp_path / "out")
    executor = LocalExecutor(2)
    run_sweep(load_sweep(spec), store, executor=executor)
    executor.close()
    rows = {r["config"]["train"]["lr"]: r for r in store.rows()}
    assert rows[1e-2]["status"] == "done"
    assert rows[1e30]["status"] == "failed" and "training loss became" in rows[1e30]["reason"]

    run_sweep(load_sweep(spec), store)  # without --retry-failed nothing is rerun
    assert {r["key"]: r["attempts"] for r in store.rows()} == {r["key"]: 1 for r in rows.values()}
    run_sweep(load_sweep(spec), store, retry_failed=True)
    assert {r["config"]["train"]["lr"]: r["attempts"] for r in store.rows()} == {1e-2: 1, 1e30: 2}


LONG_SWEEP = SWEEP.replace('"data.n_people" = 150', '"data.n_people" = 2000').replace(
    '"train.exposures" = 20', '"train.exposures" = 200')
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def children(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# A test suite started in the background (`pytest &`, nohup) inherits SIGINT ignored, and so
# would the driver; these tests are about a driver that hears Ctrl-C, so it starts with the default.
PYTHON_WITH_CTRL_C = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                      "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"]


def start_driver(tmp_path, workers: int = 2):
    spec = tmp_path / "sweep.toml"
    spec.write_text(LONG_SWEEP)
    out = tmp_path / "out"
    driver = subprocess.Popen([*PYTHON_WITH_CTRL_C, "-m", "moelab", "sweep", str(spec), "--out", str(out),
                               "--workers", str(workers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True, text=True)
    deadline = time.time() + 120
    while len(children(driver.pid)) < workers + 1:  # the workers and multiprocessing's resource tracker
        assert driver.poll() is None and time.time() < deadline, driver.communicate()
        time.sleep(0.2)
    time.sleep(2)  # the workers are importing torch and training
    return driver, out


@pytest.mark.slow
@linux_only
def test_workers_die_with_a_sigkilled_driver(tmp_path):
    driver, _ = start_driver(tmp_path)
    descendants = children(driver.pid)
    os.kill(driver.pid, signal.SIGKILL)  # the driver alone, not its process group
    driver.wait()
    deadline = time.time() + 10
    while any(alive(p) for p in descendants) and time.time() < deadline:
        time.sleep(0.1)
    survivors = [p for p in descendants if alive(p)]
    for p in survivors:
        os.kill(p, signal.SIGKILL)
    assert not survivors, "processes outlived their sweep driver"


@pytest.mark.slow
@linux_only
@pytest.mark.parametrize("signum, target", [(signal.SIGINT, "driver"), (signal.SIGINT, "group")])
def test_an_interrupted_driver_stops_promptly_and_leaves_runs_pending(tmp_path, signum, target):
    driver, out = start_driver(tmp_path)
    descendants = children(driver.pid)
    sent = time.time()
    if target == "driver":
        os.kill(driver.pid, signum)  # the driver alone, as a job scheduler does
    else:
        os.killpg(driver.pid, signum)  # Ctrl-C in a terminal: every process of the job

    _, stderr = driver.communicate(timeout=60)
    assert time.time() - sent < 10, "the driver let its runs train on"
    assert driver.returncode == 130
    assert "Traceback" not in stderr and "interrupted: finished runs are kept" in stderr
    deadline = time.time() + 5  # the resource tracker exits once the pipes of the dead close
    while any(alive(p) for p in descendants) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in descendants)
    assert set(statuses(out).values()) == {"pending"}


STOPPABLE_SWEEP = SWEEP.replace('"data.n_people" = 150', '"data.n_people" = 400').replace(
    '"train.exposures" = 20', '"train.exposures" = 60').replace('"seed" = [0, 1, 2, 3]', '"seed" = [0, 1, 2]')


@linux_only
@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "--stop-after"])
def test_a_stopped_sweep_checkpoints_its_runs_in_flight_and_the_rerun_finishes_them(tmp_path, how):
    spec, out = tmp_path / "sweep.toml", tmp_path / "out"
    spec.write_text(STOPPABLE_SWEEP)
    command = [*PYTHON_WITH_CTRL_C, "-m", "moelab", "sweep", str(spec), "--out", str(out), "--workers", "2"]
    driver = subprocess.Popen(command + (["--stop-after", "6s"] if how == "--stop-after" else []),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, text=True,
                              env=os.environ | {"COLUMNS": "300"})
    deadline = time.time() + 120
    while len(list(out.glob("runs/*/progress.json"))) < 2:  # two runs are training
        assert driver.poll() is None and time.time() < deadline, driver.communicate()
        time.sleep(0.1)
    descendants = children(driver.pid)
    if how == "SIGTERM":
        time.sleep(1)
        os.kill(driver.pid, signal.SIGTERM)  # the driver alone, as a job scheduler does
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 3, stderr
    assert "Traceback" not in stderr and "resume with: moelab sweep" in stderr
    checkpoints = list(out.glob("runs/*/resume.safetensors"))
    assert len(checkpoints) == 2  # both runs in flight wrote theirs
    deadline = time.time() + 5
    while any(alive(p) for p in descendants) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in descendants), "a worker outlived its stopped sweep"
    assert set(statuses(out).values()) == {"pending"}

    subprocess.run(command, check=True, capture_output=True)
    rows = Store(out).rows()
    assert [r["status"] for r in rows] == ["done"] * 3
    assert sum(bool(r["metrics"]["resumed_at_steps"]) for r in rows) == 2  # the two resumed mid-run
    assert not list(out.glob("runs/*/resume.safetensors"))


@pytest.mark.slow
def test_a_killed_worker_puts_every_run_in_flight_back_in_the_queue(tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP.replace('"seed" = [0, 1, 2, 3]', '"seed" = [0, 1]').replace(
        '"train.exposures" = 20', '"train.exposures" = 120'))
    store = Store(tmp_path / "out")
    executor = LocalExecutor(2)

    def kill_one_worker() -> None:
        deadline = time.time() + 60
        while len(executor.pool._processes or {}) < 2 and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)
        os.kill(next(iter(executor.pool._processes)), signal.SIGKILL)  # as the OOM killer would

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    run_sweep(load_sweep(spec), store, executor=executor)
    killer.join()
    executor.close()
    rows = store.rows()
    assert [r["status"] for r in rows] == ["done", "done"], [r["reason"] for r in rows]
    assert sorted(r["attempts"] for r in rows) == [2, 2]  # both were lost with the pool, both redone


def test_a_run_that_keeps_killing_its_worker_is_failed_after_max_breaks(tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP.replace('"seed" = [0, 1, 2, 3]', '"seed" = [0, 1]'))
    store = Store(tmp_path / "out")
    executor = InstantExecutor(lambda cfg, out: BrokenProcessPool("a worker died") if cfg.name.endswith("seed=1")
                               else ("done", {"bits_per_param": 1.0}), capacity=2)
    run_sweep(load_sweep(spec), store, executor=executor)
    rows = {r["label"]: r for r in store.rows()}
    assert rows["dense d_ff=48 seed=0"]["status"] == "done"
    doomed = rows["dense d_ff=48 seed=1"]
    assert doomed["status"] == "failed" and "died 2 times" in doomed["reason"]
    assert doomed["attempts"] == MAX_BREAKS and executor.resets == MAX_BREAKS
