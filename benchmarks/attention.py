"""Causal attention on short sequences: PyTorch's scaled_dot_product_attention against moelab's
explicit path (scores, mask, softmax, weighted sum), forward + backward, interleaved, one thread.

    python benchmarks/attention.py [--json]

Prints, per sequence length, milliseconds of each and their ratio; the outputs and gradients are
checked equal first. Written to test whether short lab sequences (24 tokens) would train faster
without the CPU flash kernel: they would not (see the README), so moelab keeps
scaled_dot_product_attention.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from moelab.provenance import cpu_model


def explicit_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_h) + causal mask) v for q, k, v [B, H, S, d_h], in plain ops."""
    S = q.shape[-2]
    scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    future = torch.ones(S, S, dtype=torch.bool, device=q.device).triu_(1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1) @ v


def timed(fn, q, k, v, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        y = fn(q, k, v)
        y.sum().backward()
    return (time.perf_counter() - start) / repeats * 1000


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for seq in (8, 16, 24, 32, 48, 64, 96, 128, 256):
        shape = (args.batch, args.heads, seq, args.head_dim)
        q, k, v = (torch.randn(shape, requires_grad=True) for _ in range(3))
        y_ref, y_ours = sdpa(q, k, v), explicit_causal_attention(q, k, v)
        torch.testing.assert_close(y_ours, y_ref, rtol=1e-5, atol=1e-5)
        grads = [torch.autograd.grad(f(q, k, v).square().sum(), (q, k, v)) for f in (sdpa, explicit_causal_attention)]
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        repeats = max(5, int(20_000 / seq))
        times = {"sdpa": [], "explicit": []}
        for _ in range(args.rounds):  # interleaved, so drifts in machine speed hit both
            times["sdpa"].append(timed(sdpa, q, k, v, repeats))
            times["explicit"].append(timed(explicit_causal_attention, q, k, v, repeats))
        best = {name: min(t) for name, t in times.items()}
        rows.append({"seq": seq, "sdpa_ms": best["sdpa"], "explicit_ms": best["explicit"],
                     "explicit_vs_sdpa": best["explicit"] / best["sdpa"]})
    if args.json:
        print(json.dumps({"cpu": cpu_model(), "torch": torch.__version__, "rows": rows}, indent=2))
        return
    print(f"{cpu_model()}, torch {torch.__version__}, 1 thread, B={args.batch} H={args.heads} d_h={args.head_dim}")
    print(f"{'seq':>5} {'sdpa ms':>9} {'explicit ms':>12} {'explicit / sdpa':>16}")
    for r in rows:
        print(f"{r['seq']:>5} {r['sdpa_ms']:>9.3f} {r['explicit_ms']:>12.3f} {r['explicit_vs_sdpa']:>16.2f}")


if __name__ == "__main__":
    main()
