import math

import numpy as np
import pytest
import torch

from moelab.config import TrainConfig
from moelab.errors import TrainingDiverged
from moelab.knowledge import build_knowledge_base
from moelab.models import Transformer
from moelab.training import learning_rate, n_steps, people_order, train
from tests.conftest import small_config


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(lr=1e-2, warmup_steps=10, min_lr_ratio=0.1)
    steps = 200
    lrs = [learning_rate(s, steps, cfg) for s in range(steps)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[9] == pytest.approx(1e-2)
    assert all(a >= b - 1e-12 for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(1e-3)


def test_steps_follow_from_exposures():
    assert n_steps(TrainConfig(exposures=100, batch_size=32), 2000) == 6250
    assert n_steps(TrainConfig(exposures=3, batch_size=32), 50) == math.ceil(150 / 32)


def test_every_person_is_seen_exactly_exposures_times():
    order = people_order(17, 5, np.random.default_rng(0))
    assert np.bincount(order).tolist() == [5] * 17


def test_nan_loss_stops_the_run_with_a_reason():
    cfg = small_config()
    kb = build_knowledge_base(cfg.data)
    model = Transformer(cfg.model, len(kb.vocab))
    with torch.no_grad():
        model.embed.weight[3] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 1/\d+ .*train\.lr"):
        train(model, kb, cfg.train, seed=0, device=torch.device("cpu"))
