"""Where sweep runs execute. Each executor turns one run into a `concurrent.futures.Future` of
`run_in_worker`'s result, and says how many runs it can usefully hold in flight.

    local   a process pool sized to the cores, one thread per run (the default)
    ray     one Ray task per run with its CPU/GPU request; `ray.init(address)` joins a cluster, no
            address starts a local instance. On a cluster, runs write their folders on the node
            that runs them (put the sweep folder on a shared filesystem to keep checkpoints);
            their metrics always come back to the driver, which alone writes the store.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from moelab.config import RunConfig, from_dict, to_dict, validate
from moelab.errors import MoelabError


def run_in_worker(config: dict, out_dir: str) -> tuple[str, dict | str]:
    """One run in a worker process. Returns ('done', metrics) or ('failed', reason); never raises
    for a failing run, so one bad run never stops the sweep."""
    from moelab.run import execute

    try:
        return "done", execute(validate(from_dict(RunConfig, config)), out_dir)
    except MoelabError as err:
        return "failed", str(err)
    except MemoryError:
        return "failed", "out of memory"
    except Exception as err:  # noqa: BLE001 - any crash of a run is recorded, not raised
        return "failed", f"{type(err).__name__}: {err}"


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


class LocalExecutor:
    def __init__(self, workers: int | None = None):
        self.capacity = workers or default_workers()
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: forking a process that has already started torch's threads is unsafe
        return ProcessPoolExecutor(max_workers=self.capacity, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, cfg: RunConfig, out_dir: str) -> Future:
        try:
            return self.pool.submit(run_in_worker, to_dict(cfg), out_dir)
        except BrokenProcessPool:  # a worker died (e.g. killed for memory): its runs failed; go on
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
            return self.pool.submit(run_in_worker, to_dict(cfg), out_dir)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class RayExecutor:
    def __init__(self, address: str | None = None, workers: int | None = None):
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
        self.capacity = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.task = ray.remote(run_in_worker)

    def submit(self, cfg: RunConfig, out_dir: str) -> Future:
        gpus = 1 if cfg.train.device == "cuda" else 0
        ref = self.task.options(num_cpus=cfg.train.threads, num_gpus=gpus, max_retries=0).remote(
            to_dict(cfg), out_dir)
        return ref.future()

    def close(self) -> None:
        self.ray.shutdown()


def make_executor(name: str, workers: int | None = None, address: str | None = None):
    if name == "local":
        if address:
            raise MoelabError("--ray-address goes with --executor ray")
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(address, workers)
    raise MoelabError(f"--executor {name!r}: use 'local' or 'ray'")
