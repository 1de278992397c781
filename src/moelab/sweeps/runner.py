"""The sweep driver: register runs in the store, run the unfinished ones on an executor (a local
process pool by default, or Ray), record each result as it arrives. Rerunning the same sweep after Ctrl-C or a
killed driver keeps every finished run and redoes only the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass

from moelab.sweeps.executors import LocalExecutor, default_workers
from moelab.sweeps.grid import Sweep
from moelab.sweeps.store import Store


@dataclass
class Progress:
    total: int
    done: int
    failed: int
    running: int
    best: float | None  # highest bits per parameter so far


def run_sweep(sweep: Sweep, store: Store, executor=None, retry_failed: bool = False,
              on_progress: Callable[[Progress], None] | None = None) -> None:
    """Run every unfinished run of `sweep` on `executor` (default: a local pool); results land
    in `store` as they finish."""
    keys = [r.key for r in sweep.runs]
    for run in sweep.runs:
        store.add(run.key, run.label, run.config)
    store.recover(keys, retry_failed)
    statuses = store.statuses(keys)
    queue = [r for r in sweep.runs if statuses[r.key] == "pending"]
    done = sum(s == "done" for s in statuses.values())
    failed = sum(s == "failed" for s in statuses.values())
    best = max((r["metrics"]["bits_per_param"] for r in store.rows(keys) if r["metrics"]), default=None)

    def report(running: int) -> None:
        if on_progress is not None:
            on_progress(Progress(len(keys), done, failed, running, best))

    report(0)
    if not queue:
        return
    owned = executor is None
    executor = executor or LocalExecutor(min(len(queue), default_workers()))
    in_flight: dict[Future, str] = {}
    try:
        while queue or in_flight:
            while queue and len(in_flight) < executor.capacity:
                run = queue.pop(0)
                store.mark_running(run.key)
                in_flight[executor.submit(run.config, str(store.run_dir(run.key)))] = run.key
            report(len(in_flight))
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                key = in_flight.pop(future)
                try:
                    status, result = future.result()
                except Exception as err:  # noqa: BLE001 - the worker itself died
                    status, result = "failed", f"the worker died ({type(err).__name__}: {err}); " \
                                               "killed, or out of memory?"
                if status == "done":
                    store.mark_done(key, result)
                    done += 1
                    best = result["bits_per_param"] if best is None else max(best, result["bits_per_param"])
                else:
                    store.mark_failed(key, result)
                    failed += 1
    finally:
        if owned:
            executor.close()
    report(0)
