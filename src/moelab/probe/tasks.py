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
    parts       optional list of questions (objects of these fields, without parts of their own)
                whose answers compose this one's: a composed question
    rule        with parts: how their answers give this one's, a name in RULES
    options     with parts: the candidate answers, one per part (for "smallest", a person's name)

Composed questions (docs/probe.md): "smallest" asks which of 2 or 3 people has the smallest
value of one attribute, values compared word by word by the number each word ends in (`v3 v40`
before `v12 v1`); its gold answer is the rule applied to the parts' gold answers, and it is null
(abstain) when any part's is, that is when any of the people does not exist. A model answers it
whole (the question text), or by parts: each part is asked in the model's own format and the
rule composes the answers, an abstention on any part making the whole an abstention. The file
reader checks that every composed question's gold answer is what its parts give.

A task made from a knowledge base asks, in the model's own training format, for every attribute
of a sample of its people, plus the same questions about invented people, whose right response
is to abstain. Such questions end where the value starts, stop at the words that follow a value
in training text, and have an output budget of exactly the value's length, so greedy exact match
on them is the lab's recall metric; they are "easy" (one fact). With `composed` = n it also asks
n "medium" questions (the smallest of one attribute over two people: two facts) and n "hard"
ones (over three people: three facts), about the same people and, in the same share as the
easy questions, about a group with an invented person.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
    parts: tuple[Question, ...] = ()
    rule: str | None = None
    options: tuple[str, ...] = ()

    @property
    def answerable(self) -> bool:
        return self.answer is not None

    def compose(self, answers: list[str | None]) -> str | None:
        """This composed question's answer from its parts' answers (None: abstained)."""
        return RULES[self.rule](self.options, answers)

    def to_json(self) -> dict:
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        out["aliases"], out["stop"], out["options"] = list(self.aliases), list(self.stop), list(self.options)
        out["parts"] = [part.to_json() for part in self.parts]
        return {k: v for k, v in out.items() if v not in (None, [], ()) or k == "answer"}


def value_order(value: str) -> tuple:
    """The order "smallest" compares values in: word by word, each word by the number it ends in
    (v3 before v12), words without one after those with one, alphabetically."""
    key = []
    for word in value.split():
        number = re.search(r"\d+$", word)
        key.append((0, int(number.group()), word) if number else (1, 0, word))
    return tuple(key)


def smallest(options: tuple[str, ...], answers: list[str | None]) -> str | None:
    """The option whose answer comes first in value order (the first such on a tie); None when
    any answer is None: one fact unknown leaves the comparison unknown."""
    if any(a is None for a in answers):
        return None
    return options[min(range(len(options)), key=lambda i: value_order(answers[i]))]


RULES: dict[str, Callable[[tuple[str, ...], list[str | None]], str | None]] = {"smallest": smallest}


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


def parse_question(record, where: str, problems: list[str], part: bool = False) -> Question | None:
    """One task line (or, with `part`, one of its parts) as a Question, or None with the problems appended."""
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
    options = _string_list(record.get("options"), "options", problems, where)
    parts = _parse_parts(record, options, where, problems, part)
    if len(problems) > before:
        return None
    question = Question(record["id"], record["question"], record["answer"], aliases, record.get("domain"),
                        record.get("needle"), stop, max_tokens, difficulty, parts, record.get("rule"), options)
    if parts and question.compose([p.answer for p in parts]) != question.answer:
        problems.append(f"{where}: 'answer' {question.answer!r} is not what its parts give by rule "
                        f"{question.rule!r} ({question.compose([p.answer for p in parts])!r})")
        return None
    return question


def _parse_parts(record: dict, options: tuple[str, ...], where: str, problems: list[str],
                 part: bool) -> tuple[Question, ...]:
    """A composed question's parts (checked against its rule and options), or () with the problems appended."""
    parts, rule = record.get("parts"), record.get("rule")
    if parts is None and rule is None and not options:
        return ()
    if part:
        problems.append(f"{where}: a part cannot have parts, a rule or options of its own")
        return ()
    if not isinstance(parts, list) or not parts:
        problems.append(f"{where}: a composed question needs 'parts', a non-empty list of questions")
        return ()
    if rule not in RULES:
        problems.append(f"{where}: 'rule' must be one of {', '.join(RULES)} (got {rule!r})")
    if len(options) != len(parts):
        problems.append(f"{where}: 'options' must give one answer per part ({len(parts)}), got {len(options)}")
    parsed = [parse_question(p, f"{where} part {j + 1}", problems, part=True) for j, p in enumerate(parts)]
    return tuple(parsed) if all(parsed) else ()


def read_task(path: str | Path) -> Task:
    """Questions from a JSONL file. Every malformed line is reported, by line number, at once."""
    path = Path(path)
    if path.is_dir():
        raise TaskError(f"{path}: a folder, not a task file; give a JSONL file")
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise TaskError(f"{path}: no such task file") from None
    except UnicodeDecodeError:
        raise TaskError(f"{path}: not a text file; a task is JSONL, one question per line") from None
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
                   seed: int = 0, name: str = "kb", composed: int = 0) -> Task:
    """Questions about every attribute of `n_people` people (all by default) and of `n_invented`
    people who do not exist (by default a tenth as many, at least one), in the training format;
    with `composed` = n, also n medium and n hard questions composed of their facts."""
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
    invented = invented_names(kb, n_invented, rng)
    for i, person_name in enumerate(invented):
        for a, attribute in enumerate(kb.attribute_names):
            questions.append(Question(f"x{i}-{attribute}", text(kb.question(person_name, a)), None,
                                      domain=attribute, stop=stop, max_tokens=value_length[a], difficulty="easy"))
    if composed:
        questions += composed_questions(kb, people.tolist(), invented, composed, rng)
    asked = set(people.tolist())
    distractors = [text(kb.paragraph(p)) for p in range(kb.n_people) if p not in asked]
    if not distractors:  # every person was asked about: pad with their paragraphs all the same
        distractors = [q.needle for q in questions if q.needle]
    return Task(name, questions, distractors)


