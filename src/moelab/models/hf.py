"""Export a lab checkpoint as a Hugging Face `transformers` model folder (Qwen3 / Qwen3-MoE layout).

A lab model maps exactly onto Qwen3 (dense) or Qwen3-MoE when it uses what those architectures
have: SwiGLU, RMSNorm, RoPE, per-head q/k RMSNorm (`model.qk_norm = true`), softmax top-k routing
with optional renormalisation, no shared experts and no auxiliary-loss-free bias. The export writes
config.json, model.safetensors and a word-level tokenizer for the synthetic vocabulary, so that
`AutoModelForCausalLM.from_pretrained(folder)` gives the same logits. transformers is an optional
extra (`pip install 'moelab[hf]'`), imported only here.
"""

from __future__ import annotations

import contextlib

from pathlib import Path

import torch

from moelab.config import RunConfig, require
from moelab.errors import MoelabError
from moelab.io import current_umask
from moelab.knowledge import KnowledgeBase
from moelab.models.transformer import Transformer

# torch.nn.RMSNorm with eps=None uses the dtype's machine epsilon; the export states it explicitly.
LAB_RMS_EPS = float(torch.finfo(torch.float32).eps)


REFUSED = "cannot export to Qwen3: "


def check_exportable(cfg: RunConfig, model: Transformer) -> None:
    m, moe = cfg.model, cfg.model.moe
    require(m.memory.kind == "none", REFUSED + f"model.memory.kind = {m.memory.kind!r}: transformers has no "
                                     "product-key memory layer; export works for dense and MoE models only")
    require(m.mlp == "swiglu", REFUSED + "model.mlp must be 'swiglu' (Qwen3 MLPs are gated SiLU)")
    require(m.qk_norm, REFUSED + "model.qk_norm must be true (Qwen3 always normalises queries and keys)")
    if m.is_moe:
        require(moe.score == "softmax", REFUSED + "model.moe.score must be 'softmax'")
        require(moe.router == "learned", REFUSED + f"model.moe.router = {moe.router!r}: Qwen3-MoE routes by one "
                                                   "linear router on the hidden state ('learned')")
        require(moe.gate == "score", REFUSED + "model.moe.gate = 'unit': Qwen3-MoE weights each expert by its score")
        require(moe.n_shared_experts == 0, REFUSED + "Qwen3-MoE has no shared experts; set model.moe.n_shared_experts = 0")
        biased = any(r.expert_bias.abs().sum() > 0 for r in model.routers())
        require(not biased, REFUSED + "the auxiliary-loss-free bias moved expert selection; Qwen3-MoE has no such bias")


def hf_config(cfg: RunConfig, vocab_size: int):
    """The transformers config describing the same network."""
    from transformers import Qwen3Config, Qwen3MoeConfig

    m, moe = cfg.model, cfg.model.moe
    common = dict(vocab_size=vocab_size, hidden_size=m.d_model, num_hidden_layers=m.n_layers,
                  num_attention_heads=m.n_heads, num_key_value_heads=m.n_heads, head_dim=m.d_model // m.n_heads,
                  intermediate_size=m.d_ff, hidden_act="silu", rms_norm_eps=LAB_RMS_EPS,
                  tie_word_embeddings=m.tie_embeddings, attention_bias=False,
                  rope_parameters={"rope_type": "default", "rope_theta": m.rope_theta},
                  max_position_embeddings=4096)
    if not m.is_moe:
        return Qwen3Config(**common)
    return Qwen3MoeConfig(**common, num_experts=moe.n_experts, num_experts_per_tok=moe.top_k,
                          moe_intermediate_size=moe.expert_width, norm_topk_prob=moe.renormalize,
                          decoder_sparse_step=1, mlp_only_layers=list(range(moe.first_dense_layers)),
                          output_router_logits=False)


def unmapped_parameters(model: Transformer, mapped: dict[str, torch.Tensor]) -> list[str]:
    """The model's parameters that no exported tensor reads (a view counts as reading its base)."""
    covered = {t.untyped_storage().data_ptr() for t in mapped.values()}
    return [name for name, p in model.named_parameters() if p.untyped_storage().data_ptr() not in covered]


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our parameters under Qwen3 names and layouts; refused, naming them, if any parameter would be left out."""
    out = {"model.embed_tokens.weight": model.embed.weight, "model.norm.weight": model.norm.weight}
    if not model.cfg.tie_embeddings:
        out["lm_head.weight"] = model.lm_head.weight
    for i, block in enumerate(model.blocks):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = block.attn_norm.weight
        out[p + "post_attention_layernorm.weight"] = block.ffn_norm.weight
        for name in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm"):
            out[p + f"self_attn.{name}.weight"] = getattr(block.attn, name).weight
        ffn = block.ffn
        if hasattr(ffn, "router"):
            out[p + "mlp.gate.weight"] = ffn.router.gate.weight
            e = ffn.experts  # ours: w_in [E, d, 2f] (gate | up), w_out [E, f, d]; theirs: [E, 2f, d], [E, d, f]
            out[p + "mlp.experts.gate_up_proj"] = e.w_in.transpose(1, 2)
            out[p + "mlp.experts.down_proj"] = e.w_out.transpose(1, 2)
        else:
            for name in ("gate_proj", "up_proj", "down_proj"):
                out[p + f"mlp.{name}.weight"] = getattr(ffn, name).weight
    left_out = unmapped_parameters(model, out)
    require(not left_out, REFUSED + f"no Qwen3 tensor holds {', '.join(left_out[:4])}"
            + (f" and {len(left_out) - 4} more" if len(left_out) > 4 else "")
            + " (experts or memory added by continued training have no place in Qwen3-MoE); export the parent run")
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def save_tokenizer(kb: KnowledgeBase, folder: Path) -> None:
    """A word-level tokenizer over the synthetic vocabulary (tokens are whitespace-separated)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(vocab=dict(kb.vocab.ids), unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>")
    fast.save_pretrained(folder)


def export_hf(cfg: RunConfig, kb: KnowledgeBase, model: Transformer, folder: str | Path) -> Path:
    """Write a transformers model folder for this lab model; returns the folder."""
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise MoelabError("export needs transformers: pip install 'moelab[hf]'") from None
    check_exportable(cfg, model)
    folder = Path(folder)
    config = hf_config(cfg, len(kb.vocab))
    config.bos_token_id, config.eos_token_id = kb.vocab.bos, kb.vocab.eos
    hf_model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = hf_model.load_state_dict(hf_state_dict(model), strict=False)
    missing = [k for k in missing if not (cfg.model.tie_embeddings and k == "lm_head.weight")]
    if missing or unexpected:  # a mapping bug, never the user's
        raise AssertionError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    if cfg.model.tie_embeddings:
        hf_model.tie_weights()
    with quiet_transformers():
        hf_model.save_pretrained(folder)
        save_tokenizer(kb, folder)
    mode = 0o666 & ~current_umask()  # transformers writes its weights 0600; give every file the usual mode
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(mode)
    return folder


@contextlib.contextmanager
def quiet_transformers():
    """Without transformers' own progress bars ("Writing model shards"), which would land in
    moelab's output."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
