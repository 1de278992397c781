"""A decoder-only language model: token embedding, pre-norm blocks (RoPE attention + dense or MoE
feed-forward, or a product-key memory in its place or beside it), final RMSNorm and an LM head,
optionally tied to the embedding.

Shapes: B batch, S sequence, d = d_model, H heads, d_h = d / H, V vocabulary.
Module names follow the Llama/Qwen3 layout (q_proj, k_proj, v_proj, o_proj; gate/up/down_proj)
so that checkpoints map onto Hugging Face architectures.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from moelab.config import ModelConfig
from moelab.models.memory import MemoryLayer, memory_layer
from moelab.models.mlp import MLP, initialise
from moelab.models.moe import Experts, MoE, Router


def rope_tables(seq_len: int, head_dim: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [S, d_h] for rotary embeddings (non-interleaved halves, as in Llama/Qwen)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)
    angles = torch.outer(torch.arange(seq_len, device=device).float(), inv_freq)  # [S, d_h/2]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, S, d_h] rotated by position."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


INIT_STD = 0.02

class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.n_heads, self.head_dim = cfg.n_heads, d // cfg.n_heads
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim) if cfg.qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim) if cfg.qk_norm else None
        initialise(self)

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02, out_std: float = 0.02) -> None:
        """q, k, v projections N(0, std), the output projection N(0, out_std), norms to ones."""
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.normal_(proj.weight, std=std)
        nn.init.normal_(self.o_proj.weight, std=out_std)
        for norm in (self.q_norm, self.k_norm):
            if norm is not None:
                norm.reset_parameters()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, S, d = x.shape
        q, k, v = (proj(x).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))  # [B, H, S, d_h]
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, S, d))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, vocab_size: int = 0):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.d_model)
        moe_layer = cfg.is_moe and layer >= cfg.moe.first_dense_layers
        self.ffn: MoE | MLP | None = None
        if layer in cfg.ffn_layers():
            self.ffn = MoE(cfg, vocab_size) if moe_layer else MLP(cfg.d_model, cfg.d_ff, cfg.mlp)
        self.memory = memory_layer(cfg.d_model, cfg.memory) if layer in cfg.memory_layers() else None
        self.added_experts: MoE | None = None  # a routed group added for continued training (add_experts)
        self.added_memory: MemoryLayer | None = None  # a memory added beside for continued training (add_memory)

    def reset_parameters(self, std: float = 0.02, out_std: float = 0.02) -> None:
        self.attn_norm.reset_parameters()
        self.attn.reset_parameters(std, out_std)
        self.ffn_norm.reset_parameters()
        for part in (self.ffn, self.memory):
            if part is not None:
                part.reset_parameters(std, out_std)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        h = self.ffn_norm(x)
        aux = x.new_zeros(())
        if isinstance(self.ffn, MoE):
            x_ffn, aux = self.ffn(h, tokens)
            x = x + x_ffn
        elif self.ffn is not None:
            x = x + self.ffn(h)
        if self.memory is not None:
            x = x + self.memory(h)
        if self.added_experts is not None:
            x_added, added_aux = self.added_experts(h, tokens)
            x, aux = x + x_added, aux + added_aux
        if self.added_memory is not None:
            x = x + self.added_memory(h)
        return x, aux


class Transformer(nn.Module):
    """forward(tokens [B, S]) -> (logits [B, S, V], auxiliary balancing loss, a scalar)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg, self.vocab_size = cfg, vocab_size
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, i, vocab_size) for i in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self._rope_len = 0
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, INIT_STD), the projections that write into the residual
        stream (o_proj, down_proj, w_out, memory values and up vectors) at INIT_STD / sqrt(2L), norms to ones; drawn module by
        module in the order of `named_parameters`."""
        residual_std = INIT_STD / math.sqrt(2 * self.cfg.n_layers)
        nn.init.normal_(self.embed.weight, std=INIT_STD)
        for block in self.blocks:
            block.reset_parameters(INIT_STD, residual_std)
        self.norm.reset_parameters()
        if not self.cfg.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, std=INIT_STD)

    def _rope(self, seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        if seq_len > self._rope_len or self._cos.device != device:
            head_dim = self.cfg.d_model // self.cfg.n_heads
            self._cos, self._sin = rope_tables(max(seq_len, 64), head_dim, self.cfg.rope_theta, device)
            self._rope_len = max(seq_len, 64)
        return self._cos[:seq_len], self._sin[:seq_len]

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self._rope(tokens.shape[1], tokens.device)
        x = self.embed(tokens)
        aux = x.new_zeros(())
        for block in self.blocks:
            x, block_aux = block(x, cos, sin, tokens)
            aux = aux + block_aux
        return self.lm_head(self.norm(x)), aux

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, max_new_tokens: int,
                 stop: Callable[[torch.Tensor], bool] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy continuation of prompts `tokens` [B, P]: (tokens [B, P + n], the probability of
        each chosen token [B, n] in float64), n <= max_new_tokens; it ends early once
        `stop(new tokens [B, t])` is true. The one decoder of the lab (abstention, the probe)."""
        prompt = tokens.shape[1]
        chosen: list[torch.Tensor] = []
        for _ in range(max_new_tokens):
            logits, _ = self(tokens)
            step = logits[:, -1].float()
            best = step.argmax(-1, keepdim=True)
            chosen.append(step.softmax(-1).gather(-1, best).double())
            tokens = torch.cat([tokens, best], dim=1)
            if stop is not None and stop(tokens[:, prompt:]):
                break
        probabilities = torch.cat(chosen, dim=1) if chosen else tokens.new_zeros(len(tokens), 0, dtype=torch.float64)
        return tokens, probabilities

    @torch.no_grad()
    def add_experts(self, n_experts: int) -> None:
        """Give every MoE layer a second routed group of `n_experts` fresh experts of the layer's
        width with a router of its own (the router's new columns; top_k is taken within each
        group, so a token uses k old and k new experts). The new output projections start at
        zero, so the model computes exactly what it did until they train (docs/science.md §5)."""
        added = dataclasses.replace(self.cfg, moe=dataclasses.replace(self.cfg.moe, n_experts=n_experts,
                                                                      n_shared_experts=0))
        for block in self.blocks:
            if isinstance(block.ffn, MoE):
                group = MoE(added, self.vocab_size).to(block.ffn_norm.weight.device)
                group.reset_parameters(INIT_STD, INIT_STD)
                group.experts.w_out.zero_()
                block.added_experts = group

    @torch.no_grad()
    def add_memory(self) -> None:
        """Give every memory layer a fresh memory of the same kind and size beside it, its output
        table (PKM values, PEER up vectors) at zero, so the model computes exactly what it did
        until the new slots train (docs/science.md §5)."""
        for block in self.blocks:
            if block.memory is not None:
                memory = memory_layer(self.cfg.d_model, self.cfg.memory).to(block.ffn_norm.weight.device)
                memory.reset_parameters(INIT_STD, INIT_STD)
                memory.output_table().zero_()
                block.added_memory = memory

    def parameter_groups(self) -> dict[str, frozenset[str]]:
        """Each parameter's groups, by the module that holds it (never by its name): "embeddings"
        (the token embedding and an untied head), "attention", "norms", "mlp" (dense feed-forward),
        "routers" (every router part), "experts" (routed and shared experts), "memory" (memory slot
        tables; their queries and sub-keys are "memory_retrieval"), and "new" for everything added
        for continued training. The one answer the optimizer's learning-rate multipliers, freezing,
        quantization and export use."""
        groups: dict[str, frozenset[str]] = {}
        tables = {id(t) for layer in self.memory_modules() for t in layer.tables()}

        def visit(module: nn.Module, prefix: str, inherited: frozenset[str]) -> None:
            own = inherited | {group for kind, group in MODULE_GROUPS if isinstance(module, kind)}
            if "moe" in inherited and isinstance(module, MLP):
                own = own - {"mlp"} | {"experts"}  # a MoE's shared experts
            for name, p in module.named_parameters(recurse=False):
                extra = {"memory"} if id(p) in tables else {"memory_retrieval"} if "memory_layer" in own else set()
                groups.setdefault(prefix + name, frozenset(own - {"memory_layer", "moe"} | extra))
            for name, child in module.named_children():
                added = {"new"} if name in ("added_experts", "added_memory") else set()
                visit(child, f"{prefix}{name}.", own | added)

        visit(self, "", frozenset())
        groups["embed.weight"] = groups["lm_head.weight"] = frozenset({"embeddings"})  # tied or not
        return groups

    def routers(self) -> list[Router]:
        return [m for m in self.modules() if isinstance(m, Router)]

    def after_optimizer_step(self) -> None:
        """Auxiliary-loss-free bias update from this step's loads, then clear the step's stats."""
        for router in self.routers():
            trainable = router.gate is not None and router.gate.weight.requires_grad
            if router.cfg.bias_update_rate and trainable and not router.is_frozen():  # a frozen router stays as it is
                router.update_bias()
            router.reset_stats()

    def freeze_routing(self) -> None:
        """Freeze the routing of every router that freezes part way (model.moe.freeze_fraction)."""
        for router in self.routers():
            if router.cfg.freeze_fraction > 0:
                router.freeze()

    def memory_modules(self) -> list[MemoryLayer]:
        return [m for m in self.modules() if isinstance(m, MemoryLayer)]

    def routed_expert_modules(self) -> list[Experts]:
        return [m for m in self.modules() if isinstance(m, Experts)]


# The group a module's own parameters belong to (Transformer.parameter_groups); the token embedding
# and the output head are named there (a memory table or a token router may be an nn.Embedding too).
MODULE_GROUPS = ((Attention, "attention"), (nn.RMSNorm, "norms"),
                 (MLP, "mlp"), (Router, "routers"), (Experts, "experts"), (MemoryLayer, "memory_layer"),
                 (MoE, "moe"))
