"""Probe tasks: factual questions with short gold answers, read from JSONL or made from a lab
knowledge base.

One JSON object per line:
    id          string, unique in the file
    question    string, the text sent to the model (a chat message, or a raw completion prompt)
    answer      string, the gold answer; null when the right response is to abstain (the
                question is about something that does not exist)
    aliases     optional list of strings, other answers graded correct
    domain      optional string, for per-domain breakdowns
    needle      optional string, a passage that holds the answer (placed in long contexts)
    stop        optional list of strings that end the answer (completion prompts)
    max_tokens  optional positive integer, the output budget for this question
    difficulty  optional number or label (easy, medium, hard, or any other), for effort against
                difficulty (probe/metrics.py, `effort`)

A task made from a knowledge base asks, in the model's own training format, for every attribute
of a sample of its people, plus the same questions about invented people, whose right response
is to abstain. Such questions end where the value starts, stop at the words that follow a value
in training text, and have an output budget of exactly the value's length, so greedy exact match
on them is the lab's recall metric.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from moelab.errors import MoelabError
from moelab.io import atomic_write_text
from moelab.knowledge import KnowledgeBase
from moelab.knowledge.base import name_token_ids


class TaskError(MoelabError):
    """A malformed task file; the message names every bad line."""


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answer: str | None
    aliases: tuple[str, ...] = ()
    domain: str | None = None
    needle: str | None = None
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None
    difficulty: float | str | None = None

    @property
    def answerable(self) -> bool:
        return self.answer is not None

    def to_json(self) -> dict:
        out = asdict(self)
        out["aliases"], out["stop"] = list(self.aliases), list(self.stop)
        return {k: v for k, v in out.items() if v not in (None, [], ()) or k == "answer"}


@dataclass
class Task:
    name: str
    questions: list[Question]
    distractors: list[str] = field(default_factory=list)  # passages for padding long contexts

    @property
    def sha256(self) -> str:
        """The questions' hash (what a survey row cites)."""
        text = "\n".join(json.dumps(q.to_json(), sort_keys=True) for q in self.questions)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def distractors_sha256(self) -> str:
        """The padding passages' hash: padded prompts, and so their answers, depend on them."""
        return hashlib.sha256(json.dumps(self.distractors).encode()).hexdigest()


