"""Where sweep runs execute. Each executor turns one run into a `concurrent.futures.Future` of
`run_in_worker`'s result, and says how many runs it can usefully hold in flight.

    local   a process pool sized to the cores, one thread per run (the default). Workers die with
            their driver (a parent-death signal on Linux, and a watchdog thread everywhere), ignore
            the terminal's Ctrl-C (the driver stops them), and `close(kill=True)` ends them at once.
    ray     one Ray task per run with its CPU/GPU request (`--gpus-per-run 0.25`: a quarter of a
            GPU each, placed by Ray); `ray.init(address)` joins a cluster, no address starts a
            local instance. On a cluster, runs write their folders on the node
            that runs them (put the sweep folder on a shared filesystem to keep checkpoints);
            their metrics always come back to the driver, which alone writes the store.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from moelab.stopping import stop_on_sigterm
from moelab.config import RunConfig, from_dict, resolve, to_dict
from moelab.errors import MoelabError, RunStopped
from moelab.io import atomic_write_json


PROGRESS_SECONDS = 1.0  # how often a worker rewrites its run's progress.json


def progress_writer(out_dir: str) -> Callable[[int, int, float], None]:
    """An on_step callback that keeps `out_dir/progress.json` (step, steps, loss) about a second old."""
    path, last = Path(out_dir) / "progress.json", [0.0]

    def on_step(step: int, steps: int, loss: float) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_SECONDS or step == steps:
            last[0] = now
            atomic_write_json(path, {"step": step, "steps": steps, "loss": loss}, durable=False)

    return on_step


def run_in_worker(config: dict, out_dir: str) -> tuple[str, dict | str]:
    """One run in a worker process. Returns ('done', metrics), ('failed', reason) or ('stopped',
    where), the last when a stop request made it write a mid-run checkpoint and return; never
    raises for a failing run, so one bad run never stops the sweep."""
    from moelab.run import execute

    try:
        return "done", execute(resolve(from_dict(RunConfig, config)), out_dir, on_step=progress_writer(out_dir))
    except RunStopped as stopped:
        return "stopped", str(stopped)
    except MoelabError as err:
        return "failed", str(err)
    except MemoryError:
        return "failed", "out of memory"
    except Exception as err:  # noqa: BLE001 - any crash of a run is recorded, not raised
        return "failed", f"{type(err).__name__}: {err}"


PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCHDOG_SECONDS = 0.5


def _die_with(parent: int) -> None:
    """Worker initializer: exit as soon as the driver process `parent` is gone, leave Ctrl-C to
    the driver (it stops the workers itself, so no worker prints a traceback), and take SIGTERM
    as a stop request (checkpoint the run in flight, then return)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_on_sigterm()
    if sys.platform.startswith("linux"):
        try:  # the kernel sends SIGKILL the moment the parent dies
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass

    def watch() -> None:  # portable fallback, and the race where the parent died before prctl
        while os.getppid() == parent:
            time.sleep(WATCHDOG_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="moelab-parent-watchdog", daemon=True).start()


