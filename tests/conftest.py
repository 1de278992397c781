"""Shared fixtures: one small trained run, reused by the tests that need a learned model."""

import pytest

from moelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig, resolve


def small_config(**moe) -> RunConfig:
    """A knowledge base and model small enough to learn in a few seconds on one thread."""
    from moelab.config import MoEConfig

    return resolve(RunConfig(
        name="small",
        seed=0,
        data=DataConfig(n_people=120, name_slots=2, name_vocab=16, n_attributes=2, value_chunks=1,
                        chunk_length=2, diversity=8, value_vocab=16, seed=0),
        model=ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, mlp="swiglu",
                          moe=MoEConfig(**moe)),
        train=TrainConfig(exposures=90, batch_size=16, lr=1e-2, warmup_steps=20, log_every=50),
    ))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    from moelab.run import execute

    out = tmp_path_factory.mktemp("run")
    cfg = small_config()
    return cfg, out, execute(cfg, out)
