"""Candidate MoE configurations for a parameter budget: enumerate, size the experts to the budget,
check alignment, rank.

Search space: hidden sizes in multiples of 512, GQA attention with 128-wide heads and 8 KV heads
(or tp if larger), one dense first layer with a SwiGLU width near 8/3 h (a multiple of 128), routed
experts E in {32..512} that ep divides, top-k in {1..16}, 0 or 1 shared expert. For each shape the
expert width is solved from the total budget and rounded to a multiple of 128; a candidate is kept
when its exact total and active counts are both within `tolerance` of the budget, and its shape lies
where published MoE models do: expert width 0.25h to 4h (DeepSeek-V3 0.29h, Qwen3 0.375h, gpt-oss
1h, Mixtral 3.5h) and hidden / layers between 32 and 256 (Qwen3-30B-A3B 43, DeepSeek-V3 118).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from moelab.design.rules import Deployment, Finding, alignment_score, check, nearest_multiple, round_up
from moelab.errors import MoelabError
from moelab.models.params import (
    Architecture, AttentionSpec, ParamCount, count_architecture, kv_cache_bytes_per_token, memory_bytes,
    training_flops_per_token,
)

EXPERTS = (32, 64, 128, 160, 256, 384, 512)
EXPERT_WIDTH_RATIO = (0.25, 4.0)  # expert_ffn / hidden
ASPECT = (32, 256)  # hidden / layers
TOP_K = (1, 2, 4, 6, 8, 12, 16)


@dataclass
class Candidate:
    arch: Architecture
    counts: ParamCount
    findings: list[Finding]
    closeness: float  # |log total/budget| + |log active/budget|
    alignment: float
    measured_tflops: float | None = None

    @property
    def score(self) -> float:
        """Higher is better: alignment minus ten times the distance from the budget."""
        return self.alignment - 10 * self.closeness


def validate_budget(total_b: float, active_b: float) -> None:
    if not (math.isfinite(total_b) and total_b > 0):
        raise MoelabError(f"--total-b {total_b}: must be a positive number of billions")
    if not (math.isfinite(active_b) and active_b > 0):
        raise MoelabError(f"--active-b {active_b}: must be a positive number of billions")
    if active_b > total_b:
        raise MoelabError(f"--active-b {active_b} exceeds --total-b {total_b}: active parameters are a subset")


def build(hidden: int, layers: int, vocab: int, n_experts: int, top_k: int, shared: int, expert_ffn: int,
          kv_heads: int) -> Architecture:
    heads = hidden // 128
    return Architecture(
        name=f"h{hidden}-L{layers}-E{n_experts}-k{top_k}-s{shared}-f{expert_ffn}", hidden=hidden, layers=layers,
        vocab=vocab, attention=AttentionSpec("gqa", heads, head_dim=128, n_kv_heads=min(kv_heads, heads),
                                             qk_norm="head"),
        dense_ffn=nearest_multiple(8 * hidden / 3, 128), first_dense_layers=1, n_experts=n_experts,
        top_k=top_k, expert_ffn=expert_ffn, n_shared=shared)


def search(total_b: float, active_b: float, deployment: Deployment, vocab: int = 128_000,
           layers: tuple[int, int] = (24, 96), tolerance: float = 0.05, top: int = 10) -> list[Candidate]:
    validate_budget(total_b, active_b)
    if layers[0] < 2 or layers[1] < layers[0]:
        raise MoelabError(f"--layers-min/--layers-max {layers}: need 2 <= min <= max")
    total, active = total_b * 1e9, active_b * 1e9
    vocab = round_up(vocab, 128 * deployment.tp)
    kv_heads = max(8, deployment.tp)
    found: list[Candidate] = []
    for hidden in range(2048, 16384 + 1, 512):
        if hidden % (128 * deployment.tp):
            continue
        for n_layers in range(layers[0], layers[1] + 1, 2):
            if not ASPECT[0] <= hidden / n_layers <= ASPECT[1]:
                continue
            for n_experts in EXPERTS:
                if n_experts % deployment.ep:
                    continue
                for top_k in TOP_K:
                    if top_k >= n_experts:
                        continue
                    for shared in (0, 1):
                        base = count_architecture(build(hidden, n_layers, vocab, n_experts, top_k, shared, 0, kv_heads))
                        per_width = (n_layers - 1) * (n_experts + shared) * 3 * hidden  # params per unit of expert width
                        width = (total - base.total) / per_width
                        if width < 128:
                            continue
                        expert_ffn = nearest_multiple(width, 128)
                        if not EXPERT_WIDTH_RATIO[0] <= expert_ffn / hidden <= EXPERT_WIDTH_RATIO[1]:
                            continue
                        arch = build(hidden, n_layers, vocab, n_experts, top_k, shared, expert_ffn, kv_heads)
                        counts = count_architecture(arch)
                        if abs(counts.total / total - 1) > tolerance or abs(counts.active / active - 1) > tolerance:
                            continue
                        findings = check(arch, deployment)
                        alignment = alignment_score(findings)
                        if alignment == 0.0:
                            continue  # a kernel or framework would refuse it
                        closeness = abs(math.log(counts.total / total)) + abs(math.log(counts.active / active))
                        found.append(Candidate(arch, counts, findings, closeness, alignment))
    found.sort(key=lambda c: -c.score)
    return found[:top]


def candidate_row(c: Candidate, deployment: Deployment, context: int = 4096) -> dict:
    a = c.arch
    memory = memory_bytes(c.counts, tp=deployment.tp, ep=deployment.ep)
    return {
        "name": a.name, "hidden": a.hidden, "layers": a.layers, "heads": a.attention.n_heads,
        "kv_heads": a.attention.kv_heads, "vocab": a.vocab, "n_experts": a.n_experts, "top_k": a.top_k,
        "n_shared": a.n_shared, "expert_ffn": a.expert_ffn, "dense_ffn": a.dense_ffn,
        "first_dense_layers": a.first_dense_layers, "total": c.counts.total, "active": c.counts.active,
        "total_b": c.counts.total / 1e9, "active_b": c.counts.active / 1e9,
        "active_fraction": c.counts.active / c.counts.total,
        "train_flops_per_token": training_flops_per_token(a, context),
        "kv_bytes_per_token_bf16": kv_cache_bytes_per_token(a, 2.0),
        "kv_bytes_per_token_per_gpu_bf16": kv_cache_bytes_per_token(a, 2.0) / deployment.tp,
        "weights_gb_per_gpu": memory["weights"] / 1e9, "training_gb_per_gpu": memory["training_state"] / 1e9,
        "gpu_memory_gb": deployment.hardware.memory_gb,
        "alignment": c.alignment, "closeness": c.closeness, "score": c.score,
        "warnings": [f"{f.level} (rule {f.rule}): {f.message}; fix: {f.fix}" for f in c.findings],
        "measured_expert_gemm_tflops": c.measured_tflops,
    }


def search_candidates(total_b: float | None, active_b: float | None, gpu: str, tp: int, ep: int, vocab: int,
                      layers: tuple[int, int], tokens_per_step: int, top: int,
                      measure: bool = False) -> tuple[Deployment, list[Candidate]]:
    """`moelab design`: check the options, search, and (with `measure`) rank by GEMM throughput
    measured on this machine's best device."""
    from moelab.design.hardware import hardware

    if total_b is None or active_b is None:
        raise MoelabError("give --total-b and --active-b (or --validate)")
    if tp < 1 or ep < 1 or top < 1 or tokens_per_step < 1:
        raise MoelabError("--tp, --ep, --top and --tokens-per-step must be positive")
    deployment = Deployment(hardware(gpu), tp=tp, ep=ep, tokens_per_step=tokens_per_step)
    candidates = search(total_b, active_b, deployment, vocab, layers, top=top)
    if not candidates:
        raise MoelabError("no aligned candidate within 5% of both budgets; widen --layers-min/--layers-max "
                          "or relax --tp/--ep")
    if measure:
        from moelab.design.measure import measure as measure_gemms
        from moelab.distributed import resolve_device

        measure_gemms(candidates, tokens_per_step, resolve_device("auto"))
        candidates.sort(key=lambda c: -c.measured_tflops)
    return deployment, candidates


def candidate_rows(candidates: list[Candidate], deployment: Deployment) -> list[dict]:
    return [candidate_row(c, deployment) for c in candidates]
