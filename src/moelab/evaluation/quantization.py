"""Post-training quantization and the knowledge that survives it (Allen-Zhu & Li, Result 8:
int8 keeps a model's 2 bits per parameter; int4 loses much of it).

Round-to-nearest, symmetric, per output channel: each channel's weights are scaled so the largest
magnitude maps to the top integer level, rounded, and mapped back (fake quantization: the bits
are then measured with the same estimator as the full-precision model). With `group_size` G,
each channel's input weights get one scale per G consecutive weights instead (as int4 formats
such as GPTQ's and AWQ's do, with G = 32-128), at the cost of one more 16-bit scale per G
weights. Every weight matrix, expert stack and embedding is quantized; norm weights (vectors)
stay in full precision. A second pass keeps the token embedding (tied to the output head here)
in full precision, since deployments often do; "storage used" still divides by the quantized
width for every weight.
"""

from __future__ import annotations

import copy

import torch

from moelab.evaluation.capacity import measure_capacity
from moelab.knowledge import KnowledgeBase
from moelab.models import Transformer


def quantize_tensor(weight: torch.Tensor, bits: int, reduce_dim: int, group_size: int = 0) -> torch.Tensor:
    """`weight` rounded to signed `bits`-bit integers with one scale per slice along `reduce_dim`,
    or per `group_size` consecutive entries of it (0: the whole slice)."""
    levels = 2 ** (bits - 1) - 1  # symmetric: int8 -> [-127, 127], int4 -> [-7, 7]
    w = weight.movedim(reduce_dim, -1)
    width = w.shape[-1]
    group = group_size or width
    if width % group:
        raise ValueError(f"group_size = {group_size} does not divide a weight's input width {width}")
    w = w.reshape(*w.shape[:-1], width // group, group)
    scale = w.abs().amax(dim=-1, keepdim=True) / levels
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = (w / scale).round().clamp(-levels, levels) * scale
    return q.reshape(*q.shape[:-2], width).movedim(-1, reduce_dim)


def input_dim(groups: frozenset[str], weight: torch.Tensor) -> int:
    """The axis a channel's scale spans: nn.Linear weights are [out, in], expert stacks [E, in, out]
    (used as x @ w), embeddings [vocab, d] (one scale per token row)."""
    return -2 if "experts" in groups and weight.dim() == 3 else -1


def quantize_model(model: Transformer, bits: int, keep_embeddings: bool = False, group_size: int = 0) -> Transformer:
    """A copy of `model` with every weight of two or more dimensions quantized to `bits` bits
    (the token embedding, which ties to the output head, kept in full precision if asked), one
    scale per output channel or per `group_size` input weights."""
    if not 2 <= bits <= 16:
        raise ValueError(f"bits = {bits}: use 2 to 16")
    quantized = copy.deepcopy(model)
    groups = quantized.parameter_groups()
    with torch.no_grad():
        for name, p in quantized.named_parameters():
            if p.dim() >= 2 and not (keep_embeddings and "embeddings" in groups[name]):
                try:
                    p.copy_(quantize_tensor(p, bits, input_dim(groups[name], p), group_size))
                except ValueError as err:
                    raise ValueError(f"{name}: {err}") from None
    return quantized


def quantized_capacity(model: Transformer, kb: KnowledgeBase, bits_list: list[int], batch_size: int,
                       device: torch.device, group_size: int = 0) -> list[dict]:
    """Bits stored and recall at full precision, at each quantization width, and at each width
    with the embeddings kept in full precision. `storage_used` divides the bits stored by the
    weights' own bits (params x width), leaving out the scales."""
    params = sum(p.numel() for p in model.parameters())
    rows = []
    for bits, keep in [(32, False), *((b, False) for b in bits_list), *((b, True) for b in bits_list)]:
        m = model if bits == 32 else quantize_model(model, bits, keep, group_size)
        c = measure_capacity(m, kb, batch_size, device)
        rows.append({"weight_bits": bits, "group_size": group_size if bits < 32 else None,
                     "embeddings_full_precision": keep, "bits": c.bits,
                     "bits_per_param": c.bits / params, "storage_used": c.bits / (params * bits),
                     "accuracy": c.accuracy})
    for row in rows:
        row["bits_vs_full_precision"] = row["bits"] / rows[0]["bits"] if rows[0]["bits"] else None
    return rows
