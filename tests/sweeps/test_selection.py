"""Per-configuration selection: every candidate on the selection seeds, the best one reported."""

import json
import threading
from concurrent.futures import Future
import math
import pytest

from moelab.analysis.report import write_report
from moelab.errors import ConfigError
from moelab.sweeps import Store, load_sweep, run_sweep
from moelab.sweeps.grid import selection_runs
from tests.sweeps.fakes import InstantExecutor

SWEEP = """
name = "select"
base = "tiny-dense"
[set]
"data.n_people" = 100
[[grid]]
"model.moe.n_experts" = [0, 4]
"seed" = [0, 1]
[select]
"train.lr" = [1e-3, 1e-2, 1e-1]
seeds = [100]
"""


def best_lr(n_experts: int) -> float:
    return 1e-2 if n_experts == 0 else 1e-1  # MoE prefers a higher learning rate here


def scored(cfg, out_dir):
    """Bits peak at each architecture's best learning rate."""
    distance = abs(math.log10(cfg.train.lr) - math.log10(best_lr(cfg.model.moe.n_experts)))
    e = cfg.model.moe.n_experts
    bits = 1000.0 - 100 * distance + cfg.seed
    total = 1000 * max(1, e)
    return "done", {"bits": bits, "bits_per_param": bits / total, "bits_per_active_param": bits / 1000,
                    "accuracy": 0.5, "p_total": total, "p_active": 1000, "active_fraction": 1000 / total,
                    "n_experts": e, "top_k": 1 if e else 0, "expert_width": 104, "granularity": 1.0,
                    "information_bits": 5000.0, "exposures": 100, "steps": 10, "seed": cfg.seed,
                    "wall_seconds": 1.0, "data_kind": "biod", "name": cfg.name, "config": {}}


