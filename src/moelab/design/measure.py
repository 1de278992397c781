"""Measured GEMM throughput of a candidate's expert and attention shapes on this machine.

A benchmark, not a model: it times `torch.matmul` at the candidate's shapes (bf16 on CUDA, fp32 on
CPU) with a warm-up and a few repetitions, so candidates can be compared side by side in one run.
"""

from __future__ import annotations

import time

import torch

from moelab.design.search import Candidate


def gemm_tflops(m: int, k: int, n: int, device: torch.device, reps: int = 3) -> float:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    torch.matmul(a, b)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        torch.matmul(a, b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * m * k * n * reps / (time.perf_counter() - start) / 1e12


def measure(candidates: list[Candidate], tokens_per_step: int, device: torch.device) -> None:
    """Set each candidate's measured_tflops: the mean of its expert up-projection GEMM (tokens per
    expert x hidden x expert_ffn) and its attention query projection (tokens x hidden x heads*d)."""
    rows_cap = 4096 if device.type == "cuda" else 128  # keep a CPU run under a minute
    for c in candidates:
        a = c.arch
        per_expert = max(1, min(rows_cap, tokens_per_step * a.top_k // a.n_experts))
        expert = gemm_tflops(per_expert, a.hidden, a.expert_ffn, device)
        attention = gemm_tflops(min(rows_cap, tokens_per_step), a.hidden, a.attention.n_heads * 128, device)
        c.measured_tflops = (expert + attention) / 2
