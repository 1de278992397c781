"""Published MoE configurations, checked against their published parameter counts.

Configs from the models' own config files and reports (DeepSeek-V3 config_671B.json; Kimi K2
README model summary and config.json; Qwen3-30B-A3B config.json; gpt-oss ModelConfig defaults;
OLMoE-1B-7B-0924 config). Golden values are the counts the publishers give, with the definition
of "active" each one uses: DeepSeek and Kimi count every active weight including embeddings,
gpt-oss excludes the input embedding. DeepSeek-V3 is counted without its 14B multi-token-prediction
module (685B with it). Kimi K2's "1T" is rounded; its safetensors hold 1026.5B.
"""

from __future__ import annotations

from dataclasses import dataclass

from moelab.models.params import Architecture, AttentionSpec, count_architecture, kv_cache_bytes_per_token

_MLA = dict(q_lora=1536, kv_lora=512, d_nope=128, d_rope=64, d_v=128)

ARCHITECTURES = {
    "DeepSeek-V3": Architecture("DeepSeek-V3", 7168, 61, 129280, AttentionSpec("mla", 128, **_MLA),
                                dense_ffn=18432, first_dense_layers=3, n_experts=256, top_k=8,
                                expert_ffn=2048, n_shared=1, router_bias=True),
    "Kimi K2": Architecture("Kimi K2", 7168, 61, 163840, AttentionSpec("mla", 64, **_MLA),
                            dense_ffn=18432, first_dense_layers=1, n_experts=384, top_k=8,
                            expert_ffn=2048, n_shared=1, router_bias=True),
    "Qwen3-30B-A3B": Architecture("Qwen3-30B-A3B", 2048, 48, 151936,
                                  AttentionSpec("gqa", 32, head_dim=128, n_kv_heads=4, qk_norm="head"),
                                  n_experts=128, top_k=8, expert_ffn=768),
    "gpt-oss-120b": Architecture("gpt-oss-120b", 2880, 36, 201088,
                                 AttentionSpec("gqa", 64, head_dim=64, n_kv_heads=8, bias=True, sinks=True,
                                               sliding_window=128, sliding_layers=18),
                                 n_experts=128, top_k=4, expert_ffn=2880, router_bias=True, expert_bias=True),
    "OLMoE-1B-7B": Architecture("OLMoE-1B-7B", 2048, 16, 50304,
                                AttentionSpec("mha", 16, head_dim=128, qk_norm="full"),
                                n_experts=64, top_k=8, expert_ffn=1024),
}


@dataclass(frozen=True)
class Golden:
    name: str
    total_b: float
    active_b: float
    active_excludes_input_embedding: bool
    source: str


GOLDEN = [
    Golden("DeepSeek-V3", 671.0, 37.5, False, "DeepSeek-V3 README: 671B total, 37B activated (37.5B as counted)"),
    Golden("Kimi K2", 1026.4, 32.9, False, "Kimi K2 README '1T/32B'; safetensors count 1026.5B"),
    Golden("Qwen3-30B-A3B", 30.5, 3.35, False, "Qwen3 model card: 30.5B total, 3.3B activated"),
    Golden("gpt-oss-120b", 116.8, 5.13, True, "gpt-oss model card: 116.8B total, 5.1B active per token"),
    Golden("OLMoE-1B-7B", 6.92, 1.28, False, "OLMoE paper: 6.9B total, 1.3B active"),
]
KV_GOLDEN = {  # bf16 bytes per token, the design reference's arithmetic
   "Qwen3-30B-A3B": 98_304, "DeepSeek-V3": 70_272, "gpt-oss-120b": 36_864, "OLMoE-1B-7B": 131_072}


def validation_rows() -> list[dict]:
    """Computed against published counts, per model: relative errors and KV cache bytes/token."""
    rows = []
    for g in GOLDEN:
        arch = ARCHITECTURES[g.name]
        c = count_architecture(arch)
        active = c.active_without_input_embedding if g.active_excludes_input_embedding else c.active
        rows.append({
            "model": g.name, "total_b": c.total / 1e9, "published_total_b": g.total_b,
            "total_error": c.total / 1e9 / g.total_b - 1, "active_b": active / 1e9,
            "published_active_b": g.active_b, "active_error": active / 1e9 / g.active_b - 1,
            "kv_bytes_per_token_bf16": kv_cache_bytes_per_token(arch, 2.0),
            "reference_kv_bytes_per_token": KV_GOLDEN.get(g.name), "source": g.source,
        })
    return rows


def worst_error(rows: list[dict]) -> float:
    """The largest relative error of a total or active count against its published value."""
    return max(max(abs(r["total_error"]), abs(r["active_error"])) for r in rows)
