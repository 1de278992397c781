"""Run a probe: build the prompts (closed book, and padded to each context length and needle
depth), get answers from a backend, grade them, and write per-sample JSONL and metrics.

Output folder:
    probe.json     what was probed with what settings (a rerun must match it to resume)
    samples.jsonl  one graded answer per line, appended as answers arrive
    metrics.json   the metrics (written last, atomically)
A rerun with the same settings skips every sample already in samples.jsonl; samples whose backend
call failed are not written, so they are retried.

Context rot: a prompt of length L words holds the question's needle (the passage with its
answer), when it has one, at depth d (0 = first passage, 1 = last) among distractor passages
drawn at random, then the question. Lengths are in whitespace-separated words, the unit every
backend shares; the prompt tokens each backend reports are recorded beside them.

Selective context (`retrieve` k > 0): each padded prompt is also sent with only the k of its
passages that BM25 (the bm25s package) ranks highest for the question, in their original order:
loading context only when it is relevant. Its records say whether the needle was among them.

Composed questions (tasks.py) are answered by parts by default (`composed` = "parts"): each part
is sent after the same passages, and the question's rule composes the answers (a part that is
empty or abstains makes the whole an abstention). The record's output tokens and prompt tokens
are the parts' sums, and its `parts` hold each part's output and grade. With "whole" the
question's own text is sent instead, for models that read it.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from moelab.analysis.fit import bootstrap
from moelab.analysis.survey import COLUMNS, parse_rows
from moelab.errors import MoelabError
from moelab.io import atomic_write_json, atomic_write_text, json_safe
from moelab.probe.backends import Backend, Completion, Request
from moelab.probe.grading import (CORRECT, JUDGE_PROMPT_SHA256, grade, is_abstention, judge_prompt, normalise,
                                  parse_judgement)
from moelab.intervals import wilson
from moelab.probe.metrics import effort, grade_metrics, level_order
from moelab.probe.tasks import Question, Task
from moelab.provenance import environment

SURVEY_BENCHMARK = "moelab-probe"
JUDGE_MAX_TOKENS = 16
CHUNK = 64  # samples per backend call: progress and resumable writes happen between chunks


def parse_numbers(text: str, kind: type, option: str) -> tuple:
    """'0,256,1024' as numbers of `kind`; a MoelabError naming `option` otherwise."""
    try:
        return tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise MoelabError(f"{option} {text!r}: expected comma-separated numbers") from None


def default_out(backend: Backend, task: Task) -> Path:
    """runs/probe-MODEL-TASK, with the model name reduced to safe file-name characters."""
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(backend.describe()["model"]))
    return Path("runs") / f"probe-{label}-{task.name}"


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


def _requests(sample: Sample, settings: ProbeSettings, chat: bool) -> list[Request]:
    """What a sample sends: its prompt, or one prompt per part of a composed question."""
    q = sample.question
    if sample.part_prompts:
        return [Request(prompt, part.max_tokens or settings.max_tokens, part.stop,
                        system_prompt(q.domain) if chat else None) for prompt, part in zip(sample.part_prompts, q.parts)]
    return [Request(sample.prompt, q.max_tokens or settings.max_tokens, q.stop,
                    system_prompt(q.domain) if chat else None)]


def _answer(sample: Sample, replies: list[Completion]) -> tuple[Completion, list[dict] | None]:
    """A sample's completion from its replies: the one reply, or the parts' answers composed by
    the question's rule (token counts summed), with each part's output and grade."""
    if not sample.part_prompts:
        return replies[0], None
    failed = [c.error for c in replies if c.error is not None]
    q = sample.question
    known = [None if not normalise(c.text) or is_abstention(c.text) else c.text for c in replies]
    composed = q.compose(known)
    prompt_tokens = [c.prompt_tokens for c in replies]
    reasoning = [c.reasoning_tokens for c in replies if c.reasoning_tokens is not None]
    completion = Completion("I don't know" if composed is None else composed, sum(c.output_tokens for c in replies),
                            None if None in prompt_tokens else sum(prompt_tokens),
                            sum(reasoning) if reasoning else None, failed[0] if failed else None)
    return completion, [{"output": c.text, "grade": grade(part, c.text)} for part, c in zip(q.parts, replies)]


def _record(sample: Sample, completion: Completion, judged: tuple[str | None, str] | None,
            parts: list[dict] | None = None) -> dict:
    rule = grade(sample.question, completion.text)
    judge_grade, judge_reply = judged if judged else (None, None)
    q = sample.question
    sent = sample.part_prompts or (sample.prompt,)
    return {"key": sample.key, "id": q.id, "domain": q.domain, "difficulty": q.difficulty, "answerable": q.answerable,
            "context_words": sample.context_words, "depth": sample.depth, "mode": sample.mode,
            "retrieved_needle": sample.retrieved_needle,
            "prompt_words": sum(len(prompt.split()) for prompt in sent), "question": q.question, "answer": q.answer,
            "output": completion.text, "grade": judge_grade or rule, "rule_grade": rule,
            "judge_reply": judge_reply, "judge_parse_failure": judged is not None and judge_grade is None,
            "output_tokens": completion.output_tokens, "prompt_tokens": completion.prompt_tokens,
            "reasoning_tokens": completion.reasoning_tokens, **({"parts": parts} if parts is not None else {})}


def _judge(judge: Backend, samples: list[Sample], completions: dict[int, Completion]) -> dict[int, tuple]:
    """Judge each answered sample: index -> (grade or None when unparsable, raw reply)."""
    indices = [i for i in completions if completions[i].error is None]
    requests = [Request(judge_prompt(samples[i].question, completions[i].text), JUDGE_MAX_TOKENS)
                for i in indices]
    replies: dict[int, Completion] = {}
    judge.complete(requests, lambda j, c: replies.__setitem__(indices[j], c))
    return {i: (parse_judgement(c.text) if c.error is None else None, c.error or c.text)
            for i, c in replies.items()}


def read_samples(path: Path) -> list[dict]:
    """Records already written; a torn last line (an interrupted write) is dropped."""
    if not path.exists():
        return []
    text = path.read_text()
    records, lines = [], text.splitlines()
    for n, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n != len(lines) - 1:
                raise MoelabError(f"{path} line {n + 1} is not valid JSON; move the file away to start over")
    if text and (len(records) < len(lines) or not text.endswith("\n")):  # torn last write: mend it
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    return records


def summarise(records: list[dict]) -> dict:
    """Metrics at the shortest context (overall, by domain, answerable vs not) and the context-rot table."""
    shortest = min(r["context_words"] for r in records)

    def metrics(rs: list[dict]) -> dict:
        return grade_metrics([r["grade"] for r in rs], [r["output_tokens"] for r in rs],
                             [r["reasoning_tokens"] for r in rs])

    selective = [r for r in records if r.get("mode") == "selective"]
    records = [r for r in records if r.get("mode") != "selective"]
    base = [r for r in records if r["context_words"] == shortest]
    out = metrics(base)
    by_domain = defaultdict(list)
    for r in base:
        by_domain[r["domain"] or "(none)"].append(r)
    out["by_domain"] = {d: metrics(rs) for d, rs in sorted(by_domain.items())}
    rated = [r for r in base if r.get("difficulty") is not None]
    by_difficulty = defaultdict(list)
    for r in rated:
        by_difficulty[r["difficulty"]].append(r)
    out["by_difficulty"] = {str(level): metrics(by_difficulty[level]) | every_part_correct(by_difficulty[level])
                            for level in sorted(by_difficulty, key=level_order)}
    out["effort"] = effort([r["difficulty"] for r in rated],
                           [r["output_tokens"] + (r["reasoning_tokens"] or 0) for r in rated]) if rated else None
    for name, want in (("answerable", True), ("unanswerable", False)):
        subset = [r for r in base if r["answerable"] is want]
        out[name] = metrics(subset) if subset else None
    out["context_words"] = shortest
    out["judge_parse_failures"] = sum(r["judge_parse_failure"] for r in records)

    groups = defaultdict(list)
    for r in records:
        groups[(r["context_words"], r["depth"])].append(r)
    rot = []
    for (length, depth), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] is None, kv[0][1] or 0)):
        m = metrics(rs)
        ids = {r["id"] for r in rs}  # the reference: the same questions at the shortest length
        reference = [r["grade"] == CORRECT for r in base if r["id"] in ids]
        reference_accuracy = float(np.mean(reference)) if reference else None
        rot.append({"context_words": length, "depth": depth, "n": m["n"], "accuracy": m["accuracy"],
                    "accuracy_interval": m["accuracy_interval"], "omniscience_index": m["omniscience_index"],
                    "prompt_words": float(np.mean([r["prompt_words"] for r in rs])),
                    "ratio_to_shortest": m["accuracy"] / reference_accuracy if reference_accuracy else None})
    out["context_rot"] = rot
    out["selective_context"] = selective_table(records, selective) if selective else None
    return out


def every_part_correct(records: list[dict]) -> dict:
    """Over the answerable composed questions answered by parts, the share whose every part was
    right: the facts were known, not just the comparison won (an empty dict when there are none)."""
    by_parts = [r for r in records if r.get("parts") and r["answerable"]]
    if not by_parts:
        return {}
    known = sum(all(part["grade"] == CORRECT for part in r["parts"]) for r in by_parts)
    return {"answered_by_parts": len(by_parts), "every_part_correct": known / len(by_parts),
            "every_part_correct_interval": wilson(known, len(by_parts))}


def selective_table(full: list[dict], selective: list[dict]) -> list[dict]:
    """Per context length: closed book, full context and selective context on the same questions:
    accuracy, words and tokens sent, tokens generated, the retriever's hit rate, and the share of
    the accuracy context rot lost (closed book to full) that selective context recovers."""
    closed = {r["id"]: r for r in full if r["context_words"] == 0}
    rows = []
    for length in sorted({r["context_words"] for r in selective}):
        chosen = [r for r in selective if r["context_words"] == length]
        keys = {r["key"].rsplit("|", 1)[0] for r in chosen}
        padded = [r for r in full if r["key"] in keys]
        reference = [closed[r["id"]] for r in padded if r["id"] in closed]
        row = {"context_words": length}
        for mode, rs in (("closed", reference), ("full", padded), ("selective", chosen)):
            if not rs:
                row[mode] = None
                continue
            m = grade_metrics([r["grade"] for r in rs], [r["output_tokens"] for r in rs], n_boot=200)
            prompt_tokens = [r["prompt_tokens"] for r in rs if r.get("prompt_tokens") is not None]
            row[mode] = {"n": m["n"], "accuracy": m["accuracy"], "accuracy_interval": m["accuracy_interval"],
                         "prompt_words": float(np.mean([r["prompt_words"] for r in rs])),
                         "prompt_tokens": float(np.mean(prompt_tokens)) if prompt_tokens else None,
                         "output_tokens": m["output_tokens_per_question"]}
        hits = [r["retrieved_needle"] for r in chosen if r["retrieved_needle"] is not None]
        row["hit_rate"] = float(np.mean(hits)) if hits else None
        row["hit_rate_interval"] = wilson(sum(hits), len(hits)) if hits else None
        row["recovered"], row["recovered_interval"] = _recovered(closed, padded, chosen)
        rows.append(row)
    return rows


def _recovered(closed: dict[str, dict], padded: list[dict], chosen: list[dict]) -> tuple[float | None, list | None]:
    """(selective - full) / (closed - full) accuracy over the same questions, with a percentile
    bootstrap interval over questions (each resample keeps a question's three answers together);
    None where closed book and full context are equally accurate (context rot lost nothing)."""
    full = {r["key"]: r for r in padded}
    aligned = [(closed[r["id"]], full[r["key"].rsplit("|", 1)[0]], r) for r in chosen
               if r["id"] in closed and r["key"].rsplit("|", 1)[0] in full]
    if not aligned:
        return None, None
    c, f, s = (np.array([t[j]["grade"] == CORRECT for t in aligned], dtype=float) for j in range(3))
    if c.mean() == f.mean():
        return None, None
    e = bootstrap(lambda c, f, s: (s.mean(-1) - f.mean(-1)) / (c.mean(-1) - f.mean(-1)), [c, f, s], n_boot=1000)
    return e.value, [e.low, e.high]


def run_probe(backend: Backend, task: Task, out_dir: str | Path, settings: ProbeSettings,
              judge: Backend | None = None, on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Probe `backend` on `task`; returns the metrics (also written to out_dir/metrics.json)."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = {"model": backend.spec, "backend": backend.settings(), "task": task.name,
              "task_sha256": task.sha256, "distractors_sha256": task.distractors_sha256,
              "settings": settings.header(task), "grader": f"judge:{judge.spec}" if judge else "deterministic",
              "judge": judge.settings() if judge else None,
              "judge_prompt_sha256": JUDGE_PROMPT_SHA256 if judge else None}
    header_path = out_dir / "probe.json"
    answered = bool(read_samples(out_dir / "samples.jsonl"))
    if header_path.exists() and answered:  # settings are pinned by answers, not by an attempt that got none
        before = json.loads(header_path.read_text())
        changed = [k for k in header if before.get(k) != json.loads(json.dumps(header[k]))]
        if changed:
            raise MoelabError(f"{out_dir} holds a probe with other {', '.join(changed)}; "
                              "choose another --out to keep both")
    else:
        atomic_write_json(header_path, header)

    samples = build_samples(task, settings)
    samples_path = out_dir / "samples.jsonl"
    records = read_samples(samples_path)
    done = {r["key"] for r in records}
    pending = [s for s in samples if s.key not in done]
    errors: list[str] = []
    sends = lambda s: len(s.part_prompts) or 1  # noqa: E731  (requests per sample)
    total = sum(sends(s) for s in samples)
    if on_progress:
        on_progress(total - sum(sends(s) for s in pending), total)
    with open(samples_path, "a") as sink:
        for start_index in range(0, len(pending), CHUNK):
            chunk = pending[start_index:start_index + CHUNK]
            requests, owner = [], []  # every request of the chunk, and the sample it belongs to
            for i, sample in enumerate(chunk):
                for request in _requests(sample, settings, backend.chat):
                    requests.append(request)
                    owner.append(i)
            replies: dict[int, Completion] = {}

            def arrived(j: int, c: Completion) -> None:
                replies[j] = c
                if on_progress:
                    on_progress(1, total)

            backend.complete(requests, arrived)
            answers = [_answer(sample, [replies[j] for j in range(len(requests)) if owner[j] == i])
                       for i, sample in enumerate(chunk)]
            completions = {i: c for i, (c, _) in enumerate(answers)}
            judged = _judge(judge, chunk, completions) if judge else {}
            for i, sample in enumerate(chunk):
                c, parts = answers[i]
                if c.error is not None:
                    errors.append(f"{sample.key}: {c.error}")
                    continue
                record = _record(sample, c, judged.get(i), parts)
                records.append(record)
                sink.write(json.dumps(record) + "\n")
            sink.flush()

    keys = {s.key for s in samples}
    records = [r for r in records if r["key"] in keys]
    if not records:
        raise MoelabError(f"no answers: every backend call failed, e.g. {errors[0] if errors else '?'}")
    metrics = json_safe(summarise(records) | header | {
        "errors": len(errors), "error_examples": errors[:5], "samples": len(samples),
        "model_info": backend.describe(), "wall_seconds": time.perf_counter() - start,
    } | environment(backend.device))
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


def survey_row(metrics: dict, model: str | None = None, developer: str = "unknown") -> dict:
    """A survey CSV row (analysis/survey.py's columns) for a probe's results."""
    info = metrics["model_info"]
    billions = lambda n: f"{n / 1e9:.6g}" if n else ""  # noqa: E731
    grader = "LLM judge" if metrics["grader"].startswith("judge:") else "deterministic grading"
    return {
        "model": model or info["model"], "developer": developer,
        "open_weights": "true" if info["open_weights"] else "false", "architecture": info["architecture"] or "",
        "total_params_b": billions(info["p_total"]), "active_params_b": billions(info["p_active"]),
        "benchmark": SURVEY_BENCHMARK,
        "variant": f"task {metrics['task']} ({metrics['task_sha256'][:12]}), {metrics['n']} questions, {grader}",
        "accuracy_pct": f"{100 * metrics['accuracy']:.2f}",
        "omniscience_index": f"{metrics['omniscience_index']:.2f}",
        "hallucination_rate_pct": (f"{100 * metrics['hallucination_rate']:.2f}"
                                   if metrics["hallucination_rate"] is not None else ""),
        "source": f"moelab probe {metrics['model']} (commit {metrics.get('git_commit') or 'unknown'})",
        "as_of": datetime.date.today().isoformat(),
    }


def check_survey_csv(path: str | Path) -> str:
    """The text of a survey CSV that a row may be appended to ('' when it does not exist yet); a
    MoelabError naming it when it is not one."""
    path = Path(path)
    try:
        text = path.read_text() if path.exists() else ""
    except UnicodeDecodeError:
        raise MoelabError(f"{path}: not a text file; --survey-row appends to a survey CSV") from None
    if text and text.splitlines()[0].split(",") != COLUMNS:
        raise MoelabError(f"{path} line 1: not a survey CSV header (expected {','.join(COLUMNS)})")
    return text


def append_survey_row(path: str | Path, row: dict) -> None:
    """Append `row` to a survey CSV (created with its header if missing), checked by the survey's loader."""
    path = Path(path)
    text = check_survey_csv(path)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    if not text:
        writer.writeheader()
    elif not text.endswith("\n"):
        buffer.write("\n")
    writer.writerow(row)
    new_text = text + buffer.getvalue()
    check = path.with_name(f".{path.name}.check")
    try:
        check.write_text(new_text)
        _, problems = parse_rows(check)
    finally:
        check.unlink(missing_ok=True)
    last_line = new_text.count("\n")
    mine = [p.replace(str(check), str(path)) for p in problems
            if f"line {last_line}:" in p or f"line {last_line}," in p]
    if mine:
        raise MoelabError("the survey row would be invalid: " + "; ".join(mine))
    atomic_write_text(path, new_text)
