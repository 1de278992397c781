"""Knowledge stored, in bits (docs/science.md §3), and greedy exact-match recall.

Every span loss is the *sum* of token cross-entropies (nats) over the span, from the model's full
softmax, averaged over rows; each knowledge base turns those means into bits term by term.

Recall is greedy exact match. It is computed with teacher forcing: greedy decoding reproduces the
true value if and only if the argmax at every value position equals the true token, because then
each greedy step sees exactly the teacher-forced prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moelab.knowledge import KnowledgeBase, Probe
from moelab.models import Transformer


@dataclass
class SpanScores:
    """Per probe row: loss [n] (summed nats over the span) and exact [n] (argmax right everywhere)."""

    loss: torch.Tensor
    exact: torch.Tensor


@torch.no_grad()
def score_probe(model: Transformer, probe: Probe, batch_size: int, device: torch.device) -> dict[str, SpanScores]:
    """Teacher-forced span losses and exact matches for every span of `probe`."""
    model.eval()
    losses = {name: [] for name in probe.spans}
    exact = {name: [] for name in probe.spans}
    for start in range(0, len(probe.tokens), batch_size):
        tokens = probe.tokens[start:start + batch_size].to(device)
        logits, _ = model(tokens[:, :-1])
        logp = logits.float().log_softmax(-1)
        target = tokens[:, 1:]
        token_logp = logp.gather(-1, target[..., None]).squeeze(-1)  # [b, T-1]
        correct = logp.argmax(-1) == target
        for name, span in probe.spans.items():
            scored = span[start:start + batch_size, 1:].to(device)  # position t predicts token t
            losses[name].append(-(token_logp * scored).sum(-1).double().cpu())
            exact[name].append((correct | ~scored).all(-1).cpu())
    return {name: SpanScores(torch.cat(losses[name]), torch.cat(exact[name])) for name in probe.spans}


@dataclass
class Capacity:
    losses: dict[str, float]  # mean summed span loss in nats, keyed '<probe>.<span>'
    bit_terms: dict[str, float]
    information_terms: dict[str, float]  # the knowledge base's exact content, term by term
    accuracy: float  # greedy exact match over all (person, attribute) questions
    accuracy_per_attribute: dict[str, float]

    @property
    def bits(self) -> float:
        return sum(self.bit_terms.values())

    @property
    def information_bits(self) -> float:
        return sum(self.information_terms.values())


def measure_capacity(model: Transformer, kb: KnowledgeBase, batch_size: int, device: torch.device) -> Capacity:
    """Score every probe of `kb` and turn the mean span losses into bits and recall."""
    probes = kb.probes()
    scores: dict[str, SpanScores] = {}
    for probe_name, probe in probes.items():
        for span_name, s in score_probe(model, probe, batch_size, device).items():
            scores[f"{probe_name}.{span_name}"] = s
    losses = {key: s.loss.mean().item() for key, s in scores.items()}

    recall = scores[kb.recall_span]
    attribute = probes[kb.recall_span.split(".")[0]].attribute
    per_attribute = {name: recall.exact[attribute == a].float().mean().item()
                     for a, name in enumerate(kb.attribute_names)}
    return Capacity(
        losses=losses,
        bit_terms=kb.bits({key: losses[key] for key in kb.loss_spans}),
        information_terms=kb.information_bits(),
        accuracy=recall.exact.float().mean().item(),
        accuracy_per_attribute=per_attribute,
    )
