import torch

from moelab.evaluation.quantization import quantize_model, quantize_tensor, quantized_capacity
from moelab.run import load_run


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
