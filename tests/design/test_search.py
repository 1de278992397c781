import json

import pytest
from typer.testing import CliRunner

from moelab.cli import app
from moelab.config import load_config

runner = CliRunner()


@pytest.mark.slow
def test_search_returns_ranked_candidates_within_budget():
    result = runner.invoke(app, ["design", "--total-b", "1000", "--active-b", "32", "--gpu", "h100", "--tp", "8",
                                 "--ep", "32", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert 1 <= len(rows) <= 10
    for r in rows:
        assert abs(r["total"] / 1e12 - 1) <= 0.05 and abs(r["active"] / 32e9 - 1) <= 0.05
        assert r["expert_ffn"] % 128 == 0 and r["hidden"] % 512 == 0 and r["vocab"] % 128 == 0
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)


@pytest.mark.slow
def test_a_trillion_parameters_on_one_gpu_is_flagged_and_fits_when_spread():
    result = runner.invoke(app, ["design", "--total-b", "1000", "--active-b", "32", "--gpu", "h100"])
    assert result.exit_code == 5 and "weights" in result.output and "train" in result.output  # 5: breaks a rule
    assert "best candidate: error (rule 13 memory): bf16 weights need" in result.output
    assert "the best candidate breaks 1 rule(s)" in result.output
    flagged = runner.invoke(app, ["design", "--total-b", "1000", "--active-b", "32", "--json"])
    assert flagged.exit_code == 5
    rows = json.loads(flagged.stdout)
    for r in rows:
        assert r["weights_gb_per_gpu"] == pytest.approx(2 * r["total"] / 1e9) and r["gpu_memory_gb"] == 80
        assert any(w.startswith("error (rule 13 memory)") and "over the 80 GB" in w for w in r["warnings"])
    fits = runner.invoke(app, ["design", "--total-b", "1000", "--active-b", "32", "--tp", "8", "--ep", "32", "--json"])
    assert fits.exit_code == 0
    spread = json.loads(fits.output)
    assert spread and all(r["weights_gb_per_gpu"] < 80 for r in spread)
    assert not any(w.startswith("error (rule 13") for r in spread for w in r["warnings"])


@pytest.mark.parametrize("args, message", [
    (["--validate", "--total-b", "3"], "takes no budget"),
    (["--total-b", "3", "--active-b", "1", "--scale-to-lab"], "give --write FILE too"),
    (["--total-b", "3", "--active-b", "1", "--vocab", "0"], "--vocab 0: must be at least 1"),
    (["--total-b", "3", "--active-b", "1", "--layers-min", "50", "--layers-max", "40"], "--layers-min 50"),
])
def test_contradictory_or_out_of_range_options_exit_2(args, message):
    result = runner.invoke(app, ["design", *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_parallel_degrees_are_respected():
    result = runner.invoke(app, ["design", "--total-b", "200", "--active-b", "12", "--tp", "8", "--ep", "16",
                                 "--json", "--top", "5"])
    rows = json.loads(result.output)
    assert rows and all(r["n_experts"] % 16 == 0 and r["heads"] % 8 == 0 for r in rows)


@pytest.mark.parametrize("args, message", [
    (["--total-b", "10", "--active-b", "20"], "exceeds --total-b"),
    (["--total-b", "0", "--active-b", "1"], "--total-b 0"),
    (["--total-b", "100", "--active-b", "-3"], "--active-b -3"),
    (["--total-b", "100", "--active-b", "10", "--gpu", "tpu9"], "unknown hardware"),
    (["--active-b", "10"], "give --total-b"),
])
def test_bad_budgets_exit_2(args, message):
    result = runner.invoke(app, ["design", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_write_scaled_to_lab_gives_a_trainable_config(tmp_path):
    path = tmp_path / "lab.toml"
    spread = ["--tp", "8", "--ep", "32"]  # a trillion parameters fit on 256 GPUs, not on one
    result = runner.invoke(app, ["design", "--total-b", "1000", "--active-b", "32", *spread, "--write", str(path),
                                 "--scale-to-lab", "--json", "--top", "1"])
    assert result.exit_code == 0, result.output
    best = json.loads(result.output)[0]
    cfg = load_config(path)
    assert (cfg.model.moe.n_experts, cfg.model.moe.top_k, cfg.model.moe.n_shared_experts) == \
        (best["n_experts"], best["top_k"], best["n_shared"])
    full = tmp_path / "full.toml"
    assert runner.invoke(app, ["design", "--total-b", "1000", "--active-b", "32", *spread,
                               "--write", str(full)]).exit_code == 0
    assert "[architecture]" in full.read_text()


def test_validate_prints_every_golden_model():
    result = runner.invoke(app, ["design", "--validate"])
    assert result.exit_code == 0
    for name in ("DeepSeek-V3", "Kimi K2", "Qwen3-30B-A3B", "gpt-oss-120b", "OLMoE-1B-7B"):
        assert name in result.output
