"""The sweep driver: register runs in the store, run the unfinished ones on an executor (a local
process pool by default, or Ray), record each result as it arrives. Rerunning the same sweep after
Ctrl-C or a killed driver keeps every finished run and redoes only the rest.

Runs start longest first (by planned steps times a cost per step that grows with the model), so
the last minutes of a sweep are not one long run alone on one core. With a selection, each
configuration's reported runs join the queue (behind the selection runs still waiting) as soon as
its own selection runs have all settled, so a core is not left idle while the last selection
runs of other configurations finish. Workers report their step and
loss in `progress.json` in their run folder; the driver reads those files to show each running
run and to estimate the time left from steps (a Ray cluster without a shared filesystem shows
runs without their steps).

A worker that dies (killed for memory, say) breaks the whole local pool, so every run in flight
on it is lost, not only the one that used the memory. Those runs go back to the queue; a run that
was in flight at `MAX_BREAKS` breaks is marked failed, so one run that always dies cannot loop.
Ctrl-C stops the runs in flight at once and leaves them pending (they resume from their last
periodic mid-run checkpoint). A stop request (SIGTERM, `--stop-after`) starts no new run, asks
every run in flight to write its checkpoint and return, waits for them (`STOP_GRACE_SECONDS` at
most, then stops them at once), and raises RunStopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from moelab.stopping import stop_reason
from moelab.config import RunConfig
from moelab.continual import phase_b_train, replay_per_exposure
from moelab.knowledge import rows_per_exposure
from moelab.models.params import count_params
from moelab.sweeps.executors import LocalExecutor, default_workers
from moelab.config import run_key
from moelab.sweeps.grid import Sweep, SweepRun, chosen_runs, configuration_id, selection_runs, with_fields
from moelab.errors import RunStopped
from moelab.sweeps.store import Store
from moelab.training import n_steps

MAX_BREAKS = 2
STOP_GRACE_SECONDS = 120.0  # how long runs asked to stop get to write their checkpoints
POLL_SECONDS = 1.0  # how often progress is refreshed while runs are in flight


@dataclass
class RunProgress:
    label: str
    step: int  # 0 until the worker has reported
    steps: int
    loss: float | None


@dataclass
class Progress:
    total: int
    done: int
    failed: int
    running: int
    best: float | None  # highest bits per parameter so far
    active: list[RunProgress] = field(default_factory=list)
    steps_done: int = 0  # finished runs' steps plus running runs' progress
    steps_total: int = 0
    eta_seconds: float | None = None  # from the step rate since this driver started


def planned_steps(cfg: RunConfig) -> int:
    """Training steps of the run (of phase B for a continued run, whose parent is a run of its own)."""
    c = cfg.continual
    if c.active:
        return n_steps(phase_b_train(cfg.train, c), c.new_people + replay_per_exposure(c.new_people, c.replay_fraction))
    return n_steps(cfg.train, rows_per_exposure(cfg.data))


def estimated_cost(cfg: RunConfig) -> float:
    """Relative CPU time of a run: steps times a per-step cost that grows with the active model
    (forward and backward) and, more slowly, the total one (the optimizer touches every weight)."""
    counts = count_params(cfg.model, 0)
    return planned_steps(cfg) * (1 + (counts.active_nonembedding + counts.total_nonembedding / 8) / 20_000)


def read_progress(store: Store, run: SweepRun) -> RunProgress:
    try:
        p = json.loads((store.run_dir(run.key) / "progress.json").read_text())
        return RunProgress(run.label, int(p["step"]), int(p["steps"]), p.get("loss"))
    except (OSError, ValueError, KeyError, TypeError):
        return RunProgress(run.label, 0, planned_steps(run.config), None)


def choose(sweep: Sweep, store: Store, settled: set[str] | None = None) -> tuple[dict[str, dict], list[dict]]:
    """Each configuration's best candidate by the mean of `selection.by` over its finished
    selection runs, and a record of every candidate for the report and sweep.json. With
    `settled` (the selection runs that are done or failed), only the configurations whose
    selection runs are all in it are chosen and recorded."""
    metrics = {r["key"]: r["metrics"] for r in store.rows() if r["metrics"]}
    by_configuration: dict[str, list[SweepRun]] = {}
    for run in sweep.runs:
        by_configuration.setdefault(configuration_id(sweep, run), []).append(run)
    choices, records = {}, []
    selection = sweep.selection
    for config_id, runs in by_configuration.items():
        if selection.fixed(runs[0]):  # one candidate: its block fixed the value, nothing ran to choose it
            [choices[config_id]] = selection.combinations(runs[0])
            records.append({"configuration": runs[0].label.split(" seed=")[0], "by": selection.by,
                            "seeds": [], "chosen": choices[config_id], "fixed": True,
                            "candidates": [{"values": choices[config_id], "keys": [], "finished": 0, selection.by: None}]})
            continue
        candidates = []
        for combination in selection.combinations(runs[0]):
            keys = [run_key(with_fields(runs[0].config, combination | selection.overrides | {"seed": seed}))
                    for seed in selection.seeds]
            values = [metrics[k][selection.by] for k in keys if k in metrics]
            candidates.append({"values": combination, "keys": keys, "finished": len(values),
                               selection.by: sum(values) / len(values) if values else None})
        if settled is not None and not all(k in settled for c in candidates for k in c["keys"]):
            continue  # still being selected
        scored = [c for c in candidates if c[selection.by] is not None]
        best = max(scored, key=lambda c: c[selection.by]) if scored else None
        if best is not None:
            choices[config_id] = best["values"]
        records.append({"configuration": runs[0].label.split(" seed=")[0], "by": selection.by,
                        "seeds": selection.seeds, "chosen": None if best is None else best["values"],
                        "candidates": candidates})
    return choices, records


def run_sweep(sweep: Sweep, store: Store, executor=None, retry_failed: bool = False,
              on_progress: Callable[[Progress], None] | None = None, reuse: list[Store] = ()) -> list[str]:
    """Run every unfinished run of `sweep` on `executor` (default: a local pool); results land
    in `store` as they finish, and `sweep.json` in the store's folder lists them. With a
    selection, the selection runs come first, then the grid's runs at the chosen values (a
    configuration's as soon as its own selection has ended). A run
    finished under the same key in a store of `reuse` is adopted instead of trained.
    Returns the keys of every run of the sweep (selection runs included)."""
    owned = executor is None
    executor = executor or LocalExecutor(default_workers())
    try:
        if sweep.selection is None:
            store.write_sweep_meta(sweep, [r.key for r in sweep.runs])
            run_runs(sweep.runs, store, executor, retry_failed, on_progress, reuse)
            return [r.key for r in sweep.runs]
        trial = selection_runs(sweep)
        trial_keys = [r.key for r in trial]
        store.write_sweep_meta(sweep, trial_keys)
        decided: list[str] = []  # reported runs already queued

        def newly_decided() -> list[SweepRun]:
            """The reported runs of configurations whose selection has just ended."""
            settled = {k for k, s in store.statuses(trial_keys).items() if s in ("done", "failed")}
            choices, records = choose(sweep, store, settled)
            new = [r for r in chosen_runs(sweep, choices) if r.key not in decided]
            if new:
                decided.extend(r.key for r in new)
                store.write_sweep_meta(sweep, trial_keys + decided, reported=decided, selection=records)
            return new

        run_runs(trial, store, executor, retry_failed, on_progress, reuse, more=newly_decided)
        choices, records = choose(sweep, store)
        final = chosen_runs(sweep, choices)
        keys = [r.key for r in trial] + [r.key for r in final]
        store.write_sweep_meta(sweep, keys, reported=[r.key for r in final], selection=records)
        run_runs(final, store, executor, retry_failed, on_progress, reuse)
        return keys
    finally:
        if owned:
            executor.close()


def run_runs(runs: list[SweepRun], store: Store, executor, retry_failed: bool = False,
             on_progress: Callable[[Progress], None] | None = None, reuse: list[Store] = (),
             more: Callable[[], list[SweepRun]] | None = None) -> None:
    """Run every unfinished run of `runs` on `executor`, longest first (after adopting those
    another store of `reuse` finished). `more`, asked at the start and after each run settles,
    returns runs to add behind those queued."""
    keys: list[str] = []
    queue: list[SweepRun] = []
    by_key: dict[str, SweepRun] = {}
    steps_of: dict[str, int] = {}
    done = failed = settled_steps = 0
    steps_at_start = 0  # steps this driver did not train: adopted, settled or resumed from before it
    best: float | None = None

    def admit(new: list[SweepRun]) -> None:
        """Register runs, adopt those already finished, and queue the rest, longest first."""
        nonlocal done, failed, settled_steps, steps_at_start, best
        new = [r for r in new if r.key not in by_key]
        new_keys = [r.key for r in new]
        for run in new:
            store.add(run.key, run.label, run.config)
        store.recover(new_keys, retry_failed)
        store.reuse(list(reuse), new_keys)
        statuses = store.statuses(new_keys)
        keys.extend(new_keys)
        by_key.update((r.key, r) for r in new)
        steps_of.update((r.key, planned_steps(r.config)) for r in new)
        queue.extend(sorted((r for r in new if statuses[r.key] == "pending"), key=lambda r: -estimated_cost(r.config)))
        done += sum(s == "done" for s in statuses.values())
        failed += sum(s == "failed" for s in statuses.values())
        already = sum(steps_of[k] for k, s in statuses.items() if s in ("done", "failed"))
        settled_steps, steps_at_start = settled_steps + already, steps_at_start + already
        best = max([r["metrics"]["bits_per_param"] for r in store.rows(new_keys) if r["metrics"]]
                   + ([] if best is None else [best]), default=None)

    admit(runs)
    if more is not None:
        admit(more())
    start = time.perf_counter()
    in_flight: dict[Future, str] = {}
    breaks: dict[str, int] = {}  # pool breaks each run was in flight for
    stopping_since: float | None = None  # when this driver began stopping on a request

    def report() -> None:
        if on_progress is None:
            return
        active = [read_progress(store, by_key[key]) for key in in_flight.values()]
        steps_done = settled_steps + sum(a.step for a in active)
        total = sum(steps_of.values())
        elapsed, progressed = time.perf_counter() - start, steps_done - steps_at_start
        eta = (total - steps_done) * elapsed / progressed if progressed > 0 and elapsed > 5 else None
        on_progress(Progress(len(keys), done, failed, len(in_flight), best, active, steps_done, total, eta))

    def settle(future: Future) -> bool:
        """Record one finished future; True when its worker pool broke under it."""
        nonlocal done, failed, best, settled_steps
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
        if status == "stopped":  # checkpointed on request: resumed by the next sweep, or by this one
            store.mark_pending(key)
            if stopping_since is None:  # the worker alone was asked (a SIGTERM sent to it): go on
                queue.insert(0, by_key[key])
            return False
        settled_steps += steps_of[key]
        if status == "done":
            store.mark_done(key, result)
            done += 1
            best = result["bits_per_param"] if best is None else max(best, result["bits_per_param"])
        else:
            store.mark_failed(key, result)
            failed += 1
        return isinstance(future.exception(), BrokenProcessPool)

    report()
    if not queue:
        return
    try:
        while queue or in_flight:
            if stopping_since is None and stop_reason() is not None:
                stopping_since = time.monotonic()
                executor.stop_runs()
            if stopping_since is not None and time.monotonic() - stopping_since > STOP_GRACE_SECONDS:
                raise KeyboardInterrupt  # runs that did not stop in time are stopped now
            while queue and len(in_flight) < executor.capacity and stopping_since is None:
                run = queue.pop(0)
                steps_at_start += read_progress(store, run).step  # a resumed run's steps from before
                store.mark_running(run.key)
                in_flight[executor.submit(run.config, str(store.run_dir(run.key)))] = run.key
            report()
            finished, _ = wait(in_flight, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            if any([settle(f) for f in finished]):
                # every future of a broken pool fails with it: settle them all before a fresh pool
                for future in wait(in_flight).done:
                    settle(future)
                executor.reset()
            if finished and more is not None:
                admit(more())
            if stopping_since is not None and not in_flight:
                break
    except BaseException:  # Ctrl-C, or a bug in the driver: stop the runs, keep them pending
        executor.close(kill=True)
        for key in in_flight.values():
            store.mark_pending(key)
        raise
    report()
    if stopping_since is not None:
        raise RunStopped(f"stopped ({stop_reason()}): {done} of {len(keys)} runs finished, "
                         f"{failed} failed; the others are pending, those that had begun with a mid-run checkpoint")
