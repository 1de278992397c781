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


def test_attention_benchmark_checks_both_paths_agree():
    import torch

    bench = load("attention")
    q, k, v = (torch.randn(2, 2, 24, 8, requires_grad=True) for _ in range(3))
    torch.testing.assert_close(bench.explicit_causal_attention(q, k, v), bench.sdpa(q, k, v), rtol=1e-5, atol=1e-5)


def test_bootstrap_benchmark_loops_match_the_vectorised_statistics():
    import numpy as np

    bench = load("bootstrap")
    from moelab.analysis import fit

    rng = np.random.default_rng(1)
    a, b, c = rng.normal(size=30), rng.normal(size=30), rng.normal(size=30)
    assert fit._pearson(a[None], b[None])[0] == pytest.approx(bench.loop_pearson(a, b))
    assert fit._partial(a[None], b[None], c[None])[0] == pytest.approx(bench.loop_partial(a, b, c))
    assert fit._total_share(a[None], c[None], b[None])[0] == pytest.approx(bench.loop_total_share(a, c, b))


def test_train_step_memory_ladder_keeps_the_active_size_and_times_both_optimizers(capsys):
    import sys

    bench = load("train_step")
    argv = sys.argv
    sys.argv = ["train_step.py", "--memory", "pkm", "--slots", "64,256", "--steps", "1", "--batch", "2"]
    try:
        bench.main()
    finally:
        sys.argv = argv
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()[:1].isdigit()]
    assert [(r[0], r[4]) for r in rows] == [("64", "sparse"), ("64", "dense"), ("256", "sparse"), ("256", "dense")]
    # the active count grows only by the sub-keys (4 heads x 2 halves x (16 - 8) keys x 16 dims), not with N
    assert int(rows[2][2].replace(",", "")) - int(rows[0][2].replace(",", "")) == 4 * 8 * 32


def test_the_mfu_benchmark_runs_a_small_moe_on_cpu(capsys):
    import argparse

    args = argparse.Namespace(device="cpu", dtype="bf16", experts="4", d_model=64, layers=1, top_k=2, expert_width=32,
                              vocab=128, batch=2, seq=16, steps=1, peak_tflops=1.0)
    load("train_step").model_flops_utilisation(args)
    printed = capsys.readouterr().out
    assert "tokens/s" in printed and "MFU" in printed and "top-2" in printed


def without_packages(tmp_path, *names: str) -> dict:
    """An environment whose Python cannot import `names` (as on the lent GPU image)."""
    import os

    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{n!r}] = None\n" for n in names))
    return os.environ | {"PYTHONPATH": f"{blocker}:{ROOT / 'src'}"}


@pytest.mark.slow
def test_moelab_imports_and_writes_configs_without_tomli_w_and_bm25s(tmp_path):
    import subprocess
    import sys

    env = without_packages(tmp_path, "tomli_w", "bm25s")
    code = ("import moelab.run, moelab.cli\n"
            "from moelab.config import load_preset, save_config, load_config\n"
            f"save_config(load_preset('tiny-moe'), {str(tmp_path / 'c.toml')!r})\n"
            f"assert load_config({str(tmp_path / 'c.toml')!r}) == load_preset('tiny-moe')\n"
            "try:\n    import bm25s\nexcept ImportError:\n    print('blocked')\n")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "blocked" in result.stdout  # the blocker works, so the imports above really ran without it


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step_on_the_cpu(tmp_path):
    import subprocess

    pytest.importorskip("transformers")
    env = without_packages(tmp_path, "tomli_w", "bm25s")
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", str(tmp_path / "out")], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("== 1.", "== 2.", "== 3."):
        assert step in result.stdout
    assert "tiny-moe on cpu" in result.stdout
    assert (tmp_path / "out" / "tiny-moe" / "metrics.json").exists()


def test_train_step_profile_mode_names_where_the_time_goes(capsys):
    from types import SimpleNamespace

    load("train_step").profile_table(SimpleNamespace(threads=1, profile_shapes="paper-moe 32 experts learned", steps=3))
    out = capsys.readouterr().out
    assert "GFLOP/s" in out and "ms/step" in out and "self time:" in out and "of the GEMM rate" in out


@pytest.mark.slow
def test_train_step_compile_mode_times_eager_compiled_and_gather_compiled(capsys, monkeypatch):
    from types import SimpleNamespace

    from moelab import training

    bench = load("train_step")  # dynamo's eager backend: the tracing, not inductor's minutes of codegen
    monkeypatch.setattr(bench, "compiled_step_losses", lambda m: training.compiled_step_losses(m, backend="eager"))
    bench.compile_table(SimpleNamespace(threads=1, profile_shapes="paper-moe 32 experts learned", steps=2))
    out = capsys.readouterr().out
    assert out.count("of the GEMM rate") == 3
    for variant in ("eager ", "compiled ", "gather, compiled "):
        assert f"    {variant}" in out


@pytest.mark.slow
def test_before_after_times_a_commit_against_the_checkout_and_removes_its_worktree():
    import subprocess
    import sys

    worktrees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "before_after.py"), "--before", "HEAD",
                           "--rounds", "1", "--exposures", "3", "--skip", "5", "--shapes", "paper-moe dense d-4d-d"],
                          capture_output=True, text=True, cwd=ROOT / "benchmarks")
    assert done.returncode == 0, done.stderr[-2000:]
    for variant in ("before", "now", "now, compiled"):
        assert f"round 1, paper-moe dense d-4d-d, {variant}: " in done.stdout
    row = done.stdout.strip().splitlines()[-1].split()
    assert row[:4] == ["paper-moe", "dense", "d-4d-d", row[3]] and float(row[3]) > 0  # before's ms/step
    assert subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True,
                          text=True).stdout == worktrees


@pytest.mark.slow
def test_the_allocator_benchmark_shows_the_faults_removed_and_the_loss_unchanged():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "allocator.py"), "--rounds", "1", "--skip", "5",
                           "--steps", "10", "--shapes", "frontier dense d_ff 4096"],
                          capture_output=True, text=True, cwd=ROOT / "benchmarks")
    assert done.returncode == 0, done.stderr[-2000:]
    row = done.stdout.strip().splitlines()[-1].split()
    assert row[:4] == ["frontier", "dense", "d_ff", "4096"] and row[-1] == "yes"  # the same loss in both arms
    glibc_faults, moelab_faults = float(row[4]), float(row[6])
    assert glibc_faults > 1000 and moelab_faults < glibc_faults / 10  # a [768, 4096] temporary is 3,072 pages
