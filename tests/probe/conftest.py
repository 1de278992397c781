"""One small trained MoE run that Qwen3-MoE can express, exported to a transformers folder."""

import pytest

from moelab.config import resolve
from tests.conftest import small_config


@pytest.fixture(scope="session")
def probe_run(tmp_path_factory):
    """(run folder, metrics): 120 people, 4 top-1 experts, q/k-norm; recall about 70%."""
    from moelab.run import execute

    cfg = small_config(n_experts=4, top_k=1, expert_width=64)
    cfg.model.qk_norm = True
    out = tmp_path_factory.mktemp("probe-run")
    return out, execute(resolve(cfg), out)


@pytest.fixture(scope="session")
def probe_hf(probe_run, tmp_path_factory):
    pytest.importorskip("transformers")
    from moelab.models.hf import export_hf
    from moelab.runs.weights import load_run

    folder = tmp_path_factory.mktemp("probe-hf")
    cfg, kb, model = load_run(probe_run[0])
    return export_hf(cfg, kb, model, folder)
