"""Routing diagnostics per MoE layer, measured on training text with the trained model."""

from __future__ import annotations

import numpy as np
import torch

from moelab.knowledge import KnowledgeBase
from moelab.models import Transformer


@torch.no_grad()
def routing_diagnostics(model: Transformer, kb: KnowledgeBase, n_paragraphs: int, seed: int,
                        batch_size: int, device: torch.device) -> list[dict]:
    """Per MoE layer: load share per expert, max violation, dead experts, router entropy.

    Measured over `n_paragraphs` freshly rendered training paragraphs; empty for dense models.
    """
    routers = model.routers()
    if not routers:
        return []
    model.eval()
    for router in routers:
        router.reset_stats()
    rng = np.random.default_rng(seed)
    people = rng.integers(0, kb.n_people, size=n_paragraphs)
    for start in range(0, n_paragraphs, batch_size):
        model(kb.training_batch(people[start:start + batch_size], rng).inputs.to(device))
    first = model.cfg.moe.first_dense_layers
    out = [{"layer": first + i} | router.diagnostics() for i, router in enumerate(routers)]
    for router in routers:
        router.reset_stats()
    return out
