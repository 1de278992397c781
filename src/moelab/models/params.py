"""Exact parameter accounting from a config alone (docs/science.md §1), shared by the lab and reports.

    P_total  = every trainable parameter, tied weights once
    P_active = P_total - sum over MoE layers of (E - k) * params_per_routed_expert
               - sum over memory layers of (the slot tables - the H k slots read per token)
A memory layer's active parameters are those a token reads: its query projection and norm, every
sub-key (all 2 n of each head are scored) and the H k rows it reads of its tables ([N, d] values for
PKM; [N, d] down and up vectors for PEER), capped at the tables' size.
Embedding parameters are the input embedding plus an untied LM head; "non-embedding" excludes both.
The knowledge bases keep only tokens that occur, so no embedding row is unused.
Buffers (RoPE tables, the auxiliary-loss-free bias) are not parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch.nn as nn

from moelab.config import ModelConfig, MoEConfig


@dataclass(frozen=True)
class ParamCount:
    input_embedding: int  # the token embedding table
    embedding: int  # input embedding + untied LM head
    attention: int  # q, k, v, o projections (+ q/k norms)
    norms: int  # RMSNorm weights of blocks and the final norm
    dense_mlp: int  # dense feed-forward layers
    router: int
    routed_experts: int  # all routed experts, all layers
    routed_experts_active: int  # the k of E routed experts each token uses
    shared_experts: int
    memory: int = 0  # memory layers: retrieval (queries, sub-keys) and slot tables, all layers
    memory_active: int = 0  # their retrieval and the slot rows a token reads

    @property
    def total(self) -> int:
        return (self.embedding + self.attention + self.norms + self.dense_mlp + self.router
                + self.routed_experts + self.shared_experts + self.memory)

    @property
    def active(self) -> int:
        return self.total - self.routed_experts + self.routed_experts_active - self.memory + self.memory_active

    @property
    def total_nonembedding(self) -> int:
        return self.total - self.embedding

    @property
    def active_nonembedding(self) -> int:
        return self.active - self.embedding

    @property
    def active_without_input_embedding(self) -> int:
        """Active parameters less the input embedding (a lookup, no FLOPs): how gpt-oss reports."""
        return self.active - self.input_embedding

    def as_dict(self) -> dict[str, int]:
        return asdict(self) | {
            "total": self.total, "active": self.active,
            "active_without_input_embedding": self.active_without_input_embedding,
            "total_nonembedding": self.total_nonembedding,
            "active_nonembedding": self.active_nonembedding,
        }


@dataclass(frozen=True)
class AttentionSpec:
    """Attention of one layer. kind: 'mha', 'gqa' or 'mla' (DeepSeek's multi-head latent attention).

    qk_norm: 'none', 'head' (RMSNorm over each head's d_head, shared across heads: Qwen3, the lab)
    or 'full' (RMSNorm over all of q and all of k: OLMoE). bias: q/k/v/o biases (gpt-oss).
    sinks: one learned sink logit per head (gpt-oss). sliding_layers of the layers attend within
    sliding_window tokens (their KV cache is capped there).
    """

    kind: str
    n_heads: int
    head_dim: int = 0  # MHA/GQA
    n_kv_heads: int = 0  # GQA; MHA uses n_heads
    qk_norm: str = "none"
    bias: bool = False
    sinks: bool = False
    q_lora: int = 0  # MLA ranks and head dims
    kv_lora: int = 0
    d_nope: int = 0
    d_rope: int = 0
    d_v: int = 0
    sliding_window: int = 0
    sliding_layers: int = 0

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.kind == "mha" else self.n_kv_heads

    def params(self, h: int) -> int:
        H = self.n_heads
        if self.kind == "mla":
            qk = self.d_nope + self.d_rope
            q = (h * self.q_lora + self.q_lora + self.q_lora * H * qk) if self.q_lora else h * H * qk
            kv = h * (self.kv_lora + self.d_rope) + self.kv_lora + self.kv_lora * H * (self.d_nope + self.d_v)
            return q + kv + H * self.d_v * h
        d, kv_heads = self.head_dim, self.kv_heads
        n = h * H * d + 2 * h * kv_heads * d + H * d * h
        if self.bias:
            n += H * d + 2 * kv_heads * d + h
        if self.qk_norm == "head":
            n += 2 * d
        elif self.qk_norm == "full":
            n += H * d + kv_heads * d
        if self.sinks:
            n += H
        return n


@dataclass(frozen=True)
class Architecture:
    """A decoder LM at the level of detail accounting needs (published models and lab models).

    Layers are pre-norm blocks with two RMSNorms; the first `first_dense_layers` use a dense FFN of
    width dense_ffn, the rest (when n_experts > 0) route each token to top_k of n_experts experts of
    width expert_ffn plus n_shared always-on experts of width shared_ffn (default expert_ffn).
    """

    name: str
    hidden: int
    layers: int
    vocab: int
    attention: AttentionSpec
    tie_embeddings: bool = False
    mlp: str = "swiglu"
    dense_ffn: int = 0
    first_dense_layers: int = 0
    n_experts: int = 0
    top_k: int = 0
    expert_ffn: int = 0
    n_shared: int = 0
    shared_ffn: int = 0
    router_bias: bool = False  # a per-expert bias in the router (gpt-oss; DeepSeek's correction bias)
    hash_routing: bool = False  # experts chosen by a fixed hash of the token id: no router parameters
    router_params: int | None = None  # per MoE layer, where the router is not one linear layer (lab_router_params)
    expert_bias: bool = False  # biases in the expert projections (gpt-oss)
    memory: str = "none"  # "pkm" or "peer" memory layers (models/memory.py)
    memory_layers: int = 0
    memory_replaces_ffn: bool = True  # False: the memory sits beside the layer's dense FFN
    memory_n_keys: int = 0  # sub-keys per half: N = n_keys ** 2 slots
    memory_heads: int = 0
    memory_top_k: int = 0
    memory_key_dim: int = 0

    @property
    def moe_layers(self) -> int:
        return self.layers - self.first_dense_layers if self.n_experts else 0

    @property
    def dense_layers(self) -> int:
        replaced = self.memory_layers if self.memory_replaces_ffn else 0
        return self.layers - self.moe_layers - replaced

    def memory_params(self) -> tuple[int, int]:
        """(total, active) of one memory layer: the query projection and its per-head norm and the
        2 n sub-keys of each head, all active; then the slot tables, of which H k rows are read."""
        if self.memory == "none":
            return 0, 0
        d, H, c, n = self.hidden, self.memory_heads, self.memory_key_dim, self.memory_n_keys
        retrieval = d * H * c + c + H * 2 * n * (c // 2)
        row = d * (2 if self.memory == "peer" else 1)  # a PKM value row; a PEER down and up vector
        slots = n * n
        return retrieval + slots * row, retrieval + min(H * self.memory_top_k, slots) * row

    def expert_params(self) -> int:
        """One routed expert."""
        n = mlp_params(self.hidden, self.expert_ffn, self.mlp)
        if self.expert_bias:
            n += (2 if self.mlp == "swiglu" else 1) * self.expert_ffn + self.hidden
        return n


def mlp_params(d_model: int, width: int, mlp: str) -> int:
    """One feed-forward of hidden `width`: 2 d w (GELU) or 3 d w (SwiGLU), no biases."""
    return (3 if mlp == "swiglu" else 2) * d_model * width


def count_architecture(arch: Architecture) -> ParamCount:
    """Exact parameter counts of an architecture; the one accounting function of moelab."""
    h, L = arch.hidden, arch.layers
    n_moe = arch.moe_layers
    per_expert = arch.expert_params() if n_moe else 0
    shared_width = arch.shared_ffn or arch.expert_ffn
    memory_total, memory_active = arch.memory_params()
    return ParamCount(
        input_embedding=arch.vocab * h,
        embedding=arch.vocab * h * (1 if arch.tie_embeddings else 2),
        attention=L * arch.attention.params(h),
        norms=(2 * L + 1) * h,
        dense_mlp=arch.dense_layers * mlp_params(h, arch.dense_ffn, arch.mlp),
        router=n_moe * arch.router_params if arch.router_params is not None else
        0 if arch.hash_routing else n_moe * (h * arch.n_experts + (arch.n_experts if arch.router_bias else 0)),
        routed_experts=n_moe * arch.n_experts * per_expert,
        routed_experts_active=n_moe * arch.top_k * per_expert,
        shared_experts=n_moe * arch.n_shared * mlp_params(h, shared_width, arch.mlp),
        memory=arch.memory_layers * memory_total,
        memory_active=arch.memory_layers * memory_active,
    )


def lab_router_params(moe: MoEConfig, d_model: int, vocab_size: int, n_experts: int | None = None) -> int:
    """One lab router's parameters (models/moe.py, Router), all read by every token: a linear
    router d E; a token router V r + r E; X-MoE's cosine router d r + E r and a temperature;
    StableMoE's both a linear router and a token router; hash routing none."""
    E, r = moe.n_experts if n_experts is None else n_experts, moe.router_dim
    linear, token = d_model * E, vocab_size * r + r * E
    return {"learned": linear, "hash": 0, "hash_gated": linear, "token": token,
            "cosine": d_model * r + E * r + 1, "stable": linear + token}[moe.router]


def lab_architecture(cfg: ModelConfig, vocab_size: int) -> Architecture:
    """The `Transformer` that `cfg` builds, described for accounting."""
    moe = cfg.moe
    return Architecture(
        name="lab", hidden=cfg.d_model, layers=cfg.n_layers, vocab=vocab_size,
        attention=AttentionSpec("mha", cfg.n_heads, head_dim=cfg.d_model // cfg.n_heads,
                                qk_norm="head" if cfg.qk_norm else "none"),
        tie_embeddings=cfg.tie_embeddings, mlp=cfg.mlp, dense_ffn=cfg.d_ff,
        first_dense_layers=moe.first_dense_layers if cfg.is_moe else cfg.n_layers,
        n_experts=moe.n_experts, top_k=moe.top_k, expert_ffn=moe.expert_width,
        n_shared=moe.n_shared_experts, hash_routing=moe.router == "hash",
        router_params=lab_router_params(moe, cfg.d_model, vocab_size) if moe.router != "learned" else None,
        memory=cfg.memory.kind, memory_layers=len(cfg.memory_layers()),
        memory_replaces_ffn=cfg.memory.placement == "replace", memory_n_keys=cfg.memory.n_keys,
        memory_heads=cfg.memory.heads, memory_top_k=cfg.memory.top_k, memory_key_dim=cfg.memory.key_dim,
    )


def count_params(cfg: ModelConfig, vocab_size: int, added_experts: int = 0, added_memory: bool = False) -> ParamCount:
    """Exact counts for the `Transformer` that `cfg` and `vocab_size` describe; with
    `added_experts`, after `Transformer.add_experts`: each MoE layer's added group (its router
    columns and experts) counts like routed experts, k of them active; with `added_memory`,
    after `Transformer.add_memory`: every memory layer counts twice."""
    arch = lab_architecture(cfg, vocab_size)
    counts = count_architecture(arch)
    if added_memory:
        counts = replace(counts, memory=2 * counts.memory, memory_active=2 * counts.memory_active)
    if not added_experts:
        return counts
    layers, per_expert = arch.moe_layers, arch.expert_params()
    added_router = lab_router_params(cfg.moe, cfg.d_model, vocab_size, added_experts)
    return replace(counts, router=counts.router + layers * added_router,
                   routed_experts=counts.routed_experts + layers * added_experts * per_expert,
                   routed_experts_active=counts.routed_experts_active + layers * arch.top_k * per_expert)


def unused_expert_params(routed_expert_params: int, n_experts: int, top_k: int) -> int:
    """Of a layer's routed experts (all E of them, `routed_expert_params` in all), the parameters a
    token does not touch: the E - k experts it is not routed to."""
    return routed_expert_params * (n_experts - top_k) // n_experts


def count_module(model: nn.Module) -> tuple[int, int]:
    """(total, active) counted from an instantiated `Transformer`'s parameters, not its config."""
    total = sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once
    inactive = 0
    for experts in model.routed_expert_modules():
        inactive += unused_expert_params(sum(p.numel() for p in experts.parameters()), experts.w_in.shape[0],
                                         model.cfg.moe.top_k)
    for memory in model.memory_modules():
        slots, read = memory.cfg.slots, min(memory.cfg.heads * memory.cfg.top_k, memory.cfg.slots)
        inactive += sum(t.numel() for t in memory.tables()) * (slots - read) // slots
    return total, total - inactive


# ---------------------------------------------------------------------------------------------
# compute and memory (forward FLOPs per token, KV cache, training state)

TRAINING_BYTES_PER_PARAM = {  # weights + gradients + optimizer state, per parameter
    "bf16-mixed-adamw": 2 + 2 + 4 + 8,  # bf16 weights and grads, fp32 master copy, fp32 Adam m and v
    "fp32-adamw": 4 + 4 + 8,
}
WEIGHT_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}


def attended_tokens(arch: Architecture, context: int) -> float:
    """Keys each query attends to, summed over layers, for a query at the end of `context` tokens
    (sliding-window layers capped at their window)."""
    a = arch.attention
    full = arch.layers - a.sliding_layers
    return full * context + a.sliding_layers * min(context, a.sliding_window or context)


def forward_flops_per_token(arch: Architecture, context: int = 0, causal_average: bool = False) -> float:
    """2 x the parameters a token multiplies by (input embedding excluded: a lookup), plus the
    attention scores 2 H (d_qk + d_v) per attended key. With `causal_average`, a training sequence
    of `context` tokens: each query sees half the keys on average."""
    c = count_architecture(arch)
    matmul = 2 * (c.active - c.input_embedding - c.norms)
    if arch.tie_embeddings:
        matmul += 2 * arch.vocab * arch.hidden  # the tied head still multiplies
    a = arch.attention
    qk, v = (a.d_nope + a.d_rope, a.d_v) if a.kind == "mla" else (a.head_dim, a.head_dim)
    keys = attended_tokens(arch, context) * (0.5 if causal_average else 1.0)
    return matmul + 2 * a.n_heads * (qk + v) * keys


def training_flops_per_token(arch: Architecture, context: int, recompute: bool = False) -> float:
    """Forward + backward: 3x the forward (4x with full activation recomputation)."""
    return (4 if recompute else 3) * forward_flops_per_token(arch, context, causal_average=True)


def kv_cache_bytes_per_token(arch: Architecture, bytes_per_value: float = 2.0) -> float:
    """KV cache per token of context, all layers: 2 L H_kv d_head bytes for MHA/GQA (sliding-window
    layers hold at most a window, so a long context adds nothing to them), L (d_c + d_rope) bytes
    for MLA, which caches one latent per token (no factor 2)."""
    a = arch.attention
    if a.kind == "mla":
        return arch.layers * (a.kv_lora + a.d_rope) * bytes_per_value
    full_layers = arch.layers - a.sliding_layers
    return 2 * full_layers * a.kv_heads * a.head_dim * bytes_per_value


def params_per_gpu(counts: ParamCount, tp: int = 1, ep: int = 1) -> float:
    """Parameters each GPU holds when routed experts are split over ep x tp GPUs and every other
    parameter over the tp GPUs of a tensor-parallel group (no pipeline stages, no ZeRO sharding)."""
    return (counts.total - counts.routed_experts) / tp + counts.routed_experts / (tp * ep)


def memory_bytes(counts: ParamCount, weights: str = "bf16", training: str = "bf16-mixed-adamw",
                 tp: int = 1, ep: int = 1) -> dict[str, float]:
    """Bytes per GPU for the weights alone (inference, `weights` precision) and for training state
    (weights, gradients and optimizer moments), with the split of `params_per_gpu`."""
    params = params_per_gpu(counts, tp, ep)
    return {"weights": params * WEIGHT_BYTES[weights], "training_state": params * TRAINING_BYTES_PER_PARAM[training]}
