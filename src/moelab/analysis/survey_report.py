"""The survey's report: one figure per benchmark (accuracy against total and active parameters,
the chosen fit with its 80% band, closed models as bands over their estimated range) and tables
of attribution, validation and estimates.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from moelab.analysis.html import estimate_cells, img, png, save_png, table, write_page
from moelab.analysis.size import SizePoint
from moelab.analysis.survey import fit_points

def curve_points(model, accuracies, reasoning: bool) -> list:
    """Points along accuracy for drawing a size model: attempt rate and release date at the fit's
    medians, dense (active = total), an unseen developer."""
    pts = model.points_
    attempt = float(np.median([p.attempt_rate for p in pts if p.attempt_rate is not None] or [1.0]))
    dates = sorted(p.released for p in pts if p.released is not None)
    released = dates[len(dates) // 2] if dates else None
    return [SizePoint("curve", "", 1.0, 1.0, float(a), float(a) / attempt if attempt else None,
                      attempt, reasoning, released) for a in accuracies]


def survey_figure(b, rows) -> bytes:
    """Accuracy vs total and vs active parameters for one benchmark: open models as points (dense
    circles, MoE triangles), the fit with its 80% prediction band, closed models as horizontal
    bands over their estimated 80% range (clipped, with an arrow, past 100x the largest open model)."""
    points = fit_points(rows, b.benchmark, by_reasoning=False)
    lo = min(p.total_b for p in points)
    hi = max(p.total_b for p in points)
    x_max = hi * 100
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, key, label in ((axes[0], "total_b", "total parameters (B)"), (axes[1], "active_b", "active parameters (B)")):
        for is_moe, marker, name in ((False, "o", "open dense"), (True, "^", "open MoE")):
            sel = [p for p in points if p.is_moe == is_moe and getattr(p, key) is not None]
            ax.scatter([getattr(p, key) for p in sel], [p.accuracy_pct for p in sel], marker=marker, s=30,
                       facecolors="none" if not is_moe else "tab:blue", edgecolors="black" if not is_moe else "tab:blue",
                       label=name, zorder=3)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.xaxis.set_minor_formatter(NullFormatter())
    grid = np.logspace(math.log10(lo) - 0.3, math.log10(x_max), 200)
    chosen = b.selection.chosen
    accuracies = np.linspace(1, 70, 140)
    for reasoning in (False, True) if chosen.candidate.reasoning else (False,):
        curve = curve_points(chosen, accuracies, reasoning)
        centre = chosen.predict(curve, known_developers=False)
        band_lo, band_hi = chosen.predict_interval(curve, known_developers=False)
        colour = "tab:red" if reasoning else "tab:grey"
        name = f"size model{' (reasoning)' if reasoning else ''}, other covariates at their medians"
        axes[0].plot(10**centre, accuracies, color=colour, lw=1.2, label=name)
        axes[0].fill_betweenx(accuracies, 10**band_lo, 10**band_hi, color=colour, alpha=0.12)
    for e in b.estimates:
        if not math.isfinite(e.estimate_b):
            continue
        if e.low_b < x_max:  # the part of the range inside the plot
            left, right = max(e.low_b, grid[0]), min(e.high_b, x_max)
            axes[0].plot([left, right], [e.accuracy_pct] * 2, color="tab:orange", lw=2, alpha=0.35)
        if e.high_b > x_max:
            axes[0].annotate("", xy=(x_max, e.accuracy_pct), xytext=(x_max / 2, e.accuracy_pct),
                             arrowprops=dict(arrowstyle="->", color="tab:orange", alpha=0.6))
    axes[0].plot([], [], color="tab:orange", lw=2, alpha=0.5, label="closed: estimated 80% range")
    axes[0].axvspan(hi, x_max, color="grey", alpha=0.06)
    axes[0].set_xlim(grid[0], x_max * 1.3)
    shown = [p.accuracy_pct for p in points] + [e.accuracy_pct for e in b.estimates]
    axes[0].set_ylim(min(shown) - 5, max(shown) + 3)
    axes[0].text(hi * 1.2, max(shown) + 2, "beyond open models:\nextrapolation", fontsize=8, color="grey", va="top")
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{b.benchmark}: accuracy against total and active parameters", fontsize=12)
    fig.tight_layout()
    return png(fig, dpi=100)


def write_survey_report(results, rows, folder: str | Path) -> Path:
    """report.html (plots embedded, escaped tables) and one PNG per benchmark in `folder`."""
    folder = Path(folder)
    parts = ["<h1>moelab survey: knowledge against total and active parameters</h1>",
             "<p class=note>One point per open weights group (its best variant). Correlations on log10 "
             "parameter counts with 95% bootstrap intervals; size estimates with 80% calibration "
             "intervals from the fit chosen by leave-one-developer-out error.</p>"]

    for b in results:
        if b.selection is None:
            parts.append(f"<h2>{html.escape(b.benchmark)}</h2><p class=note>{html.escape(b.note)}</p>")
            continue
        figure = survey_figure(b, rows)
        name = "".join(c if c.isalnum() else "_" for c in b.benchmark) + ".png"
        save_png(folder, name, figure)
        parts.append(f"<h2>{html.escape(b.benchmark)}</h2>")
        parts.append(img(figure, b.benchmark))
        parts.append(table(["models", "groups", "r(total)", "low", "high", "r(active)", "low", "high",
                             "partial r(total|active)", "low", "high", "gamma", "low", "high"],
                            [[a.subset, a.n_groups, *(c for k in ("r_total", "r_active", "partial_total", "gamma")
                                                      for c in estimate_cells(a.stats.get(k)))] for a in b.attribution]))
        chosen = b.selection.chosen
        parts.append(table(["size model", "LODO median |error| (decades)", "LODO within 2x", "LODO 80% coverage",
                            "time-split median |error|", "time-split within 2x", "time-split 80% coverage"],
                           [[r.candidate.name + (" (used)" if r.candidate == chosen.candidate else ""),
                             r.lodo["median_abs_error_decades"], r.lodo["within_2x"], r.lodo["coverage"],
                             r.time["median_abs_error_decades"], r.time["within_2x"], r.time["coverage"]]
                            for r in sorted(b.selection.results, key=lambda r: r.score)]))
        if b.estimates:
            parts.append(table(["closed model", "variant", "accuracy %", "estimate (B)", "80% low (B)",
                                 "80% high (B)", "decades beyond open models"],
                                [[e.model, e.variant.split(";")[0], e.accuracy_pct, e.estimate_b, e.low_b,
                                  e.high_b, e.extrapolation_decades]
                                 for e in sorted(b.estimates, key=lambda e: -e.accuracy_pct)]))
    return write_page(folder / "report.html", "moelab survey", parts)
