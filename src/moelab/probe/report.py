"""The probe's report: grade counts, every metric with its interval, tokens, accuracy by domain,
tokens and accuracy by difficulty (difficulty.png when questions carry two or more levels),
accuracy as the prompt grows (context_rot.png when several lengths were probed), and closed book
against full and selective context.
"""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from moelab.analysis.fit import Estimate
from moelab.analysis.html import estimate_cells, img, png, save_png, table, write_page
from moelab.probe.metrics import level_order

def context_rot_figure(rot: list[dict]) -> bytes:
    """Accuracy against prompt length with 95% Wilson intervals: the closed-book point (every
    question at 0 words), one line per needle depth, and one for the questions that have no passage
    to find (invented people, padded all the same); three kinds of series, never joined."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    series = [("closed book (0 words, all questions)", [r for r in rot if r["context_words"] == 0])]
    series += [(f"needle at depth {depth:g}", [r for r in rot if r["depth"] == depth and r["context_words"] > 0])
               for depth in sorted({r["depth"] for r in rot if r["depth"] is not None})]
    series.append(("no passage to find (invented people)",
                   [r for r in rot if r["depth"] is None and r["context_words"] > 0]))
    for label, rows in series:
        if not rows:
            continue
        rows = sorted(rows, key=lambda r: r["context_words"])
        x = np.array([r["prompt_words"] for r in rows])
        y = np.array([r["accuracy"] for r in rows])
        err = np.abs(np.array([r["accuracy_interval"] for r in rows]).T - y)
        ax.errorbar(x, y, yerr=err, marker="s" if label.startswith("closed") else "o", capsize=3, label=label,
                    linestyle=":" if label.startswith("no passage") else "-")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("prompt length (words)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig, dpi=120)


def difficulty_figure(levels: dict[str, dict]) -> bytes:
    """Output tokens per question (left axis) and accuracy (right axis) by difficulty level, with
    95% intervals (bootstrap for tokens, Wilson for accuracy)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    names = list(levels)
    x = np.arange(len(names))
    tokens = np.array([levels[n]["output_tokens_per_question"] for n in names], dtype=float)
    low_high = np.array([levels[n].get("output_tokens_per_question_interval", [np.nan, np.nan]) for n in names]).T
    ax.errorbar(x, tokens, yerr=np.abs(low_high - tokens), marker="o", capsize=3, color="tab:blue")
    ax.set_ylabel("output tokens per question", color="tab:blue")
    ax.set_xticks(x, names)
    ax.set_xlabel("difficulty")
    right = ax.twinx()
    accuracy = np.array([levels[n]["accuracy"] for n in names])
    interval = np.array([levels[n]["accuracy_interval"] for n in names]).T
    right.errorbar(x + 0.05, accuracy, yerr=np.abs(interval - accuracy), marker="s", capsize=3, color="tab:orange")
    right.set_ylabel("accuracy", color="tab:orange")
    right.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    return png(fig, dpi=120)