@contextlib.contextmanager
def sigint_ignored():
    """SIGINT ignored while processes are started, so they inherit the disposition from birth
    (Python keeps an inherited SIG_IGN); the driver's own handler is back right after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


class LocalExecutor:
    def __init__(self, workers: int | None = None):
        self.capacity = workers or default_workers()
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: forking a process that has already started torch's threads is unsafe
        return ProcessPoolExecutor(max_workers=self.capacity, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_die_with, initargs=(os.getpid(),))

    def submit(self, cfg: RunConfig, out_dir: str) -> Future:
        with sigint_ignored():  # workers start here; born ignoring Ctrl-C, none dies mid-import
            try:
                return self.pool.submit(run_in_worker, to_dict(cfg), out_dir)
            except BrokenProcessPool:  # a worker died (e.g. killed for memory): start a fresh pool
                self.reset()
                return self.pool.submit(run_in_worker, to_dict(cfg), out_dir)

    def stop_runs(self) -> None:
        """Ask every run in flight to write its mid-run checkpoint and return ('stopped')."""
        for process in list((self.pool._processes or {}).values()):
            with contextlib.suppress(ProcessLookupError, OSError):
                os.kill(process.pid, signal.SIGTERM)

    def reset(self) -> None:
        """Replace a broken pool (every run in flight on it is lost) with a fresh one."""
        self.close(kill=True)
        self.pool = self._new_pool()

    def close(self, kill: bool = False) -> None:
        """Shut the pool down once the runs in flight finish; with `kill`, end them now."""
        processes = list((self.pool._processes or {}).values())  # no public handle before Python 3.14
        if kill:
            for process in processes:
                process.kill()
        # wait=True joins the pool's manager thread. Left running, it races the interpreter's exit
        # hook, which writes to the thread's wake-up pipe while the thread closes it (CPython 3.11:
        # an "OSError: Bad file descriptor" traceback after a sweep stopped cleanly).
        self.pool.shutdown(wait=True, cancel_futures=True)


def ray_task(cfg: RunConfig, gpus_per_run: float, cluster_gpus: float) -> tuple[dict, RunConfig]:
    """A run's Ray task options and the config it runs with. `gpus_per_run` > 0 asks Ray for that
    share of a GPU (0.25 packs four runs on one GPU: Ray's own fractional placement) and runs on
    "cuda"; on a cluster without GPUs the request falls back to CPU, as a task asking for a GPU
    there would wait forever. Without it, a run asking for train.device = "cuda" gets one GPU."""
    run = copy.deepcopy(cfg)
    if gpus_per_run > 0:
        gpus = gpus_per_run if cluster_gpus > 0 else 0.0
        run.train.device = "cuda" if gpus else "cpu"
    else:
        gpus = 1.0 if cfg.train.device == "cuda" else 0.0
    return {"num_cpus": cfg.train.threads, "num_gpus": gpus, "max_retries": 0}, run


class RayExecutor:
    def __init__(self, address: str | None = None, workers: int | None = None, gpus_per_run: float = 0.0):
        try:
            import ray
        except ImportError:
            raise MoelabError("--executor ray needs Ray: pip install 'moelab[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers or default_workers(), include_dashboard=False, log_to_driver=False)
        resources = ray.cluster_resources()
        self.gpus_per_run, self.cluster_gpus = gpus_per_run, resources.get("GPU", 0.0)
        slots = self.cluster_gpus / gpus_per_run if gpus_per_run > 0 and self.cluster_gpus > 0 else math.inf
        self.capacity = max(1, int(min(resources.get("CPU", 1), slots)))
        self.task = ray.remote(run_in_worker)
        self.notes = ([f"--gpus-per-run {gpus_per_run}: the Ray cluster has no GPUs, so the runs train on CPU"]
                      if gpus_per_run > 0 and self.cluster_gpus <= 0 else [])

    def submit(self, cfg: RunConfig, out_dir: str) -> Future:
        options, run = ray_task(cfg, self.gpus_per_run, self.cluster_gpus)
        return self.task.options(**options).remote(to_dict(run), out_dir).future()

    def stop_runs(self) -> None:
        pass  # closing cancels the tasks: their runs resume from their last periodic checkpoint

    def reset(self) -> None:
        pass  # Ray restarts dead workers itself

    def close(self, kill: bool = False) -> None:
        self.ray.shutdown()  # cancels the tasks still running


def make_executor(name: str, workers: int | None = None, address: str | None = None, gpus_per_run: float = 0.0):
    if name == "local":
        if address or gpus_per_run:
            raise MoelabError("--ray-address and --gpus-per-run go with --executor ray")
        return LocalExecutor(workers)
    if name == "ray":
        if gpus_per_run < 0:
            raise MoelabError(f"--gpus-per-run {gpus_per_run}: give a share of a GPU, such as 0.25, or 0")
        return RayExecutor(address, workers, gpus_per_run)
    raise MoelabError(f"--executor {name!r}: use 'local' or 'ray'")
