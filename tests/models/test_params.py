"""Accounting from a config equals the instantiated module; the paper's 68/6 ratio."""

import pytest

from moelab.config import ModelConfig, MoEConfig, RunConfig, resolve
from moelab.models import Transformer, count_module, count_params

CONFIGS = [
    dict(),
    dict(mlp="swiglu", tie_embeddings=False, qk_norm=True),
    dict(moe=MoEConfig(n_experts=8, top_k=1)),
    dict(mlp="swiglu", moe=MoEConfig(n_experts=16, top_k=2, expert_width=24, renormalize=True)),
    dict(n_layers=3, moe=MoEConfig(n_experts=6, top_k=2, n_shared_experts=2, expert_width=16,
                                   first_dense_layers=1)),
]


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_accounting_equals_instantiated_module(kwargs):
    cfg = resolve(RunConfig(model=ModelConfig(d_model=32, n_heads=4, d_ff=64, **kwargs))).model
    counts = count_params(cfg, vocab_size=101)
    model = Transformer(cfg, 101)
    assert count_module(model) == (counts.total, counts.active)
    embedding = sum(p.numel() for n, p in model.named_parameters() if n in ("embed.weight", "lm_head.weight"))
    assert counts.embedding == embedding
    assert counts.total_nonembedding == counts.total - embedding


def test_paper_32_expert_layer_is_68_to_6():
    """Allen-Zhu & Li: attention 4d^2 plus 32 experts of d -> d -> d, top-1: total/active = 68/6."""
    d = 1024  # large enough that the router's E*d weights are below 1% of the layer
    cfg = resolve(RunConfig(model=ModelConfig(d_model=d, n_heads=4, d_ff=d, n_layers=1, mlp="gelu",
                                               moe=MoEConfig(n_experts=32, top_k=1)))).model
    c = count_params(cfg, vocab_size=10)
    assert (c.attention + c.routed_experts) / (c.attention + c.routed_experts_active) == pytest.approx(68 / 6, rel=1e-12)
    # with the router and norms included the non-embedding ratio stays within 1% of it
    assert c.total_nonembedding / c.active_nonembedding == pytest.approx(68 / 6, rel=0.01)


def test_active_fraction_for_dense_is_one():
    c = count_params(ModelConfig(), vocab_size=50)
    assert c.total == c.active and c.routed_experts == 0
