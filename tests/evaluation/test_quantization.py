import json
import shutil

import pytest
import torch

from moelab.evaluation.quantization import quantize_model, quantize_tensor, quantized_capacity
from moelab.runs.weights import load_run


def test_round_to_nearest_per_channel():
    w = torch.tensor([[1.0, -0.5, 0.26], [0.0, 0.0, 0.0], [10.0, 3.0, -7.0]])
    q = quantize_tensor(w, bits=4, reduce_dim=-1)  # levels -7..7, scale = row max / 7
    scale = torch.tensor([[1 / 7], [1.0], [10 / 7]])
    assert torch.allclose(q / scale, (q / scale).round(), atol=1e-5)  # on each row's grid
    assert (q[1] == 0).all() and q[0, 0] == 1.0 and q[2, 0] == 10.0  # the extreme maps exactly
    assert ((q - w).abs() <= scale / 2 + 1e-6).all()
    assert torch.equal(quantize_tensor(w, 8, -2)[:, 0], quantize_tensor(w.T, 8, -1)[0])  # the axis matters


def test_quantized_copy_leaves_the_model_and_norms_alone(trained_run):
    _, run_dir, metrics = trained_run
    _, kb, model = load_run(run_dir)
    before = {n: p.clone() for n, p in model.named_parameters()}
    q = quantize_model(model, 4)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    for name, p in q.named_parameters():
        assert torch.equal(p, before[name]) == (p.dim() < 2), name
    rows = quantized_capacity(model, kb, [16, 8, 2], batch_size=256, device=torch.device("cpu"))
    assert abs(rows[0]["bits"] - metrics["bits"]) < 1e-3 * abs(metrics["bits"]) + 1e-6  # fp32: the run's own bits
    assert abs(rows[1]["bits_vs_full_precision"] - 1) < 1e-3  # 16-bit rounding changes nothing that matters
    assert rows[3]["bits"] < rows[0]["bits"]  # 2-bit weights lose knowledge
    assert [r["embeddings_full_precision"] for r in rows] == [False] * 4 + [True] * 3
    kept = quantize_model(model, 4, keep_embeddings=True)
    assert torch.equal(kept.embed.weight, model.embed.weight)
    assert not torch.equal(kept.blocks[0].attn.q_proj.weight, model.blocks[0].attn.q_proj.weight)


def test_group_scales_follow_each_group_of_inputs():
    w = torch.tensor([[7.0, 3.0, 70.0, 30.0], [7.0, -7.0, 0.1, 0.0]])
    q = quantize_tensor(w, bits=4, reduce_dim=-1, group_size=2)
    assert torch.allclose(q[0], w[0])  # each pair has its own scale (1 and 10): all on their grids
    assert torch.allclose(q[1, 2:], torch.tensor([0.1, 0.0]))
    assert torch.equal(quantize_tensor(w, 4, -1, group_size=4), quantize_tensor(w, 4, -1))  # one group = per channel
    coarse = quantize_tensor(w, 4, -1)
    assert coarse[0, 0] == 10 and coarse[0, 1] == 0  # per channel, 70 sets the scale (10) for all four
    stacked = torch.randn(3, 8, 5)  # expert stacks [E, in, out]: groups run along the input axis
    assert torch.equal(quantize_tensor(stacked, 4, -2, 4)[1], quantize_tensor(stacked[1].T, 4, -1, 4).T)
    with pytest.raises(ValueError, match="does not divide"):
        quantize_tensor(w, 4, -1, group_size=3)


def test_quantize_command_with_groups(trained_run, tmp_path):
    from typer.testing import CliRunner

    from moelab.cli import app

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[1], run_dir)  # the shared run folder stays as the run left it
    result = CliRunner().invoke(app, ["quantize", str(run_dir), "--bits", "4", "--group-size", "8"])
    assert result.exit_code == 0, result.output
    rows = json.loads((run_dir / "quantization-g8.json").read_text())["rows"]
    assert [r["group_size"] for r in rows] == [None, 8, 8]
    bad = CliRunner().invoke(app, ["quantize", str(run_dir), "--group-size", "7"])
    assert bad.exit_code == 2 and "does not divide" in bad.output


def test_a_second_quantize_keeps_the_widths_of_the_first(trained_run, tmp_path):
    from typer.testing import CliRunner

    from moelab.cli import app

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[1], run_dir)
    for bits in ("8", "4", "8"):
        assert CliRunner().invoke(app, ["quantize", str(run_dir), "--bits", bits]).exit_code == 0
    rows = json.loads((run_dir / "quantization.json").read_text())["rows"]
    assert [(r["weight_bits"], r["embeddings_full_precision"]) for r in rows] == [
        (32, False), (8, False), (4, False), (8, True), (4, True)]  # 8 measured again replaced, not duplicated