COMPOSED_LEVELS = (("medium", 2), ("hard", 3))  # difficulty label, people compared (facts needed)


def composed_questions(kb: KnowledgeBase, people: list[int], invented: list[list[int]], n: int,
                       rng: np.random.Generator) -> list[Question]:
    """`n` questions per composed level: which of 2 (medium) or 3 (hard) people has the smallest
    value of one attribute, with distinct values. A group holds an invented person (and its right
    response is to abstain) in the share invented people have among everyone asked about."""
    text = lambda ids: " ".join(kb.vocab.decode(ids))  # noqa: E731
    share_invented = len(invented) / (len(people) + len(invented))
    stop = tuple(kb.stop_words)
    out = []
    for level, size in COMPOSED_LEVELS:
        if len(people) < size:
            raise MoelabError(f"composed {level} questions compare {size} people; ask about at least {size}")
        for a, attribute in enumerate(kb.attribute_names):  # else the search for distinct values never ends
            distinct = len({text(kb.answer(p, a)) for p in people})
            if distinct < size:
                raise MoelabError(f"composed {level} questions compare {size} people with distinct values of "
                                  f"{attribute}, but the people asked about hold only {distinct} distinct "
                                  f"value(s) of it; train on a knowledge base with a larger data.diversity, "
                                  f"ask about more people (--people), or leave out --compose")
        for i in range(n):
            a = int(rng.integers(len(kb.attribute_names)))
            attribute = kb.attribute_names[a]
            with_invented = bool(invented) and rng.random() < share_invented
            while True:  # real people with distinct values: the comparison has one answer
                group = rng.choice(people, size=size - with_invented, replace=False).tolist()
                values = [text(kb.answer(p, a)) for p in group]
                if len(set(values)) == len(values):
                    break
            members = [(kb.name(p), v) for p, v in zip(group, values)]
            if with_invented:
                members.append((invented[int(rng.integers(len(invented)))], None))
            members = [members[j] for j in rng.permutation(len(members))]
            options = tuple(text(person) for person, _ in members)
            parts = tuple(Question(f"{level}{i}.{j}", text(kb.question(person, a)), value, stop=stop,
                                   max_tokens=len(kb.answer(0, a)))
                          for j, (person, value) in enumerate(members))
            listed = ", ".join(options[:-1]) + f" or {options[-1]}"
            question = Question(f"{level}{i}", f"Which of these people has the smallest {attribute}: {listed}? "
                                "Values compare word by word, by the number each word ends in.", None,
                                domain=attribute, difficulty=level, parts=parts, rule="smallest", options=options,
                                needle="\n\n".join(text(kb.paragraph(p)) for p in group))
            out.append(replace(question, answer=question.compose([p.answer for p in parts])))
    return out


def load_task(spec: str, people: int | None = None, invented: int | None = None, seed: int = 0,
              distractors: Path | None = None, composed: int = 0) -> Task:
    """The task a CLI argument names: a JSONL file, or kb:RUN_DIR (questions about that run's
    knowledge base, with `composed` questions per composed level); `distractors` replaces the
    padding passages with a file's paragraphs."""
    if spec.startswith("kb:"):
        from moelab.config import load_config
        from moelab.knowledge import build_knowledge_base

        run_dir = Path(spec[3:])
        if not (run_dir / "config.toml").exists():
            raise MoelabError(f"{spec}: no config.toml in {run_dir}; give a lab run folder")
        kb = build_knowledge_base(load_config(run_dir / "config.toml").data)
        task = knowledge_task(kb, people, invented, seed, name=f"kb-{run_dir.name}", composed=composed)
    else:
        if composed:
            raise MoelabError("--compose makes questions from a knowledge base: use it with a kb:RUN_DIR task")
        task = read_task(spec)
        task.distractors = [q.needle for q in task.questions if q.needle]
    if distractors is not None:
        try:
            text = distractors.read_text()
        except FileNotFoundError:
            raise MoelabError(f"--distractors {distractors}: no such file") from None
        task.distractors = [p.strip() for p in text.split("\n\n") if p.strip()]
    return task
