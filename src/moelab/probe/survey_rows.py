"""A probe's result as a row of the survey's CSV (`--survey-row`), checked by the survey's own loader."""

from __future__ import annotations

import csv
import datetime
import io
from pathlib import Path

from moelab.analysis.survey import COLUMNS, parse_rows
from moelab.errors import MoelabError
from moelab.io import atomic_write_text

SURVEY_BENCHMARK = "moelab-probe"


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
