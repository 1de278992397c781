"""Terminal tables for `moelab probe`: the grades and metrics, and accuracy as the prompt grows."""

from __future__ import annotations

from rich.table import Table

from moelab.analysis.fit import Estimate


def _rate(m: dict, key: str, scale: float = 100.0, unit: str = "%") -> str:
    return Estimate.from_metrics(m, key).format(".1f", scale, unit)


def probe_table(m: dict) -> Table:
    table = Table(title=f"{m['model']} on {m['task']}: {m['n']} questions (95% intervals)",
                  show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("correct / incorrect / partial / not attempted",
         f"{m['correct']} / {m['incorrect']} / {m['partial']} / {m['not_attempted']}"),
        ("accuracy", _rate(m, "accuracy")),
        ("Omniscience Index", _rate(m, "omniscience_index", 1.0, "")),
        ("hallucination rate", _rate(m, "hallucination_rate")),
        ("accuracy given attempted", _rate(m, "accuracy_given_attempted")),
        ("F-score", _rate(m, "f_score")),
        ("output tokens per question", f"{m['output_tokens_per_question']:.1f}"),
        ("grader", f"{m['grader']} ({m['judge_parse_failures']} unparsed), {m['errors']} backend errors"),
    ]
    if m.get("unanswerable"):
        rows.insert(2, ("abstained on invented questions", _rate(m["unanswerable"], "accuracy")))
    for row in rows:
        table.add_row(*row)
    return table


def context_rot_table(rot: list[dict]) -> Table:
    table = Table(title="accuracy as the prompt grows", title_justify="left")
    for name in ("context (words)", "needle depth", "n", "accuracy", "ratio to shortest"):
        table.add_column(name, justify="right")
    for r in rot:
        table.add_row(str(r["context_words"]), "none" if r["depth"] is None else f"{r['depth']:g}", str(r["n"]),
                      _rate(r, "accuracy"), "n/a" if r["ratio_to_shortest"] is None else f"{r['ratio_to_shortest']:.2f}")
    return table
