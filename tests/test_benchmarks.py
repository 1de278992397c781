"""The benchmark scripts still run and compare what they claim to (timings are not tested)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_moe_layer_benchmark_checks_transformers_outputs_and_reports_every_ratio():
    pytest.importorskip("transformers")
    row = load("moe_layer").bench_shape(32, 16, 4, 2, 64, reps=1, with_hf=True, eager_limit=8, paths=True)
    for key in ("ratio_vs_dense", "ratio_vs_hf", "ratio_vs_hf_eager", "ratio_experts_vs_dense", "routing_share",
                "experts_ms", "weight_pass_ms", "ratio_grouped_mm_vs_dense", "ratio_padded_vs_dense"):
        assert key in row and row[key] == row[key], key  # present and not NaN
    assert (row["d_model"], row["n_experts"], row["top_k"], row["expert_width"], row["tokens"]) == (32, 4, 2, 16, 64)
