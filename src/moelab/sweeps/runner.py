"""The sweep driver: register runs in the store, run the unfinished ones on an executor (a local
process pool by default, or Ray), record each result as it arrives. Rerunning the same sweep after
Ctrl-C or a killed driver keeps every finished run and redoes only the rest.

A worker that dies (killed for memory, say) breaks the whole local pool, so every run in flight
on it is lost, not only the one that used the memory. Those runs go back to the queue; a run that
was in flight at `MAX_BREAKS` breaks is marked failed, so one run that always dies cannot loop.
On an interrupt (Ctrl-C, SIGTERM) the runs in flight are stopped at once and left pending.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
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


MAX_BREAKS = 2


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
    by_key = {r.key: r for r in sweep.runs}
    in_flight: dict[Future, str] = {}
    breaks: dict[str, int] = {}  # pool breaks each run was in flight for

    def settle(future: Future) -> bool:
        """Record one finished future; True when its worker pool broke under it."""
        nonlocal done, failed, best
        key = in_flight.pop(future)
        try:
            status, result = future.result()
        except BrokenProcessPool:
            breaks[key] = breaks.get(key, 0) + 1
            if breaks[key] < MAX_BREAKS:
                store.mark_pending(key)
                queue.insert(0, by_key[key])
                return True
            status, result = "failed", (f"a worker died {MAX_BREAKS} times while this run was in flight; "
                                        "killed, or out of memory? Lower --workers or the run's size")
        except Exception as err:  # noqa: BLE001 - the worker itself died
            status, result = "failed", f"the worker died ({type(err).__name__}: {err}); killed, or out of memory?"
        if status == "done":
            store.mark_done(key, result)
            done += 1
            best = result["bits_per_param"] if best is None else max(best, result["bits_per_param"])
        else:
            store.mark_failed(key, result)
            failed += 1
        return isinstance(future.exception(), BrokenProcessPool)

    try:
        while queue or in_flight:
            while queue and len(in_flight) < executor.capacity:
                run = queue.pop(0)
                store.mark_running(run.key)
                in_flight[executor.submit(run.config, str(store.run_dir(run.key)))] = run.key
            report(len(in_flight))
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            if any([settle(f) for f in finished]):
                # every future of a broken pool fails with it: settle them all before a fresh pool
                for future in wait(in_flight).done:
                    settle(future)
                executor.reset()
    except BaseException:  # Ctrl-C, SIGTERM, or a bug in the driver: stop the runs, keep them pending
        executor.close(kill=True)
        for key in in_flight.values():
            store.mark_pending(key)
        raise
    finally:
        if owned:
            executor.close()
    report(0)
