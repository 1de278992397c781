"""Routing diagnostics per MoE layer and slot usage per memory layer, measured on training text
with the trained model."""

from __future__ import annotations

import numpy as np
import torch

from moelab.knowledge import KnowledgeBase
from moelab.models import Transformer
from moelab.models.moe import MoE, hash_experts


@torch.no_grad()
def routing_diagnostics(model: Transformer, kb: KnowledgeBase, n_paragraphs: int, seed: int,
                        batch_size: int, device: torch.device) -> tuple[list[dict], list[dict]]:
    """(per MoE layer: load share per expert, max violation, dead experts, router entropy;
    per memory layer: slot usage, dead slots, usage entropy, read-weight entropy).

    Measured over `n_paragraphs` freshly rendered training paragraphs; both empty for dense models.
    """
    routers, memories = model.routers(), model.memory_modules()
    if not routers and not memories:
        return [], []
    model.eval()
    for layer in (*routers, *memories):
        layer.reset_stats()
    rng = np.random.default_rng(seed)
    people = rng.integers(0, kb.n_people, size=n_paragraphs)
    for start in range(0, n_paragraphs, batch_size):
        model(kb.training_batch(people[start:start + batch_size], rng).inputs.to(device))
    routing = [{"layer": i} | ({"group": "added"} if moe is block.added_experts else {}) | moe.router.diagnostics()
               for i, block in enumerate(model.blocks)
               for moe in (block.ffn, block.added_experts) if isinstance(moe, MoE)]
    memory = [{"layer": i, "kind": model.cfg.memory.kind} | ({"group": "added"} if m is block.added_memory else {})
              | m.diagnostics() for i, block in enumerate(model.blocks)
              for m in (block.memory, block.added_memory) if m is not None]
    for layer in (*routers, *memories):
        layer.reset_stats()
    return routing, memory


@torch.no_grad()
def top1_experts(model: Transformer, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Each MoE layer's first-choice expert for every token of `tokens` [B, S], as [B*S] tensors:
    the choice at evaluation (greedy, where training assigns by balanced assignment).

    It runs in eval mode, which never touches the loads the auxiliary-loss-free bias follows; the
    evaluation counters it moves are restored, and so is the training mode."""
    routers = model.routers()
    saved = [(r.eval_load.clone(), r.entropy_sum.clone(), r.tokens_seen.clone()) for r in routers]
    chosen: list[torch.Tensor] = []
    hooks = [r.register_forward_hook(lambda module, args, routing: chosen.append(routing.experts[:, 0].clone()))
             for r in routers]
    training = model.training
    model.eval()
    try:
        model(tokens)
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
        for r, (load, entropy, seen) in zip(routers, saved):
            r.eval_load.copy_(load)
            r.entropy_sum.copy_(entropy)
            r.tokens_seen.copy_(seen)
    return chosen


def fact_positions(kb: KnowledgeBase, n_facts: int, seed: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A fixed sample of `n_facts` (person, attribute) recall questions: their tokens [n, T] (the
    last one dropped, as the model reads them) and a mask [n, T] of the positions that predict a
    value token, where a fact is recalled. None for a knowledge base without recall questions."""
    probes = kb.probes() if hasattr(kb, "recall_span") else {}
    probe_name, _, span_name = getattr(kb, "recall_span", "").partition(".")
    if probe_name not in probes:
        return None
    probe = probes[probe_name]
    rows = np.random.default_rng([seed, 3]).permutation(len(probe.tokens))[:n_facts]
    rows.sort()
    return probe.tokens[rows, :-1], probe.spans[span_name][rows, 1:]


def scored_inputs(kb: KnowledgeBase) -> dict[str, torch.Tensor]:
    """Per probe ('name', 'value'), the input token id at every position the bit estimate scores
    (its loss spans, once per position), [n] int64. A router that sees only the token id (hash,
    token) sends each of those predictions to the expert of the token before it, whoever the
    fact is about."""
    probes, spans = kb.probes(), {}
    for name in kb.loss_spans:
        probe, _, span = name.partition(".")
        mask = probes[probe].spans[span][:, 1:]
        spans[probe] = mask if probe not in spans else spans[probe] | mask
    return {probe: probes[probe].tokens[:, :-1][mask] for probe, mask in spans.items()}


def token_id_reach(kb: KnowledgeBase, n_experts: int) -> dict[str, dict[str, float]]:
    """Per probe, where routing by token id can put the knowledge base's facts among `n_experts`:
    the distinct input tokens at scored positions (`contexts`: the most experts any token-id
    router can give those facts), the experts hash routing sends them to, and the share of the
    scored positions that the busiest of those experts takes."""
    out = {}
    for probe, inputs in scored_inputs(kb).items():
        counts = torch.bincount(hash_experts(inputs, n_experts)[:, 0], minlength=n_experts)
        out[probe] = {"contexts": int(inputs.unique().numel()), "hash_experts": int((counts > 0).sum()),
                      "hash_largest_share": float(counts.max() / counts.sum())}
    return out


@torch.no_grad()
def fact_routing(model: Transformer, kb: KnowledgeBase, batch_size: int, device: torch.device) -> list[dict]:
    """Per MoE layer, how the trained model routes the predictions of the knowledge base's recall
    values (every row of the recall probe, its scored positions), at evaluation:
        token_determinism  the share of those predictions sent to the expert their input token is
                           sent to most often; 1 for any router that sees only the token id, lower
                           where the router splits one context's facts by person
        experts_used       the experts that receive any of them
        effective_experts  exp(entropy) of their spread over experts
    Empty for a model without routers or a knowledge base without recall questions."""
    probe_name, _, span = getattr(kb, "recall_span", "").partition(".")
    probes = kb.probes() if probe_name else {}
    if not model.routers() or probe_name not in probes:
        return []
    probe = probes[probe_name]
    tokens, mask = probe.tokens[:, :-1], probe.spans[span][:, 1:]
    chosen: list[list[torch.Tensor]] = []
    for start in range(0, len(tokens), batch_size):
        rows = tokens[start:start + batch_size]
        experts = top1_experts(model, rows.to(device))
        chosen.append([e.cpu().view(rows.shape)[mask[start:start + batch_size]] for e in experts])
    inputs = tokens[mask]
    out = []
    for layer in zip(*chosen):
        experts = torch.cat(layer)
        n_experts = int(experts.max()) + 1
        by_token = torch.zeros(int(inputs.max()) + 1, n_experts, dtype=torch.long)
        by_token.index_put_((inputs, experts), torch.ones_like(experts), accumulate=True)
        per_expert = by_token.sum(0)
        share = per_expert[per_expert > 0].double() / len(experts)
        out.append({"token_determinism": int(by_token.max(1).values.sum()) / len(experts),
                    "experts_used": int((per_expert > 0).sum()),
                    "effective_experts": float(torch.exp(-(share * share.log()).sum()))})
    return out


def routing_churn(before: list[torch.Tensor], after: list[torch.Tensor]) -> list[float]:
    """Per MoE layer, the share of probe tokens whose first-choice expert changed."""
    return [float((a != b).float().mean()) for a, b in zip(before, after)]
