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
@pytest.mark.slow
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


def stopping_worker(rank: int, world_size: int, folder: str, run: str, stop_step: int) -> None:
    """As `worker`, but rank 0 alone is asked to stop at `stop_step` (0: never): both ranks must
    checkpoint and stop together."""
    from moelab.stopping import clear_stop, request_stop
    from moelab.errors import RunStopped

    torch.set_num_threads(1)
    clear_stop()
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous-{run}-{stop_step}", rank=rank,
                            world_size=world_size)

    def on_step(step, steps, loss):
        if rank == 0 and step == stop_step:
            request_stop("test")
    try:
        execute(load_config(f"{folder}/config.toml"), f"{folder}/{run}", on_step=on_step)
    except RunStopped:
        with open(f"{folder}/{run}-stopped{rank}", "w") as handle:
            handle.write("stopped")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_two_process_run_stopped_and_resumed_is_bit_identical(tmp_path):
    cfg = distributed_config(n_experts=4, top_k=1, expert_width=16, bias_update_rate=1e-3)
    save_config(cfg, tmp_path / "config.toml")
    os.environ.pop("WORLD_SIZE", None)
    mp.spawn(stopping_worker, args=(2, str(tmp_path), "whole", 0), nprocs=2, join=True)
    mp.spawn(stopping_worker, args=(2, str(tmp_path), "cut", 30), nprocs=2, join=True)
    assert all((tmp_path / f"cut-stopped{r}").exists() for r in (0, 1))  # rank 1 stopped with rank 0
    assert (tmp_path / "cut" / "resume.safetensors").exists()
    mp.spawn(stopping_worker, args=(2, str(tmp_path), "cut", 0), nprocs=2, join=True)
    whole, cut = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("whole", "cut"))
    assert cut["resumed_at_steps"] == [30]
    for key in ("bits", "history", "final_loss", "routing"):
        assert cut[key] == whole[key], key
    assert (tmp_path / "cut" / "model.safetensors").read_bytes() == (tmp_path / "whole" / "model.safetensors").read_bytes()


def failing_worker(rank: int, world_size: int, folder: str) -> None:
    """Rank 0's measurement fails; rank 1 must hear of it at once, not at the group's timeout."""
    import moelab.run
    from moelab.errors import MoelabError

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous-fail", rank=rank, world_size=world_size)
    if rank == 0:
        def broken(*args, **kwargs):
            raise RuntimeError("measurement broke")
        moelab.run.measure_capacity = broken
    try:
        execute(load_config(f"{folder}/config.toml"), f"{folder}/run")
    except (RuntimeError, MoelabError) as err:
        with open(f"{folder}/rank{rank}.err", "w") as handle:
            handle.write(str(err))
    finally:
        # both ranks have handled the failure before either closes its connections (once in CI,
        # rank 0 died of SIGABRT after its peer had torn its group down first)
        dist.barrier()
        dist.destroy_process_group()


@pytest.mark.slow
def test_when_rank_0_fails_to_measure_the_other_ranks_stop_promptly(tmp_path):
    import time

    cfg = distributed_config()
    save_config(cfg, tmp_path / "config.toml")
    os.environ.pop("WORLD_SIZE", None)
    start = time.monotonic()
    mp.spawn(failing_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    assert time.monotonic() - start < 60  # the process group's timeout is 30 minutes
    assert "measurement broke" in (tmp_path / "rank0.err").read_text()
    assert "rank 0 failed" in (tmp_path / "rank1.err").read_text()
