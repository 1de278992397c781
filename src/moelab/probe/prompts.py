"""What a probe sends: its settings, and each sample's prompt (closed book, padded to each
context length and needle depth, or cut to the passages BM25 keeps).

Context rot: a prompt of length L words holds the question's needle (the passage with its
answer), when it has one, at depth d (0 = first passage, 1 = last) among distractor passages
drawn at random, then the question. Lengths are in whitespace-separated words, the unit every
backend shares; the prompt tokens each backend reports are recorded beside them.

Selective context (`retrieve` k > 0): each padded prompt is also sent with only the k of its
passages that BM25 (the bm25s package) ranks highest for the question, in their original order:
loading context only when it is relevant. Its records say whether the needle was among them.

Composed questions (tasks.py) are answered by parts by default (`composed` = "parts"): each part
is sent after the same passages, and the question's rule composes the answers (runner.py).
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass

import numpy as np

from moelab.errors import MoelabError
from moelab.probe.tasks import Question, Task


def system_prompt(domain: str | None) -> str:
    about = f" about {domain}" if domain else ""
    return (f"You are answering factual questions{about}. Reply with just the answer, no explanation. "
            "If you do not know the answer, or would need more context or tools, say that you do not "
            "know: a wrong answer is worse than no answer.")


@dataclass(frozen=True)
class ProbeSettings:
    context_lengths: tuple[int, ...] = (0,)  # prompt lengths in words; 0 = the question alone
    depths: tuple[float, ...] = (0.5,)  # needle positions in padded prompts, 0 = start, 1 = end
    max_tokens: int = 64  # output budget of questions that set none
    seed: int = 0
    retrieve: int = 0  # > 0: also answer each padded prompt from its k passages BM25 ranks highest
    composed: str = "parts"  # composed questions: "parts" (each part asked, the rule composes) or "whole"

    def __post_init__(self):
        if not self.context_lengths or any(n < 0 for n in self.context_lengths):
            raise MoelabError("--context-lengths must be non-negative word counts")
        if not self.depths or any(not 0 <= d <= 1 for d in self.depths):
            raise MoelabError("--depths must lie in [0, 1]")
        if self.max_tokens < 1:
            raise MoelabError("--max-tokens must be positive")
        if self.retrieve < 0:
            raise MoelabError("--retrieve must be a number of passages (0 = off)")
        if self.composed not in ("parts", "whole"):
            raise MoelabError(f"--answer-composed must be 'parts' or 'whole', not {self.composed!r}")

    def header(self, task: Task) -> dict:
        """The settings as a probe folder records them: retrieve only when on, and composed only
        for a task with composed questions, so folders from before either resume."""
        has_composed = any(q.parts for q in task.questions)
        return {k: v for k, v in asdict(self).items()
                if (k != "retrieve" or v) and (k != "composed" or has_composed)}


@dataclass(frozen=True)
class Sample:
    key: str
    question: Question
    context_words: int
    depth: float | None  # None: no needle placed (closed book, or a question without one)
    prompt: str
    mode: str = "full"  # "closed" (no context), "full" (every padding passage) or "selective"
    retrieved_needle: bool | None = None  # selective: was the needle among the passages kept
    part_prompts: tuple[str, ...] = ()  # a composed question answered by parts: one prompt per part


def padded_prompt(question: Question, length: int, depth: float | None, distractors: list[str],
                  seed: int) -> str:
    """`question` after about `length` words of distractor passages (and its needle at `depth`)."""
    return with_passages(padded_passages(question, length, depth, distractors, seed), question)


def with_passages(passages: list[str], question: Question) -> str:
    """The prompt: the passages, then the question, a blank line apart."""
    return "\n\n".join([*passages, question.question])


def padded_passages(question: Question, length: int, depth: float | None, distractors: list[str],
                    seed: int) -> list[str]:
    """The passages of `padded_prompt`, in order."""
    pool = [p for p in distractors if p != question.needle]
    if not pool:
        raise MoelabError("padding prompts needs distractor passages: give --distractors FILE "
                          "(paragraphs separated by blank lines) or a task from kb:RUN_DIR")
    rng = np.random.default_rng([seed, zlib.crc32(f"{question.id}|{length}|{depth}".encode())])
    needle_words = len(question.needle.split()) if depth is not None else 0
    passages, words, order = [], needle_words + len(question.question.split()), []
    while words < length:
        if not order:
            order = rng.permutation(len(pool)).tolist()
        passages.append(pool[order.pop()])
        words += len(passages[-1].split())
    if depth is not None:
        passages.insert(round(depth * len(passages)), question.needle)
    return passages


def retrieve(passages: list[str], query: str, k: int) -> list[str]:
    """The k passages BM25 ranks highest for `query` (ties to the earlier one), in their original order."""
    import bm25s

    if len(passages) <= k:
        return list(passages)
    index = bm25s.BM25()
    index.index(bm25s.tokenize(passages, stopwords="en", show_progress=False), show_progress=False)
    scores = index.get_scores(bm25s.tokenize([query], stopwords="en", show_progress=False, return_ids=False)[0])
    best = sorted(np.argsort(-np.asarray(scores), kind="stable")[:k].tolist())
    return [passages[i] for i in best]


def build_samples(task: Task, settings: ProbeSettings) -> list[Sample]:
    by_parts = settings.composed == "parts"

    def sample(key: str, q: Question, length: int, depth: float | None, passages: list[str], mode: str = "full",
               retrieved: bool | None = None) -> Sample:
        parts = tuple(with_passages(passages, part) for part in q.parts) if by_parts else ()
        return Sample(key, q, length, depth, with_passages(passages, q), mode, retrieved, parts)

    samples = []
    for length in sorted(set(settings.context_lengths)):
        for q in task.questions:
            if length == 0:
                samples.append(sample(f"{q.id}|0|-", q, 0, None, [], "closed"))
                continue
            for depth in (sorted(set(settings.depths)) if q.needle else [None]):
                tag = "-" if depth is None else f"{depth:g}"
                passages = padded_passages(q, length, depth, task.distractors, settings.seed)
                samples.append(sample(f"{q.id}|{length}|{tag}", q, length, depth, passages))
                if settings.retrieve:
                    kept = retrieve(passages, q.question, settings.retrieve)
                    samples.append(sample(f"{q.id}|{length}|{tag}|top{settings.retrieve}", q, length, depth, kept,
                                          "selective", None if depth is None else q.needle in kept))
    return samples
