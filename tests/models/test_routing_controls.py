"""Hash routing (a router that cannot churn), routing churn, and learning-rate multipliers."""

import pytest
import torch

from moelab.config import ModelConfig, MoEConfig, RunConfig, TrainConfig, resolve
from moelab.errors import ConfigError
from moelab.evaluation.routing import top1_experts
from moelab.models.moe import hash_experts
from moelab.run import execute
from moelab.training import make_optimizer
from tests.conftest import small_config


def test_hash_routing_never_changes_a_tokens_expert(tmp_path):
    cfg = small_config(n_experts=4, top_k=1, router="hash")
    cfg.train.exposures = 15
    from moelab.runs.weights import build

    kb, model = build(cfg, torch.device("cpu"))
    tokens = kb.training_batch(torch.arange(16).numpy(), __import__("numpy").random.default_rng(0)).inputs
    before = top1_experts(model, tokens)
    assert all(r.gate is None for r in model.routers())  # no router parameters at all
    metrics = execute(cfg, tmp_path)
    from moelab.runs.weights import load_run

    _, _, trained = load_run(tmp_path)
    after = top1_experts(trained, tokens)
    for b, a in zip(before, after):
        assert torch.equal(a, b) and torch.equal(a, hash_experts(tokens.reshape(-1), 4)[:, 0])
    churn = [h["churn"] for h in metrics["history"] if "churn" in h]
    assert churn and all(c == [0.0, 0.0] for c in churn)
    assert metrics["params"]["router"] == 0


def test_learned_routing_churn_is_a_share_per_layer(tmp_path):
    cfg = small_config(n_experts=4, top_k=1)
    cfg.train.exposures = 15
    churn = [h["churn"] for h in execute(cfg, tmp_path)["history"] if "churn" in h]
    assert churn and all(len(c) == 2 and all(0.0 <= x <= 1.0 for x in c) for c in churn)
    assert any(x > 0 for c in churn for x in c)  # early in training, tokens do switch experts


def test_hash_routing_is_top_1_only_and_refuses_balancing():
    with pytest.raises(ConfigError, match="top_k = 1"):
        resolve(RunConfig(model=ModelConfig(moe=MoEConfig(n_experts=4, top_k=2, router="hash"))))
    with pytest.raises(ConfigError, match="no router to balance"):
        resolve(RunConfig(model=ModelConfig(moe=MoEConfig(n_experts=4, router="hash", aux_loss_weight=0.01))))


def test_learning_rate_multipliers_reach_the_optimizer_groups():
    from moelab.models.transformer import Transformer

    cfg = resolve(RunConfig(model=ModelConfig(d_model=32, n_heads=4, d_ff=64, moe=MoEConfig(n_experts=4, n_shared_experts=1)),
                            train=TrainConfig(router_lr_mult=0.5, expert_lr_mult=3.0)))
    model = Transformer(cfg.model, 40)
    optimizer = make_optimizer(model, cfg.train, torch.device("cpu"))
    mult = {id(p): g["lr_mult"] for g in optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        expected = 0.5 if ".router." in name else 3.0 if (".experts." in name or ".shared." in name) else 1.0
        assert mult[id(p)] == expected, name
    plain = make_optimizer(model, resolve(RunConfig()).train, torch.device("cpu"))
    assert [g["lr_mult"] for g in plain.param_groups] == [1.0, 1.0]  # decay and no decay, as before