def _string_list(value, key: str, problems: list[str], where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{where}: '{key}' must be a list of strings")
        return ()
    return tuple(value)


def parse_question(record, where: str, problems: list[str]) -> Question | None:
    """One task line as a Question, or None with the problems appended."""
    before = len(problems)
    if not isinstance(record, dict):
        problems.append(f"{where}: expected a JSON object")
        return None
    unknown = sorted(set(record) - {f for f in Question.__dataclass_fields__})
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(unknown)}")
    for key in ("id", "question"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            problems.append(f"{where}: '{key}' must be a non-empty string")
    if "answer" not in record:
        problems.append(f"{where}: 'answer' is missing (use null for a question whose right response is to abstain)")
    elif record["answer"] is not None and (not isinstance(record["answer"], str) or not record["answer"].strip()):
        problems.append(f"{where}: 'answer' must be a non-empty string or null")
    for key in ("domain", "needle"):
        if record.get(key) is not None and not isinstance(record[key], str):
            problems.append(f"{where}: '{key}' must be a string")
    difficulty = record.get("difficulty")
    if difficulty is not None and (isinstance(difficulty, bool) or not isinstance(difficulty, int | float | str)
                                   or (isinstance(difficulty, str) and not difficulty.strip())
                                   or (isinstance(difficulty, float) and not math.isfinite(difficulty))):
        problems.append(f"{where}: 'difficulty' must be a finite number or a non-empty label")
    max_tokens = record.get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        problems.append(f"{where}: 'max_tokens' must be a positive integer")
    aliases = _string_list(record.get("aliases"), "aliases", problems, where)
    stop = _string_list(record.get("stop"), "stop", problems, where)
    if len(problems) > before:
        return None
    return Question(record["id"], record["question"], record["answer"], aliases, record.get("domain"),
                    record.get("needle"), stop, max_tokens, difficulty)


def read_task(path: str | Path) -> Task:
    """Questions from a JSONL file. Every malformed line is reported, by line number, at once."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise TaskError(f"{path}: no such task file") from None
    questions, problems, seen = [], [], {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{where}: not valid JSON ({e.msg} at column {e.colno})")
            continue
        question = parse_question(record, where, problems)
        if question is None:
            continue
        if question.id in seen:
            problems.append(f"{where}: duplicate id {question.id!r} (first on line {seen[question.id]})")
            continue
        seen[question.id] = number
        questions.append(question)
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise TaskError(f"{len(problems)} problem(s) in the task file:\n  " + "\n  ".join(shown))
    if not questions:
        raise TaskError(f"{path}: no questions")
    return Task(path.stem, questions)


def write_task(task: Task, path: str | Path) -> None:
    atomic_write_text(path, "".join(json.dumps(q.to_json()) + "\n" for q in task.questions))


def invented_names(kb: KnowledgeBase, n: int, rng: np.random.Generator) -> list[list[int]]:
    """`n` distinct names built from the knowledge base's name tokens that belong to nobody in it:
    first the base's held-out invented people (bioD: never used to train abstention), then, past
    those, fresh draws."""
    alphabet = np.array(name_token_ids(kb.vocab))
    slots = len(kb.name(0))
    held = [list(map(int, name)) for name in getattr(kb, "held_out_names", [])][:n]
    taken = {tuple(kb.name(p)) for p in range(kb.n_people)} | {tuple(name) for name in held}
    if len(alphabet) ** slots - len(taken) < n - len(held):
        raise MoelabError(f"cannot invent {n} people: the name space is nearly full")
    names: list[list[int]] = held
    while len(names) < n:
        name = tuple(int(t) for t in rng.choice(alphabet, size=slots))
        if name not in taken:
            taken.add(name)
            names.append(list(name))
    return names


def knowledge_task(kb: KnowledgeBase, n_people: int | None = None, n_invented: int | None = None,
                   seed: int = 0, name: str = "kb") -> Task:
    """Questions about every attribute of `n_people` people (all by default) and of `n_invented`
    people who do not exist (by default a tenth as many, at least one), in the training format."""
    if not kb.information_bits():
        raise MoelabError(f"data.kind = {kb.cfg.kind!r} holds no facts to ask about; "
                          "make probe tasks from a biod or bios run")
    rng = np.random.default_rng(seed)
    n_people = kb.n_people if n_people is None else min(n_people, kb.n_people)
    people = np.sort(rng.choice(kb.n_people, size=n_people, replace=False))
    n_invented = max(1, n_people // 10) if n_invented is None else n_invented
    text = lambda ids: " ".join(kb.vocab.decode(ids))  # noqa: E731
    stop = tuple(kb.stop_words)
    questions = []
    for p in people.tolist():
        paragraph = text(kb.paragraph(p))  # the needle of every question about p
        for a, attribute in enumerate(kb.attribute_names):
            answer = kb.answer(p, a)
            questions.append(Question(f"p{p}-{attribute}", text(kb.question(kb.name(p), a)), text(answer),
                                      domain=attribute, needle=paragraph, stop=stop, max_tokens=len(answer),
                                      difficulty="easy"))
    value_length = [len(kb.answer(0, a)) for a in range(len(kb.attribute_names))]
    for i, person_name in enumerate(invented_names(kb, n_invented, rng)):
        for a, attribute in enumerate(kb.attribute_names):
            questions.append(Question(f"x{i}-{attribute}", text(kb.question(person_name, a)), None,
                                      domain=attribute, stop=stop, max_tokens=value_length[a], difficulty="easy"))
    asked = set(people.tolist())
    distractors = [text(kb.paragraph(p)) for p in range(kb.n_people) if p not in asked]
    if not distractors:  # every person was asked about: pad with their paragraphs all the same
        distractors = [q.needle for q in questions if q.needle]
    return Task(name, questions, distractors)


def load_task(spec: str, people: int | None = None, invented: int | None = None, seed: int = 0,
              distractors: Path | None = None) -> Task:
    """The task a CLI argument names: a JSONL file, or kb:RUN_DIR (questions about that run's
    knowledge base); `distractors` replaces the padding passages with a file's paragraphs."""
    if spec.startswith("kb:"):
        from moelab.config import load_config
        from moelab.knowledge import build_knowledge_base

        run_dir = Path(spec[3:])
        if not (run_dir / "config.toml").exists():
            raise MoelabError(f"{spec}: no config.toml in {run_dir}; give a lab run folder")
        kb = build_knowledge_base(load_config(run_dir / "config.toml").data)
        task = knowledge_task(kb, people, invented, seed, name=f"kb-{run_dir.name}")
    else:
        task = read_task(spec)
        task.distractors = [q.needle for q in task.questions if q.needle]
    if distractors is not None:
        try:
            text = distractors.read_text()
        except FileNotFoundError:
            raise MoelabError(f"--distractors {distractors}: no such file") from None
        task.distractors = [p.strip() for p in text.split("\n\n") if p.strip()]
    return task
