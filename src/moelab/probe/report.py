"""The probe's report: grade counts, every metric with its interval, tokens, accuracy by domain,
and accuracy as the prompt grows (context_rot.png when several lengths were probed).
"""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from moelab.analysis.fit import Estimate
from moelab.analysis.html import estimate_cells, img, png, save_png, table, write_page

def context_rot_figure(rot: list[dict]) -> bytes:
    """Accuracy against prompt length, one line per needle depth, with 95% Wilson intervals."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    for depth in sorted({r["depth"] for r in rot}, key=lambda d: (d is None, d or 0)):
        rows = sorted((r for r in rot if r["depth"] == depth), key=lambda r: r["context_words"])
        x = np.array([r["prompt_words"] for r in rows])
        y = np.array([r["accuracy"] for r in rows])
        err = np.abs(np.array([r["accuracy_interval"] for r in rows]).T - y)
        label = "no needle placed (all questions at 0 words)" if depth is None else f"needle at depth {depth:g}"
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("prompt length (words)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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
    shortest = [s for s in samples if s["context_words"] == metrics["context_words"]][:50]
    parts.append(f"<h2>First {len(shortest)} answers</h2>")
    parts.append(table(["id", "question", "gold", "output", "grade"],
                        [[s["id"], s["question"], "(abstain)" if s["answer"] is None else s["answer"],
                          s["output"], s["grade"]] for s in shortest]))
    return write_page(folder / "report.html", title, parts)
