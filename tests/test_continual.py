"""Continued runs: a parent's exact weights, freezing that freezes, added experts that start with
no effect, replay from A only, B's people new, and the run key and config rules."""

import dataclasses

import numpy as np
import pytest
import safetensors.torch
import torch

import moelab.run
from moelab.config import ContinualConfig, RunConfig, resolve, run_key, save_config
from moelab.continual import Replay, freeze
from moelab.errors import ConfigError
from moelab.knowledge import BioD, build_knowledge_base
from moelab.models import Transformer, count_module, count_params
from moelab.run import execute
from moelab.runs.weights import load_run
from tests.conftest import small_config


def parent_config(**moe) -> RunConfig:
    cfg = small_config(**moe)
    cfg.train.exposures = 20
    return cfg


def continued(cfg: RunConfig, **fields) -> RunConfig:
    return resolve(dataclasses.replace(cfg, continual=ContinualConfig(new_people=30, exposures=10, **fields)))


@pytest.fixture(scope="module")
def moe_parent(tmp_path_factory):
    """A finished small MoE parent in a sweep-like folder: runs/<parent key>/."""
    runs = tmp_path_factory.mktemp("runs")
    cfg = parent_config(n_experts=4, top_k=1, expert_width=16, bias_update_rate=1e-3)  # a bias buffer that moves
    metrics = execute(cfg, runs / run_key(cfg))
    return cfg, runs, metrics


def weights(folder) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(folder / "model.safetensors")


def test_knowledge_base_b_holds_new_people_in_a_s_vocabulary_and_value_sets():
    a = build_knowledge_base(parent_config().data)
    b = a.new_people(30, seed=1)
    names = lambda kb: {tuple(n) for n in kb.names_t.tolist()}  # noqa: E731
    assert len(names(b)) == 30 and not names(a) & names(b)
    assert not names(b) & {tuple(n) for n in a.held_out_names}  # abstention's invented people stay unseen
    for k in range(len(a.attribute_names)):  # every value chunk of B is one of A's chunks
        chunks_a = {tuple(c) for c in a.blocks[:, k, 1:].reshape(-1, 2).tolist()} | {tuple(c) for c in a.chunks[k].tolist()}
        assert {tuple(c) for c in b.blocks[:, k, 1:].reshape(-1, 2).tolist()} <= chunks_a
    assert b.vocab is a.vocab and b.information_bits()["diversity"] == 0.0
    assert not torch.equal(b.blocks, a.new_people(30, seed=2).blocks)
    assert torch.equal(b.blocks, a.new_people(30, seed=1).blocks)


def test_replay_rows_come_from_a_only_and_the_rest_from_b():
    a = build_knowledge_base(parent_config().data)
    b = a.new_people(30, seed=1)
    mixture = Replay(a, b, replay=10)
    assert mixture.n_people == 40
    people = np.arange(40)
    batch = mixture.training_batch(people, np.random.default_rng(0))
    S = a.cfg.name_slots
    row_names = [tuple(r) for r in batch.inputs[:, 1:1 + S].tolist()]
    names_a, names_b = {tuple(n) for n in a.names_t.tolist()}, [tuple(n) for n in b.names_t.tolist()]
    assert row_names[:30] == names_b
    assert all(n in names_a for n in row_names[30:])


def test_a_continued_run_loads_its_parents_weights_exactly_and_all_frozen_changes_nothing(moe_parent):
    cfg, runs, parent = moe_parent
    child = continued(cfg, trainable=[])
    metrics = execute(child, runs / run_key(child))
    c = metrics["continual"]
    assert c["parent_key"] == run_key(cfg) and c["trainable_params"] == 0 and c["steps"] > 0
    assert c["bits_a_before"] == parent["bits"]  # the parent's weights, to the last digit
    assert c["bits_a_after"] == c["bits_a_before"] and c["forgetting"] == 0.0
    before, after = weights(runs / run_key(cfg)), weights(runs / run_key(child))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_only_the_trainable_groups_change(moe_parent):
    cfg, runs, _ = moe_parent
    child = continued(cfg, trainable=["experts"])
    execute(child, runs / run_key(child))
    before, after = weights(runs / run_key(cfg)), weights(runs / run_key(child))
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == (".experts." in name), name


def test_added_experts_start_with_no_effect_and_only_they_and_the_routers_train(moe_parent):
    cfg, runs, _ = moe_parent
    _, kb, model = load_run(runs / run_key(cfg))
    tokens = torch.randint(0, len(kb.vocab), (4, 12))
    with torch.no_grad():
        reference = model(tokens)[0]
        model.add_experts(3)
        assert torch.equal(model(tokens)[0], reference)
    assert count_module(model) == (lambda c: (c.total, c.active))(count_params(cfg.model, len(kb.vocab), 3))

    child = continued(cfg, trainable=["new"], add_experts=3)
    metrics = execute(child, runs / run_key(child))
    assert [(r["layer"], r.get("group")) for r in metrics["routing"]] == [(0, None), (0, "added"), (1, None), (1, "added")]
    assert metrics["continual"]["added_params"] == metrics["continual"]["trainable_params"] > 0
    before, after = weights(runs / run_key(cfg)), weights(runs / run_key(child))
    assert all(torch.equal(before[k], after[k]) for k in before)  # every parent weight as it was
    assert any(not torch.equal(after[k], torch.zeros_like(after[k])) for k in after if "added_experts.experts.w_out" in k)
    _, _, reloaded = load_run(runs / run_key(child))  # a grown model reloads from its folder
    assert reloaded.blocks[0].added_experts is not None


