"""Accounting against published models, pinned."""

import pytest

from moelab.design.golden import ARCHITECTURES, validation_rows
from moelab.models.params import (
    count_architecture, forward_flops_per_token, kv_cache_bytes_per_token, training_flops_per_token,
)

PINNED = {  # total, active (the publisher's definition), from this module's exact counts
    "DeepSeek-V3": (671_026_419_200, 37_552_000_000),
    "Kimi K2": (1_026_408_232_448, 32_861_000_000),
    "Qwen3-30B-A3B": (30_532_122_624, 3_353_000_000),
    "gpt-oss-120b": (116_829_156_672, 5_133_000_000),
    "OLMoE-1B-7B": (6_919_161_856, 1_282_000_000),
}


@pytest.mark.parametrize("row", validation_rows(), ids=lambda r: r["model"])
def test_published_counts_within_one_percent(row):
    assert abs(row["total_error"]) < 0.01 and abs(row["active_error"]) < 0.01
    total, active = PINNED[row["model"]]
    assert round(row["total_b"] * 1e9) == total
    assert row["active_b"] * 1e9 == pytest.approx(active, rel=1e-3)


def test_kv_cache_per_token():
    assert kv_cache_bytes_per_token(ARCHITECTURES["Qwen3-30B-A3B"]) == 98_304
    assert kv_cache_bytes_per_token(ARCHITECTURES["DeepSeek-V3"]) == 70_272  # one latent, no factor 2
    assert kv_cache_bytes_per_token(ARCHITECTURES["gpt-oss-120b"]) == 36_864  # sliding layers excluded
    assert kv_cache_bytes_per_token(ARCHITECTURES["OLMoE-1B-7B"], bytes_per_value=4) == 2 * 131_072


def test_flops_per_token():
    qwen = ARCHITECTURES["Qwen3-30B-A3B"]
    c = count_architecture(qwen)
    base = forward_flops_per_token(qwen, 0)
    assert base == 2 * (c.active - c.input_embedding - c.norms)
    # attention scores: 2 H (d_qk + d_v) per key and layer
    a = qwen.attention
    assert forward_flops_per_token(qwen, 1000) - base == 2 * a.n_heads * 2 * a.head_dim * qwen.layers * 1000
    assert training_flops_per_token(qwen, 1000) == 3 * forward_flops_per_token(qwen, 1000, causal_average=True)
    assert training_flops_per_token(qwen, 1000, recompute=True) == 4 * forward_flops_per_token(qwen, 1000, True)
    gpt = ARCHITECTURES["gpt-oss-120b"]  # sliding layers stop growing past their 128-token window
    growth = forward_flops_per_token(gpt, 10_000) - forward_flops_per_token(gpt, 5_000)
    g = gpt.attention
    assert growth == 2 * g.n_heads * 2 * g.head_dim * (gpt.layers - g.sliding_layers) * 5_000