def write_probe_report(metrics: dict, samples: list[dict], folder: str | Path) -> Path:
    """report.html for a probe (and context_rot.png when several lengths were probed)."""
    folder = Path(folder)

    title = f"moelab probe: {metrics['model']} on {metrics['task']}"
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class=note>{metrics['n']} questions at {metrics['context_words']} words of context, graded "
             f"{html.escape(metrics['grader'])}; {metrics['errors']} backend errors, "
             f"{metrics['judge_parse_failures']} judge replies unparsed. Intervals: 95% (Wilson for rates, "
             "from its components for the Omniscience Index, bootstrap for the F-score).</p>",
             table(["grade", "count"], [[g.replace("_", " "), metrics[g]]
                                         for g in ("correct", "incorrect", "partial", "not_attempted")])]
    keys = ("accuracy", "omniscience_index", "hallucination_rate", "attempted_rate", "accuracy_given_attempted",
            "f_score")
    parts.append(table(["metric", "value", "95% low", "95% high"],
                       [[key.replace("_", " "), *estimate_cells(Estimate.from_metrics(metrics, key))] for key in keys]))
    parts.append(table(["output tokens per question", "per correct answer", "reasoning tokens per question"],
                        [[metrics.get("output_tokens_per_question") or "n/a",
                          metrics.get("output_tokens_per_correct") or "n/a",
                          metrics.get("reasoning_tokens_per_question") or "not reported"]]))
    if len(metrics["by_domain"]) > 1:
        parts.append("<h2>By domain</h2>")
        parts.append(table(["domain", "n", "accuracy", "omniscience index", "hallucination rate"],
                            [[d, m["n"], m["accuracy"], m["omniscience_index"],
                              "n/a" if m["hallucination_rate"] is None else m["hallucination_rate"]]
                             for d, m in metrics["by_domain"].items()]))
    levels = {level: metrics["by_difficulty"][level] for level in sorted(metrics.get("by_difficulty") or {}, key=level_order)}
    if len(levels) > 1:
        figure = difficulty_figure(levels)
        save_png(folder, "difficulty.png", figure)
        parts.append("<h2>Effort and accuracy by difficulty</h2>")
        parts.append(img(figure, "output tokens and accuracy by difficulty"))
        parts.append(table(["difficulty", "n", "accuracy", "95% low", "95% high", "omniscience index",
                            "every part right", "output tokens per question", "95% low", "95% high",
                            "per correct answer", "reasoning tokens per question"],
                           [[level, m["n"], m["accuracy"], *m["accuracy_interval"], m["omniscience_index"],
                             Estimate.from_metrics(m, "every_part_correct").format(".3f"),
                             m["output_tokens_per_question"], *m.get("output_tokens_per_question_interval", ["n/a", "n/a"]),
                             "n/a" if m["output_tokens_per_correct"] != m["output_tokens_per_correct"] else m["output_tokens_per_correct"],
                             m["reasoning_tokens_per_question"] or "not reported"] for level, m in levels.items()]))
        if any(s.get("parts") for s in samples):
            parts.append("<p class=note>Composed questions were answered by parts: each fact was asked in the "
                         "model's own format and the question's rule composed the answers, so their tokens "
                         "grow with the number of facts by construction. 'Every part right' is the share of "
                         "the answerable ones whose every fact was recalled; the rest of their accuracy is a "
                         "comparison won with a fact wrong (chance alone wins 1/2 with two people, 1/3 with "
                         "three).</p>")
        effort = metrics.get("effort")
        if effort:
            parts.append(f"<p class=note>Over {effort['questions']} questions: "
                         f"{effort['tokens_per_difficulty']:.3g} tokens (output and reasoning) more per step of "
                         f"difficulty [{effort['tokens_per_difficulty_interval'][0]:.3g}, "
                         f"{effort['tokens_per_difficulty_interval'][1]:.3g}]; rank correlation of tokens with "
                         f"difficulty {effort['rank_correlation']:.2f} [{effort['rank_correlation_interval'][0]:.2f}, "
                         f"{effort['rank_correlation_interval'][1]:.2f}] (bootstrap, 95%).</p>")
    rot = metrics["context_rot"]
    if len({r["context_words"] for r in rot}) > 1:
        figure = context_rot_figure(rot)
        save_png(folder, "context_rot.png", figure)
        parts.append("<h2>Accuracy as the prompt grows</h2>")
        parts.append(img(figure, "accuracy against prompt length"))
        parts.append(table(["context (words)", "needle depth", "n", "accuracy", "95% low", "95% high",
                             "ratio to shortest"],
                            [[r["context_words"], "none" if r["depth"] is None else r["depth"], r["n"],
                              r["accuracy"], *r["accuracy_interval"],
                              "n/a" if r["ratio_to_shortest"] is None else r["ratio_to_shortest"]] for r in rot]))
    chosen = metrics.get("selective_context")
    if chosen:
        parts.append("<h2>Selective context: only the passages BM25 ranks highest</h2>")
        cell = lambda row, mode, key: "n/a" if row[mode] is None or row[mode][key] is None else row[mode][key]  # noqa: E731
        parts.append(table(["context (words)", "closed book accuracy", "full accuracy", "selective accuracy",
                            "95% low", "95% high", "words sent: full", "selective", "tokens generated: full",
                            "selective", "needle retrieved", "share of the lost accuracy recovered"],
                           [[r["context_words"], cell(r, "closed", "accuracy"), cell(r, "full", "accuracy"),
                             r["selective"]["accuracy"], *r["selective"]["accuracy_interval"],
                             cell(r, "full", "prompt_words"), r["selective"]["prompt_words"],
                             cell(r, "full", "output_tokens"), r["selective"]["output_tokens"],
                             "n/a" if r["hit_rate"] is None else r["hit_rate"],
                             Estimate.from_metrics(r, "recovered").format(".2f")] for r in chosen]))
    shortest = [s for s in samples if s["context_words"] == metrics["context_words"]][:50]
    parts.append(f"<h2>First {len(shortest)} answers</h2>")
    parts.append(table(["id", "question", "gold", "output", "grade"],
                        [[s["id"], s["question"], "(abstain)" if s["answer"] is None else s["answer"],
                          s["output"], s["grade"]] for s in shortest]))
    return write_page(folder / "report.html", title, parts)