@pytest.mark.slow
def test_selection_runs_every_candidate_then_reports_the_best_on_other_seeds(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(SWEEP)
    sweep = load_sweep(spec)
    assert len(selection_runs(sweep)) == 2 * 3  # two configurations, three learning rates, one seed
    store, executor = Store(tmp_path / "out"), InstantExecutor(scored, capacity=2)
    keys = run_sweep(sweep, store, executor=executor)
    selection, reported = executor.submitted[:6], executor.submitted[6:]
    assert {c.seed for c in selection} == {100} and {c.seed for c in reported} == {0, 1}
    assert sorted((c.model.moe.n_experts, c.train.lr) for c in reported) == [(0, 1e-2), (0, 1e-2), (4, 1e-1), (4, 1e-1)]
    meta = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert set(meta["keys"]) == set(keys) and len(meta["reported"]) == 4
    chosen = {r["configuration"]: r["chosen"] for r in meta["selection"]}
    assert chosen == {"dense d_ff=104": {"train.lr": 0.01}, "E=4 k=1 w=104": {"train.lr": 0.1}}
    rows = store.rows(keys)
    assert sum("(selection)" in r["label"] for r in rows) == 6
    assert sorted(r["label"] for r in rows if "(selection)" not in r["label"])[:2] == ["E=4 k=1 w=104 lr=0.1 seed=0", "E=4 k=1 w=104 lr=0.1 seed=1"]
    page = write_report(rows, tmp_path / "out", "t", selection=meta["selection"], reported=meta["reported"]).read_text()
    assert "Selected per configuration" in page and "seed(s) 100" in page
    assert page.count("(selection)") == 6  # listed in the runs table, kept out of the analysis


def test_choosing_on_the_reported_seeds_is_refused(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(SWEEP.replace("seeds = [100]", "seeds = [1, 100]"))
    with pytest.raises(ConfigError, match=r"\[select\] seeds: \[1\] are also the grid's seeds"):
        load_sweep(spec)
    spec.write_text(SWEEP.replace('"train.lr" = [1e-3, 1e-2, 1e-1]', '"train.lr" = [1e-3, -1.0]'))
    with pytest.raises(ConfigError, match="train.lr = -1.0: must be a positive number"):
        load_sweep(spec)


def test_select_set_fixes_fields_for_the_selection_runs_only(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(SWEEP.replace('"data.n_people" = 100', '"data.n_people" = 100\n"train.exposures" = 30')
                    + '[select.set]\n"train.exposures" = 10\n')
    executor = InstantExecutor(scored)
    run_sweep(load_sweep(spec), Store(tmp_path / "out"), executor)
    selection, reported = executor.submitted[:6], executor.submitted[6:]
    assert {c.train.exposures for c in selection} == {10} and {c.train.exposures for c in reported} == {30}
    assert {c.train.lr for c in reported if c.model.moe.n_experts} == {1e-1}  # chosen on the short runs
    meta = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert all(r["chosen"] is not None for r in meta["selection"])


def test_select_set_refuses_lists_seeds_and_selected_fields(tmp_path):
    spec = tmp_path / "s.toml"
    for extra, message in [('"train.exposures" = [10, 20]', "one fixed value"),
                           ('"seed" = 3', "one fixed value"),
                           ('"train.lr" = 1e-2', "either selected over or fixed"),
                           ('"train.nonsense" = 1', "unknown field")]:
        spec.write_text(SWEEP + "[select.set]\n" + extra + "\n")
        with pytest.raises(ConfigError, match=message):
            load_sweep(spec)


NARROWED = SWEEP.replace('[select]', '''[[grid]]
"model.moe.n_experts" = [8]
"seed" = [0]
select = {"train.lr" = [1e-2, 1e-1]}
[select]''')


def test_a_block_may_narrow_the_candidates_its_configurations_try(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(NARROWED)
    sweep = load_sweep(spec)
    trials = selection_runs(sweep)
    assert len(trials) == 2 * 3 + 2  # the first block's two configurations try all three rates
    assert sorted(c.config.train.lr for c in trials if c.config.model.moe.n_experts == 8) == [1e-2, 1e-1]
    executor = InstantExecutor(scored)
    run_sweep(sweep, Store(tmp_path / "out"), executor)
    assert [c.train.lr for c in executor.submitted[len(trials):] if c.model.moe.n_experts == 8] == [1e-1]
    meta = json.loads((tmp_path / "out" / "sweep.json").read_text())
    record = next(r for r in meta["selection"] if r["configuration"].startswith("E=8"))
    assert [c["values"]["train.lr"] for c in record["candidates"]] == [1e-2, 1e-1]


def test_a_block_narrowed_to_one_candidate_fixes_it_without_selection_runs(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(NARROWED.replace('select = {"train.lr" = [1e-2, 1e-1]}', 'select = {"train.lr" = [1e-1]}'))
    sweep = load_sweep(spec)
    trials = selection_runs(sweep)
    assert len(trials) == 2 * 3 and all(c.config.model.moe.n_experts != 8 for c in trials)
    executor = InstantExecutor(scored)
    run_sweep(sweep, Store(tmp_path / "out"), executor)
    assert [c.train.lr for c in executor.submitted[len(trials):] if c.model.moe.n_experts == 8] == [1e-1]
    meta = json.loads((tmp_path / "out" / "sweep.json").read_text())
    record = next(r for r in meta["selection"] if r["configuration"].startswith("E=8"))
    assert record["fixed"] and record["chosen"] == {"train.lr": 1e-1} and record["candidates"][0]["finished"] == 0
    assert len(meta["keys"]) == len(trials) + len(meta["reported"])


@pytest.mark.parametrize("select, message", [
    ('{"train.lr" = [3e-2]}', "may only narrow"),
    ('{"train.exposures" = [10]}', "may only narrow"),
    ('{"train.lr" = []}', "non-empty list"),
    ('"fast"', "table of candidate lists"),
])
def test_a_block_select_outside_the_sweeps_candidates_is_refused(tmp_path, select, message):
    spec = tmp_path / "s.toml"
    spec.write_text(NARROWED.replace('select = {"train.lr" = [1e-2, 1e-1]}', f"select = {select}"))
    with pytest.raises(ConfigError, match=message):
        load_sweep(spec)
    spec.write_text(NARROWED.split("[select]")[0])
    with pytest.raises(ConfigError, match=r"grid 2: select: the sweep has no \[select\] table"):
        load_sweep(spec)


class HoldingExecutor(InstantExecutor):
    """Settles runs at once, except the first one submitted: its result comes only once `hold`
    more runs have been submitted (or after a few seconds, so a driver that waits for it cannot
    hang the test). Records, per submission, whether that first run was still in flight."""

    def __init__(self, outcome, hold: int, capacity: int = 2):
        super().__init__(outcome, capacity)
        self.hold, self.held, self.while_held = hold, None, []

    def submit(self, cfg, out_dir):
        if self.held is None:
            self.submitted.append(cfg)
            self.held = (Future(), self.outcome(cfg, out_dir))
            threading.Timer(3.0, self.release).start()
            return self.held[0]
        self.while_held.append(not self.held[0].done())
        future = super().submit(cfg, out_dir)
        if len(self.submitted) == 1 + self.hold:
            self.release()
        return future

    def release(self):
        if not self.held[0].done():
            self.held[0].set_result(self.held[1])


@pytest.mark.slow
def test_a_configuration_whose_selection_ended_reports_while_another_is_still_selecting(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(SWEEP)
    executor = HoldingExecutor(scored, hold=7)  # one MoE selection run, submitted first, runs long
    keys = run_sweep(load_sweep(spec), Store(tmp_path / "out"), executor)
    slow = executor.submitted[0]
    assert slow.model.moe.n_experts == 4 and slow.seed == 100
    later = executor.submitted[1:]
    kinds = [("dense" if c.model.moe.n_experts == 0 else "moe", "selection" if c.seed == 100 else "reported")
             for c in later]
    assert kinds == [("moe", "selection")] * 2 + [("dense", "selection")] * 3 + [("dense", "reported")] * 2 \
        + [("moe", "reported")] * 2
    assert executor.while_held[:7] == [True] * 7  # both dense reported runs began beside the slow one
    assert {c.train.lr for c in later if c.model.moe.n_experts == 4 and c.seed != 100} == {1e-1}
    meta = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert len(meta["reported"]) == 4 and set(meta["keys"]) == set(keys) and len(keys) == 10
    assert all(r["chosen"] is not None for r in meta["selection"])
