"""Does a lab model know what it does not know? Greedy answers to every question about the real
people and about the held-out invented people (docs/science.md §3, "Abstention").

Each question is the training text up to where a value starts; the model decodes the value's
length greedily. It **abstains** when its first token is <unknown> (a model trained with
`data.unknown_fraction`); otherwise its answer is correct (exact match) or incorrect, and on an
invented person any answer is a hallucination. As AA-Omniscience counts them, over all questions
(real and invented):

    Omniscience Index   100 (correct - incorrect) / N        (abstaining scores 0)
    hallucination rate  incorrect / (incorrect + abstained)  (the wrong share of what is not correct)

The **threshold baseline** needs no training: the model abstains when the probability of its own
greedy answer (the product of its tokens' probabilities) is below a threshold t. Sweeping t gives
the selective-prediction curve (accuracy on real people against the share they answered) and the
best Omniscience Index over thresholds: what trained abstention must beat.
"""

from __future__ import annotations

import numpy as np
import torch

from moelab.knowledge import KnowledgeBase
from moelab.knowledge.biod import UNKNOWN
from moelab.models import Transformer
from moelab.intervals import omniscience_interval, wilson

CURVE_POINTS = 21  # thresholds reported on the selective-prediction curve


@torch.no_grad()
def greedy_answers(model: Transformer, prompts: torch.Tensor, length: int, unknown: int | None,
                   batch_size: int, device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For prompts [n, P] (all the same length): the greedy continuation [n, length], its
    probability [n] (the product of each step's top probability) and whether it abstains [n]
    (first token <unknown>; all False without that token)."""
    model.eval()
    tokens, probs = [], []
    for start in range(0, len(prompts), batch_size):
        seq, chosen = model.generate(prompts[start:start + batch_size].to(device), length)
        p = torch.ones(len(seq), device=device, dtype=torch.float64)
        for step in chosen.unbind(1):  # multiplied step by step, in order
            p = p * step
        tokens.append(seq[:, prompts.shape[1]:].cpu())
        probs.append(p.cpu())
    answers = torch.cat(tokens).numpy()
    abstained = answers[:, 0] == unknown if unknown is not None else np.zeros(len(answers), dtype=bool)
    return answers, torch.cat(probs).numpy(), abstained


def _questions(kb: KnowledgeBase, names: list[list[int]]) -> tuple[torch.Tensor, list[int]]:
    """Prompts [len(names) K, P] (every attribute of every name, name-major) and the attribute of each."""
    K = len(kb.attribute_names)
    rows = [kb.question(name, a) for name in names for a in range(K)]
    return torch.tensor(rows, dtype=torch.int64), [a for _ in names for a in range(K)]


def _counts(correct: int, incorrect: int, n: int) -> dict:
    """Omniscience Index and hallucination rate of `correct` and `incorrect` answers out of `n`."""
    abstained = n - correct - incorrect
    return {
        "omniscience_index": 100 * (correct - incorrect) / n if n else float("nan"),
        "omniscience_index_interval": omniscience_interval(correct, incorrect, n),
        "hallucination_rate": incorrect / (incorrect + abstained) if incorrect + abstained else float("nan"),
        "hallucination_rate_interval": wilson(incorrect, incorrect + abstained),
    }


def selective_curve(confidence_real: np.ndarray, correct_real: np.ndarray,
                    confidence_invented: np.ndarray) -> list[dict]:
    """Abstain below threshold t: for thresholds at the quantiles of the real answers'
    confidence, the share of real questions answered, accuracy among them, and the Omniscience
    Index over real and invented questions (an answered invented question is a hallucination).
    Rows go from answering everything to answering nothing, so coverage never increases."""
    n_real, n_invented = len(confidence_real), len(confidence_invented)
    thresholds = np.unique(np.concatenate([[0.0], np.quantile(confidence_real, np.linspace(0, 1, CURVE_POINTS)),
                                           [np.inf]]))
    rows = []
    for t in thresholds:
        answered = confidence_real >= t
        hallucinated = int((confidence_invented >= t).sum())
        correct = int((answered & correct_real).sum())
        incorrect = int((answered & ~correct_real).sum()) + hallucinated
        rows.append({"threshold": float(t), "coverage": float(answered.mean()),
                     "accuracy_answered": float(correct / answered.sum()) if answered.any() else float("nan"),
                     "omniscience_index": 100 * (correct - incorrect) / (n_real + n_invented)})
    return rows


def abstention_metrics(model: Transformer, kb: KnowledgeBase, batch_size: int, device: torch.device) -> dict:
    """Correct, incorrect and abstained shares on the real people, abstained and hallucinated on
    the held-out invented ones (Wilson intervals), the Omniscience Index and hallucination rate
    over both, and the threshold baseline's curve with its best Omniscience Index."""
    K = len(kb.attribute_names)
    length = len(kb.answer(0, 0))
    unknown = kb.vocab.ids.get(UNKNOWN)
    real_prompts, _ = _questions(kb, [kb.name(p) for p in range(kb.n_people)])
    truth = np.array([kb.answer(p, a) for p in range(kb.n_people) for a in range(K)])
    answers, conf_real, abstain_real = greedy_answers(model, real_prompts, length, unknown, batch_size, device)
    correct_real = (answers == truth).all(1) & ~abstain_real
    invented_prompts, _ = _questions(kb, kb.held_out_names)
    _, conf_invented, abstain_invented = greedy_answers(model, invented_prompts, length, unknown, batch_size, device)

    n_real, n_inv = len(truth), len(invented_prompts)
    c = int(correct_real.sum())
    a_real, a_inv = int(abstain_real.sum()), int(abstain_invented.sum())
    i_real, hallucinated = n_real - c - a_real, n_inv - a_inv
    curve = selective_curve(conf_real, correct_real, conf_invented)
    best = max(curve, key=lambda r: r["omniscience_index"])
    share = lambda k, n: {"share": k / n if n else float("nan"), "interval": wilson(k, n)}  # noqa: E731
    return {
        "trained": unknown is not None,
        "real": {"questions": n_real, "correct": share(c, n_real), "incorrect": share(i_real, n_real),
                 "abstained": share(a_real, n_real)},
        "invented": {"people": len(kb.held_out_names), "questions": n_inv,
                     "abstained": share(a_inv, n_inv), "hallucinated": share(hallucinated, n_inv)},
        **_counts(c, i_real + hallucinated, n_real + n_inv),
        "threshold_curve": curve,
        "threshold_best": best,
    }
