"""torchrun's path on CPU: two gloo processes train one run as one process does with the same
global batch (moelab/distributed.py)."""

import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from moelab.config import save_config, load_config
from moelab.run import execute
from tests.conftest import small_config


def distributed_config(**moe):
    cfg = small_config(**moe)
    cfg.train.exposures, cfg.train.log_every = 15, 10
    return cfg


def worker(rank: int, world_size: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size)
    try:
        metrics = execute(load_config(f"{folder}/config.toml"), f"{folder}/run")
        with open(f"{folder}/rank{rank}.json", "w") as handle:
            json.dump({"returned": bool(metrics)}, handle)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("moe", [{}, {"n_experts": 4, "top_k": 2, "expert_width": 16, "bias_update_rate": 1e-3}],
                         ids=["dense", "moe"])
def test_two_gloo_processes_train_the_run_one_process_trains(tmp_path, moe):
    cfg = distributed_config(**moe)
    single = execute(cfg, tmp_path / "single")
    save_config(cfg, tmp_path / "config.toml")
    os.environ.pop("WORLD_SIZE", None)
    mp.spawn(worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    double = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert double["processes"] == 2 and double["steps"] == single["steps"]
    assert double["tokens_trained"] == single["tokens_trained"]  # every paragraph once per exposure
    assert [json.loads((tmp_path / f"rank{r}.json").read_text())["returned"] for r in (0, 1)] == [True, False]
    one, two = (np.array([h["loss"] for h in m["history"]]) for m in (single, double))
    assert np.abs(one - two).max() < 1e-3 * one.max()  # float summation order only
    assert double["bits"] == pytest.approx(single["bits"], rel=0.02)
