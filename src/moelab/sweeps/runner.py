"""The sweep driver: register runs in the store, run the unfinished ones in a process pool (one
thread per run), record each result as it arrives. Rerunning the same sweep after Ctrl-C or a
killed driver keeps every finished run and redoes only the rest.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from moelab.config import RunConfig, from_dict, to_dict, validate
from moelab.errors import MoelabError
from moelab.sweeps.grid import Sweep
from moelab.sweeps.store import Store


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


@dataclass
class Progress:
    total: int
    done: int
    failed: int
    running: int
    best: float | None  # highest bits per parameter so far


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def run_sweep(sweep: Sweep, store: Store, workers: int | None = None, retry_failed: bool = False,
              on_progress: Callable[[Progress], None] | None = None) -> None:
    """Run every unfinished run of `sweep`; results land in `store` as they finish."""
    keys = [r.key for r in sweep.runs]
    for run in sweep.runs:
        store.add(run.key, run.label, run.config)
    store.recover(keys, retry_failed)
    statuses = store.statuses(keys)
    todo = [r for r in sweep.runs if statuses[r.key] == "pending"]
    done = sum(s == "done" for s in statuses.values())
    failed = sum(s == "failed" for s in statuses.values())
    best = max((r["metrics"]["bits_per_param"] for r in store.rows(keys) if r["metrics"]), default=None)

    def report(running: int) -> None:
        if on_progress is not None:
            on_progress(Progress(len(keys), done, failed, running, best))

    report(0)
    if not todo:
        return
    workers = min(workers or default_workers(), len(todo))
    queue = list(todo)
    in_flight: dict[Future, str] = {}
    pool = new_pool(workers)
    try:
        while queue or in_flight:
            while queue and len(in_flight) < workers:
                run = queue.pop(0)
                store.mark_running(run.key)
                future = pool.submit(run_in_worker, to_dict(run.config), str(store.run_dir(run.key)))
                in_flight[future] = run.key
            report(len(in_flight))
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                key = in_flight.pop(future)
                try:
                    status, result = future.result()
                except BrokenProcessPool:
                    status, result = "failed", "the worker process died (killed, or out of memory)"
                if status == "done":
                    store.mark_done(key, result)
                    done += 1
                    best = result["bits_per_param"] if best is None else max(best, result["bits_per_param"])
                else:
                    store.mark_failed(key, result)
                    failed += 1
            if any(isinstance(f.exception(), BrokenProcessPool) for f in finished):
                pool.shutdown(wait=False, cancel_futures=True)  # a dead worker breaks the whole pool
                pool = new_pool(workers)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    report(0)


def new_pool(workers: int) -> ProcessPoolExecutor:
    # spawn, not fork: forking a process that has already started torch's thread pools is unsafe
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
