"""Hardware alignment rules for MoE configurations. Each finding names its rule, says whether a
kernel or framework would refuse the shape (error) or it only costs speed (warn), and suggests a fix.

Rule numbers follow the design reference; sources: NVIDIA's GEMM performance guide (tile and wave
quantization, 16-byte / 128-byte alignment), Anthony et al. 2024 "The case for co-designing model
architectures with hardware" (vocab, head dim, tensor-parallel divisibility), MegaBlocks dMoE
(expert width % 128, expert-parallel divisibility), DeepSeek-V3 inference code (routing groups).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from moelab.design.hardware import Hardware
from moelab.models.params import Architecture, count_architecture, memory_bytes

TILE = 128  # the tile edge used for tile and padding checks (common CUTLASS/cuBLAS tile)
WAVE_TILES = (128, 256)  # output tile for wave quantization of grouped expert GEMMs


@dataclass(frozen=True)
class Finding:
    rule: str
    level: str  # "error" or "warn"
    message: str
    fix: str


@dataclass(frozen=True)
class Deployment:
    """How the architecture runs: parallelism, precision, hardware, tokens per step per GPU."""

    hardware: Hardware
    tp: int = 1
    ep: int = 1
    dtype_bytes: int = 2
    tokens_per_step: int = 8192
    n_group: int = 1
    topk_group: int = 1
    kernel: str = "megablocks"  # "megablocks" makes expert width % 128 an error


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def nearest_multiple(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def tile_efficiency(dim: int, tile: int = TILE) -> float:
    """Useful share of the tiles covering `dim`: dim / (ceil(dim / tile) * tile)."""
    return dim / round_up(dim, tile)


def wave_efficiency(m_per_group: list[int], n: int, sms: int) -> float:
    """Share of SM slots used by a grouped GEMM: C / (waves * SMs), C the output tiles."""
    tm, tn = WAVE_TILES
    tiles = sum(math.ceil(m / tm) * math.ceil(n / tn) for m in m_per_group if m)
    if tiles == 0 or sms == 0:
        return 1.0
    return tiles / (math.ceil(tiles / sms) * sms)


def check(arch: Architecture, d: Deployment) -> list[Finding]:
    f: list[Finding] = []
    a = arch.attention
    h, bytes_ = arch.hidden, d.dtype_bytes
    hw = d.hardware

    # 1. vocabulary rows
    if arch.vocab % 64:
        f.append(Finding("1 vocab", "warn", f"vocab {arch.vocab} is not a multiple of 64",
                         f"pad the embedding to {round_up(arch.vocab, 128)} rows (a multiple of 128)"))
    elif arch.vocab % 128:
        f.append(Finding("1 vocab", "warn", f"vocab {arch.vocab} is a multiple of 64 but not 128 "
                         "(FP8 128x128 blocks need 128)", f"pad to {round_up(arch.vocab, 128)}"))
    if arch.vocab % d.tp:
        f.append(Finding("1 vocab", "error", f"vocab {arch.vocab} does not split over tp={d.tp}",
                         f"pad to {round_up(arch.vocab, 128 * d.tp)}"))

    # 2. GEMM dimensions in bytes
    elements = max(1, hw.gemm_align_bytes // bytes_)
    dims = {"hidden": h, "vocab": arch.vocab}
    if arch.dense_layers and arch.dense_ffn:
        dims["dense_ffn"] = arch.dense_ffn
    if arch.moe_layers:
        dims["expert_ffn"] = arch.expert_ffn
    if a.kind != "mla":
        dims["heads x head_dim"] = a.n_heads * a.head_dim
    for name, dim in dims.items():
        if (dim * bytes_) % 16:
            f.append(Finding("2 gemm", "warn", f"{name} = {dim}: {dim * bytes_} bytes is not a multiple of 16",
                             f"use {round_up(dim, elements)}"))
        elif (dim * bytes_) % hw.gemm_align_bytes:
            f.append(Finding("2 gemm", "warn", f"{name} = {dim} is not a multiple of {elements} elements "
                             f"({hw.gemm_align_bytes} bytes) for {hw.name}", f"use {round_up(dim, elements)}"))

    # 3. head dimension
    if a.kind != "mla" and a.head_dim not in (64, 128, 256):
        f.append(Finding("3 head dim", "warn", f"head_dim {a.head_dim}: attention kernels are fastest at 64 or 128",
                         f"use {h // 128} heads of 128 or {h // 64} of 64" if h % 64 == 0 else "use head_dim 128"))

    # 4. tensor parallelism
    if h % d.tp:
        f.append(Finding("4 tp", "error", f"hidden {h} does not split over tp={d.tp}",
                         f"use hidden {round_up(h, 128 * d.tp)}"))
    if a.n_heads % d.tp:
        f.append(Finding("4 tp", "error", f"{a.n_heads} heads do not split over tp={d.tp}",
                         f"use a multiple of {d.tp} heads"))
    if a.kind == "gqa" and a.kv_heads % d.tp:
        f.append(Finding("4 tp", "warn", f"{a.kv_heads} KV heads do not split over tp={d.tp}: they must be "
                         "replicated", f"use a multiple of {d.tp} KV heads"))

    # 6. SwiGLU width
    if arch.mlp == "swiglu" and arch.dense_layers and arch.dense_ffn and arch.dense_ffn % 128:
        raw = " (the raw 8/3 h)" if abs(arch.dense_ffn - 8 * h / 3) < 1 else ""
        f.append(Finding("6 swiglu", "warn", f"dense SwiGLU width {arch.dense_ffn}{raw} is not a multiple of 128",
                         f"use {nearest_multiple(arch.dense_ffn, 128)} and benchmark its neighbours"))

    if arch.moe_layers:
        # 7. expert width
        if arch.expert_ffn % 128:
            level = "error" if d.kernel == "megablocks" else "warn"
            f.append(Finding("7 expert width", level, f"expert_ffn {arch.expert_ffn} is not a multiple of 128 "
                             "(MegaBlocks block-sparse kernels require it)",
                             f"use {max(128, arch.expert_ffn // 128 * 128)} or {round_up(arch.expert_ffn, 128)}"))
        # 8. expert parallelism
        if arch.n_experts % d.ep:
            f.append(Finding("8 ep", "error", f"{arch.n_experts} experts do not split over ep={d.ep}",
                             f"use {round_up(arch.n_experts, d.ep)} experts or an ep that divides {arch.n_experts}"))
        # 9. routing groups
        if arch.n_experts % d.n_group or d.topk_group > d.n_group:
            f.append(Finding("9 groups", "error", f"routing groups: {arch.n_experts} experts, n_group={d.n_group}, "
                             f"topk_group={d.topk_group}", "n_group must divide the experts and be >= topk_group"))
        # 10. padding waste at the expected load
        per_expert = d.tokens_per_step * arch.top_k / arch.n_experts
        waste = (round_up(math.ceil(per_expert), 128) - per_expert) / per_expert if per_expert else 1.0
        if waste > 0.5:
            f.append(Finding("10 padding", "warn", f"{per_expert:.0f} tokens per expert per step: padding to "
                             f"128-row blocks wastes {waste:.0%}",
                             f"raise tokens per step to >= {round_up(arch.n_experts * 128 // max(arch.top_k, 1), 1024)}"))
        # 11. tile quantization of the expert GEMM's N axis
        efficiency = tile_efficiency(arch.expert_ffn)
        if efficiency < 0.9:
            f.append(Finding("11 tiles", "warn", f"expert_ffn {arch.expert_ffn} fills {efficiency:.0%} of its "
                             f"{TILE}-wide tiles", f"use {round_up(arch.expert_ffn, TILE)}"))
        # 12. wave quantization of one EP rank's grouped expert GEMM
        if hw.sms:
            local = arch.n_experts // max(1, d.ep)
            m = [math.ceil(d.tokens_per_step * arch.top_k / arch.n_experts)] * local
            efficiency = wave_efficiency(m, arch.expert_ffn, hw.sms)
            tiles = sum(math.ceil(x / WAVE_TILES[0]) * math.ceil(arch.expert_ffn / WAVE_TILES[1]) for x in m)
            if tiles < hw.sms and efficiency < 0.5:
                f.append(Finding("12 waves", "warn", f"the expert GEMM makes {tiles} tiles for {hw.sms} SMs "
                                 f"({efficiency:.0%} of one wave)", "raise tokens per step or expert width"))

    # 13. memory: the weights must fit each GPU to serve, and weights, gradients and Adam state to train
    if hw.memory_gb:
        need = memory_bytes(count_architecture(arch), tp=d.tp, ep=d.ep)
        capacity = hw.memory_gb * 1e9
        layout = f"tp={d.tp} ep={d.ep}"
        if need["weights"] > capacity:
            f.append(Finding(MEMORY_RULE, "error", f"bf16 weights need {need['weights'] / 1e9:,.0f} GB per GPU with "
                             f"{layout}, over the {hw.memory_gb:g} GB of a {hw.name}",
                             f"raise tp/ep to at least {math.ceil(need['weights'] / capacity)}x the GPUs, or quantize"))
        elif need["training_state"] > capacity:
            f.append(Finding(MEMORY_RULE, "warn", f"training state (bf16 weights and gradients, fp32 master and Adam) "
                             f"needs {need['training_state'] / 1e9:,.0f} GB per GPU with {layout}, over "
                             f"{hw.memory_gb:g} GB", "shard the optimizer over data-parallel ranks (ZeRO/FSDP) "
                             "or raise tp/ep to train; serving fits"))
    return f


MEMORY_RULE = "13 memory"


def alignment_score(findings: list[Finding]) -> float:
    """1 for a clean design, minus 0.1 per warning; errors make it 0. Memory is not alignment: a
    shape that does not fit is flagged, and fits on more GPUs, so it does not count here."""
    shape = [x for x in findings if x.rule != MEMORY_RULE]
    if any(x.level == "error" for x in shape):
        return 0.0
    return max(0.0, 1.0 - 0.1 * len(shape))
