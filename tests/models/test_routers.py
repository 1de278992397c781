"""The router variants of the router study: each routes as specified (docs/science.md, "Routers")."""

import dataclasses

import pytest
import torch

from moelab.config import MoEConfig, ModelConfig, resolve, RunConfig
from moelab.models import Transformer, count_module, count_params
from moelab.models.moe import MoE, Router, balanced_assignment, hash_experts, within_capacity
from moelab.run import execute
from moelab.runs.weights import load_run
from tests.conftest import small_config

D, E, V = 16, 4, 30


def router(**kw) -> Router:
    torch.manual_seed(0)
    return Router(D, MoEConfig(n_experts=E, top_k=1, expert_width=8, **kw), vocab_size=V)


def short(cfg, exposures=30):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, exposures=exposures))


@pytest.mark.parametrize("kind", ["learned", "hash", "hash_gated", "token", "cosine", "stable"])
def test_every_router_is_counted_exactly(kind):
    moe = MoEConfig(n_experts=E, top_k=1, expert_width=8, router=kind, freeze_fraction=0.1 if kind == "stable" else 0)
    cfg = resolve(RunConfig(model=ModelConfig(d_model=D, n_layers=2, n_heads=2, d_ff=8, moe=moe))).model
    model = Transformer(cfg, V)
    counts = count_params(cfg, V)
    assert count_module(model) == (counts.total, counts.active)
    assert (counts.router == 0) == (kind == "hash")


def test_hash_gated_selects_by_hash_and_weights_by_the_learned_score():
    r = router(router="hash_gated")
    x, tokens = torch.randn(12, D), torch.arange(12)
    routing = r(x, tokens)
    assert torch.equal(routing.experts, hash_experts(tokens, E))
    expected = r.gate(x).softmax(-1).gather(1, routing.experts)
    torch.testing.assert_close(routing.gates, expected)
    routing.gates.sum().backward()
    assert r.gate.weight.grad.abs().sum() > 0  # the gate value learns; the selection cannot


def test_the_unit_gate_is_one_forward_and_passes_the_score_gradient():
    r = router(gate="unit")
    x = torch.randn(10, D)
    routing = r(x)
    assert torch.equal(routing.gates, torch.ones_like(routing.gates))
    (routing.gates * torch.arange(10.0)[:, None]).sum().backward()
    assert r.gate.weight.grad is not None and r.gate.weight.grad.abs().sum() > 0


def test_balanced_assignment_gives_equal_loads_even_when_every_token_prefers_one_expert():
    logits = torch.zeros(12, E)
    logits[:, 0] = 5.0  # every token's first choice is expert 0
    logits[:, 1] = torch.arange(12.0)  # ties broken by a second preference
    experts = balanced_assignment(logits)
    assert torch.bincount(experts[:, 0], minlength=E).tolist() == [3, 3, 3, 3]
    r = router(balance="base")
    r.train()
    assert torch.bincount(r(torch.randn(40, D)).experts[:, 0], minlength=E).tolist() == [10, 10, 10, 10]
    assert 0 <= r.diagnostics()["assignment_agreement"] <= 1
    r.eval()  # greedy top-1 at evaluation
    x = torch.randn(40, D)
    assert torch.equal(r(x).experts[:, 0], r.gate(x).softmax(-1).argmax(-1))


def test_capacity_drops_the_overflow_in_training_only():
    counts = torch.tensor([5, 1, 0, 2])
    pairs = torch.tensor([0, 0, 1, 0, 3, 0, 3, 0])  # expert of each (token, k) pair, 8 pairs
    order = pairs.argsort(stable=True)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(8)
    kept = within_capacity(counts, order, inverse, 1.5)  # capacity ceil(1.5 * 8 / 4) = 3
    assert kept.tolist() == [1, 1, 1, 1, 1, 0, 1, 0]  # expert 0 keeps its first three tokens
    cfg = resolve(RunConfig(model=ModelConfig(d_model=D, n_layers=1, n_heads=2, d_ff=8, moe=MoEConfig(
        n_experts=E, top_k=1, expert_width=8, capacity_factor=1.0)))).model
    torch.manual_seed(0)
    moe = MoE(cfg, V)
    x = torch.randn(2, 20, D)
    dropless = MoE(dataclasses.replace(cfg, moe=dataclasses.replace(cfg.moe, capacity_factor=0.0)), V)
    dropless.load_state_dict(moe.state_dict())
    moe.eval(), dropless.eval()
    torch.testing.assert_close(moe(x)[0], dropless(x)[0])  # evaluation is dropless
    moe.train()
    dropped = (moe(x)[0] == 0).all(-1).sum()
    assert dropped > 0  # overflow tokens got no expert output (the residual alone carries them)