def test_a_continued_run_trains_its_missing_parent_beside_it_once(tmp_path, monkeypatch):
    cfg = parent_config()
    child = continued(cfg, replay_fraction=0.25)
    metrics = execute(child, tmp_path / run_key(child))
    assert metrics["continual"]["replay_rows_per_exposure"] == 10
    assert (tmp_path / run_key(cfg) / "metrics.json").exists()
    trained = []
    real = moelab.run.run_pipeline
    monkeypatch.setattr(moelab.run, "run_pipeline", lambda c, *a, **k: trained.append(c) or real(c, *a, **k))
    again = continued(cfg, replay_fraction=0.25, lr=1e-3)
    execute(again, tmp_path / run_key(again))
    assert [c.continual.active for c in trained] == [True]  # the second child found its parent finished


def test_freeze_counts_what_may_change():
    cfg = parent_config(n_experts=4, top_k=1, expert_width=16)
    model = Transformer(cfg.model, 40)
    total = sum(p.numel() for p in model.parameters())
    assert freeze(model, ["all"]) == total and freeze(model, []) == 0
    experts = sum(p.numel() for m in model.routed_expert_modules() for p in m.parameters())
    assert freeze(model, ["experts"]) == experts


def test_continued_runs_have_keys_of_their_own_and_plain_runs_keep_theirs():
    cfg = parent_config()
    child = continued(cfg)
    assert run_key(child.parent()) == run_key(cfg) != run_key(child)
    assert run_key(continued(cfg, replay_fraction=0.1)) != run_key(child)
    assert child.parent().continual == ContinualConfig()


@pytest.mark.parametrize("fields, message", [
    ({"trainable": ["experts"]}, "no experts"),
    ({"trainable": ["weights"]}, "unknown group 'weights'"),
    ({"trainable": ["all", "new"]}, "'all' already includes"),
    ({"add_experts": 2}, "needs an MoE model"),
    ({"replay_fraction": 1.0}, "continual.replay_fraction"),
])
def test_bad_continual_fields_are_refused_by_name(fields, message):
    with pytest.raises(ConfigError, match=message):
        continued(parent_config(), **fields)


def test_b_of_a_bios_base_is_refused():
    cfg = parent_config()
    cfg.data.kind = "bios"
    with pytest.raises(ConfigError, match="bioD only"):
        continued(cfg)
    assert isinstance(build_knowledge_base(parent_config().data), BioD)


@pytest.mark.slow
def test_a_sweep_of_parents_and_continued_runs_reports_gains_against_losses(tmp_path):
    from moelab.analysis.report import write_report
    from moelab.sweeps.grid import load_sweep_data
    from moelab.sweeps.runner import run_sweep
    from moelab.sweeps.store import Store
    from tests.sweeps.fakes import InstantExecutor

    save_config(parent_config(), tmp_path / "base.toml")
    sweep = load_sweep_data({"name": "c", "base": "base.toml", "grid": [
        {"seed": [0, 1]},
        {"continual": {"new_people": [30], "exposures": [5], "replay_fraction": [0.0, 0.2]}, "seed": [0, 1]}]},
        "test", tmp_path)
    store = Store(tmp_path / "sweep")
    executor = InstantExecutor(lambda cfg, out: ("done", execute(cfg, out)))
    keys = run_sweep(sweep, store, executor)
    assert len(keys) == 6 and set(store.statuses().values()) == {"done"}
    assert [c.continual.active for c in executor.submitted] == [False, False, True, True, True, True]  # parents first
    page = write_report(store.rows(), tmp_path / "sweep", title="continual").read_text()
    assert "bits gained on B against bits lost on A" in page and (tmp_path / "sweep" / "continual.png").exists()
    assert "continued replay=0.2" in page


def test_added_memory_starts_with_no_effect_and_only_it_trains(tmp_path):
    from moelab.config import MemoryConfig

    cfg = parent_config()
    cfg.model.memory = MemoryConfig(kind="pkm", layers=[1], placement="beside", n_keys=8, heads=2, top_k=2, key_dim=8)
    cfg = resolve(cfg)
    execute(cfg, tmp_path / run_key(cfg))
    _, kb, model = load_run(tmp_path / run_key(cfg))
    tokens = torch.randint(0, len(kb.vocab), (3, 10))
    with torch.no_grad():
        reference = model(tokens)[0]
        model.add_memory()
        assert torch.equal(model(tokens)[0], reference)
    child = continued(cfg, trainable=["new"], add_memory=True)
    metrics = execute(child, tmp_path / run_key(child))
    assert [(m["layer"], m.get("group")) for m in metrics["memory"]] == [(1, None), (1, "added")]
    before, after = weights(tmp_path / run_key(cfg)), weights(tmp_path / run_key(child))
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(after["blocks.1.added_memory.values"], torch.zeros_like(after["blocks.1.added_memory.values"]))
    assert metrics["continual"]["added_params"] == metrics["continual"]["trainable_params"] > 0


def test_the_run_table_of_a_continued_run_says_what_it_gained_and_lost(moe_parent):
    from rich.console import Console

    from moelab.tables import run_table

    cfg, runs, _ = moe_parent
    child = continued(cfg, replay_fraction=0.25)
    metrics = execute(child, runs / run_key(child))
    console = Console(width=200, record=True)
    console.print(run_table(metrics))
    text = console.export_text()
    assert f"run {run_key(cfg)}: 30 new people, 10 replay rows per pass, training all" in text
    assert "forgetting" in text and "bits on B" in text
