"""Run a probe: get answers from a backend for every sample (prompts.py), grade them, and write
per-sample JSONL and metrics (summary.py).

Output folder:
    probe.json     what was probed with what settings (a rerun must match it to resume)
    samples.jsonl  one graded answer per line, appended as answers arrive
    metrics.json   the metrics (written last, atomically)
A rerun with the same settings skips every sample already in samples.jsonl; samples whose backend
call failed are not written, so they are retried.

Composed questions answered by parts send each part after the same passages, and the question's
rule composes the answers (a part that is empty or abstains makes the whole an abstention). The
record's output tokens and prompt tokens are the parts' sums, and its `parts` hold each part's
output and grade. With "whole" the question's own text is sent instead, for models that read it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from moelab.errors import MoelabError
from moelab.io import atomic_write_json, atomic_write_text, json_safe
from moelab.probe.backends import Backend, Completion, Request
from moelab.probe.grading import JUDGE_PROMPT_SHA256, grade, is_abstention, judge_prompt, normalise, parse_judgement
from moelab.probe.prompts import ProbeSettings, Sample, build_samples, system_prompt
from moelab.probe.summary import summarise
from moelab.probe.tasks import Task
from moelab.provenance import environment

JUDGE_MAX_TOKENS = 16
CHUNK = 64  # samples per backend call: progress and resumable writes happen between chunks


def default_out(backend: Backend, task: Task) -> Path:
    """runs/probe-MODEL-TASK, with the model name reduced to safe file-name characters."""
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(backend.describe()["model"]))
    return Path("runs") / f"probe-{label}-{task.name}"


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
