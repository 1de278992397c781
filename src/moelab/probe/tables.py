"""Terminal tables for `moelab probe`: the grades and metrics, effort and accuracy by difficulty,
accuracy as the prompt grows, and closed book against full and selective context."""

from __future__ import annotations

from rich.table import Table

from moelab.analysis.fit import Estimate
from moelab.probe.metrics import level_order


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


def _tokens(m: dict, key: str) -> str:
    return Estimate.from_metrics(m, key).format(".1f")


def difficulty_table(m: dict) -> Table:
    effort = m.get("effort")
    title = "effort and accuracy by difficulty"
    if effort:
        title += (f": {effort['tokens_per_difficulty']:.2f} tokens more per level, rank correlation "
                  f"{Estimate.from_metrics(effort, 'rank_correlation').format('.2f')}")
    table = Table(title=title, title_justify="left")
    for name in ("difficulty", "n", "accuracy", "Omniscience Index", "abstained", "every part right",
                 "output tokens / question", "/ correct answer", "reasoning tokens / question"):
        table.add_column(name, justify="right")
    for level in sorted(m["by_difficulty"], key=level_order):
        row = m["by_difficulty"][level]
        table.add_row(level, str(row["n"]), _rate(row, "accuracy"), _rate(row, "omniscience_index", 1.0, ""),
                      str(row["not_attempted"]), _rate(row, "every_part_correct"),
                      _tokens(row, "output_tokens_per_question"), _tokens(row, "output_tokens_per_correct"),
                      _tokens(row, "reasoning_tokens_per_question"))
    return table


def selective_table(rows: list[dict]) -> Table:
    table = Table(title="closed book, full context and selective context on the same questions", title_justify="left")
    for name in ("context (words)", "closed book", "full", "selective", "words sent: full / selective",
                 "tokens out: full / selective", "needle retrieved", "lost accuracy recovered"):
        table.add_column(name, justify="right")
    show = lambda x, f: "n/a" if x is None else format(x, f)  # noqa: E731
    for r in rows:
        cells = [_rate(r[mode], "accuracy") if r[mode] else "n/a" for mode in ("closed", "full", "selective")]
        sent = f"{show(r['full'] and r['full']['prompt_words'], '.0f')} / {r['selective']['prompt_words']:.0f}"
        out = f"{show(r['full'] and r['full']['output_tokens'], '.1f')} / {r['selective']['output_tokens']:.1f}"
        recovered = Estimate.from_metrics(r, "recovered").format(".0f", 100, "%")
        table.add_row(str(r["context_words"]), *cells, sent, out, show(r["hit_rate"], ".0%"), recovered)
    return table
