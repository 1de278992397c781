"""Learning after deployment (docs/science.md §5): what a continued run trains on and what it may
change. The run itself (parent, phase B, measurement) is `run.execute`.

    Replay          B's training rows, with a share of paragraphs about A's people mixed in
    grow            the added experts or memory a continued run's model gets
    freeze          which parameter groups of the model may change on B
    phase_b_train   the optimisation of phase B: the parent's, with continual.* in place
    forgetting      the share of A's bits lost
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from moelab.config import ContinualConfig, TrainConfig
from moelab.knowledge import TrainingBatch
from moelab.knowledge.biod import BioD
from moelab.models import Transformer


def replay_per_exposure(n_new: int, fraction: float) -> int:
    """Paragraphs about A's people in each pass over B's, so they make `fraction` of the pass."""
    return round(n_new * fraction / (1 - fraction))


class Replay:
    """Phase B's training text: B's people (ids 0..N_B-1), and per pass `replay` slots (ids from
    N_B on), each filled with a paragraph about one of A's people drawn afresh. It offers what the
    training loop reads of a knowledge base: n_people, the extra rows per pass (none), the
    vocabulary (A and B share one) and training_batch."""

    junk_per_exposure = 0
    unknown_per_exposure = 0

    def __init__(self, a: BioD, b: BioD, replay: int):
        self.a, self.b, self.replay = a, b, replay
        self.n_people = b.n_people + replay
        self.vocab = b.vocab

    def training_batch(self, people: np.ndarray, rng: np.random.Generator) -> TrainingBatch:
        people = np.asarray(people)
        from_a = people >= self.b.n_people
        rows_b = self.b.training_batch(people[~from_a], rng)
        if not from_a.any():
            return rows_b
        rows_a = self.a.training_batch(rng.integers(0, self.a.n_people, size=int(from_a.sum())), rng)
        mask = torch.from_numpy(from_a)
        inputs = torch.empty((len(people), rows_b.inputs.shape[1]), dtype=torch.int64)
        targets = torch.empty_like(inputs)
        inputs[mask], targets[mask] = rows_a.inputs, rows_a.targets
        inputs[~mask], targets[~mask] = rows_b.inputs, rows_b.targets
        return TrainingBatch(inputs=inputs, targets=targets)


def grow(model: Transformer, c: ContinualConfig) -> None:
    """Add the experts and memory `c` asks for (their outputs start at zero)."""
    if c.add_experts:
        model.add_experts(c.add_experts)
    if c.add_memory:
        model.add_memory()


def freeze(model: Transformer, trainable: list[str]) -> int:
    """Let only the parameters of the `trainable` groups change ("all": every one; []: none);
    returns how many parameters may change. A frozen learned router also stops its
    auxiliary-loss-free bias (Transformer.after_optimizer_step)."""
    groups = model.parameter_groups()
    count = 0
    for name, p in model.named_parameters():
        p.requires_grad_("all" in trainable or bool(groups[name] & set(trainable)))
        count += p.numel() if p.requires_grad else 0
    return count


def phase_b_train(train: TrainConfig, c: ContinualConfig) -> TrainConfig:
    """The parent's optimisation (batch, betas, weight decay, clipping, multipliers) with phase
    B's exposures, learning rate and schedule."""
    return dataclasses.replace(train, exposures=c.exposures, lr=c.lr, warmup_steps=c.warmup_steps,
                               min_lr_ratio=c.min_lr_ratio)


def forgetting(bits_before: float, bits_after: float) -> float:
    """The share of A's bits lost on B (negative when A's bits grew)."""
    return (bits_before - bits_after) / bits_before if bits_before > 0 else float("nan")