def test_the_stable_router_balances_its_first_stage_only():
    cfg = resolve(RunConfig(model=ModelConfig(d_model=D, n_layers=1, n_heads=2, d_ff=8, moe=MoEConfig(
        n_experts=E, top_k=1, expert_width=8, router="stable", freeze_fraction=0.1, aux_loss_weight=0.5)))).model
    torch.manual_seed(0)
    moe = MoE(cfg, V)
    x, tokens = torch.randn(2, 10, D), torch.randint(0, V, (2, 10))
    _, aux = moe(x, tokens)
    distill = moe.router(x.reshape(-1, D), tokens.reshape(-1)).distill_loss
    assert aux > distill  # first stage: the Switch loss and the distillation
    moe.router.freeze()
    _, aux = moe(x, tokens)
    assert aux == 0  # second stage: the frozen token router routes; nothing left to balance or distil


@pytest.mark.slow
def test_the_stable_router_ends_routing_by_its_frozen_token_router(tmp_path):
    cfg = short(small_config(n_experts=4, top_k=1, expert_width=32, router="stable", freeze_fraction=0.3))
    execute(cfg, tmp_path / "run")
    _, _, model = load_run(tmp_path / "run")
    r = model.routers()[0]
    assert r.is_frozen()  # saved with the weights: the finished model routes by its token router
    tokens = torch.arange(model.vocab_size)
    x = torch.randn(len(tokens), 32)
    assert torch.equal(r(x, tokens).experts[:, 0], r.token_router(tokens).argmax(-1))


@pytest.mark.slow
def test_a_learned_router_frozen_part_way_keeps_its_weights_from_then_on(monkeypatch, tmp_path):
    cfg = short(small_config(n_experts=4, top_k=1, expert_width=32, freeze_fraction=0.5))
    at_freeze: list[torch.Tensor] = []
    freeze = Transformer.freeze_routing

    def recording(self):
        if not at_freeze:  # the weights when the freeze begins
            at_freeze.extend(r.gate.weight.detach().clone() for r in self.routers())
        freeze(self)
    monkeypatch.setattr(Transformer, "freeze_routing", recording)
    execute(cfg, tmp_path / "run")
    _, _, model = load_run(tmp_path / "run")
    assert at_freeze
    for before, r in zip(at_freeze, model.routers()):
        assert torch.equal(before, r.gate.weight)  # not one update after the freeze


@pytest.mark.slow
def test_fact_churn_is_zero_under_hash_routing_and_recorded(tmp_path):
    hashed = execute(short(small_config(n_experts=4, top_k=1, expert_width=32, router="hash")), tmp_path / "hash")
    learned = execute(short(small_config(n_experts=4, top_k=1, expert_width=32)), tmp_path / "learned")
    assert all(c == 0 for h in hashed["history"] for c in h["fact_churn"])
    assert any(c > 0 for h in learned["history"] for c in h["fact_churn"])


@pytest.mark.slow
def test_a_stable_router_resumed_across_its_freeze_is_bit_identical(tmp_path, monkeypatch):
    from moelab.checkpoint import Checkpointer
    from moelab.stopping import stop_reason

    cfg = short(small_config(n_experts=4, top_k=1, expert_width=32, router="stable", freeze_fraction=0.5))
    whole = execute(cfg, tmp_path / "whole")
    calls = {"n": 0}

    def due(self):
        calls["n"] += 1
        return stop_reason() is not None or calls["n"] % 9 == 0
    monkeypatch.setattr(Checkpointer, "due", due)

    class Killed(Exception):
        pass

    def kill(step, steps, loss):
        if step == int(0.8 * steps):
            raise Killed
    with pytest.raises(Killed):
        execute(cfg, tmp_path / "cut", on_step=kill)
    resumed = execute(cfg, tmp_path / "cut")
    assert resumed["resumed_at_steps"] and resumed["bits"] == whole["bits"] and resumed["history"] == whole["history"]
