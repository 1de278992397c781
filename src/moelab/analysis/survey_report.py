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
from moelab.analysis import size
from moelab.analysis.size import SizeModel, SizePoint
from moelab.analysis.survey import held_out_models

def curve_points(model, accuracies, reasoning: bool, released=None) -> list:
    """Points along accuracy for drawing a size model: attempt rate at the fit's median, release
    date `released` (default: the fit's median), dense, an unseen developer."""
    pts = model.points_
    attempt = float(np.median([p.attempt_rate for p in pts if p.attempt_rate is not None] or [1.0]))
    if released is None:
        dates = sorted(p.released for p in pts if p.released is not None)
        released = dates[len(dates) // 2] if dates else None
    return [SizePoint("curve", "", None, None, float(a), float(a) / attempt if attempt else None,
                      attempt, reasoning, released) for a in accuracies]


def _year_fits(b) -> dict[int, SizeModel]:
    """The chosen candidate refitted on each release year's points alone (years with enough)."""
    out = {}
    for year in sorted({p.released.year for p in b.points if p.released is not None}):
        try:
            out[year] = SizeModel(b.selection.chosen.candidate).fit(
                [p for p in b.points if p.released is not None and p.released.year == year])
        except ValueError:
            continue
    return out


def survey_figure(b, rows) -> bytes:
    """Left: accuracy against total parameters, open models coloured by release year, the chosen
    size model refitted on each year's releases (non-reasoning mode; the drift the estimator must
    follow), the fit on every year with its 80% band, and closed models as horizontal bands over
    their estimated 80% range (clipped, with an arrow, past 100x the largest open model). Right:
    held-out error and 80% coverage against months ahead, the chosen model and the references."""
    points = [p for p in b.points if p.total_b is not None]
    lo, hi = b.selection.chosen.total_range_
    x_max = hi * 100
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1.6, 1]})
    ax = axes[0]
    years = sorted({p.released.year for p in points if p.released is not None})
    colours = dict(zip(years, plt.cm.viridis(np.linspace(0.1, 0.85, max(len(years), 1)))))
    accuracies = np.linspace(1, 70, 140)
    fits = _year_fits(b)
    for year in years:
        mine = [p for p in points if p.released is not None and p.released.year == year]
        ax.scatter([p.total_b for p in mine], [p.accuracy_pct for p in mine], s=18, color=colours[year], alpha=0.8,
                   label=f"open, released {year} ({len(mine)} points)", zorder=3)
        if year not in fits:
            continue
        model = fits[year]
        middle = sorted(p.released for p in mine)[len(mine) // 2]
        centre = model.predict(curve_points(model, accuracies, False, middle), known_developers=False)
        ax.plot(10**centre, accuracies, color=colours[year], lw=1.5, label=f"size model fitted on {year}'s releases")
    undated = [p for p in points if p.released is None]
    if undated:
        ax.scatter([p.total_b for p in undated], [p.accuracy_pct for p in undated], s=18, color="grey",
                   label="open, release date unknown", zorder=3)
    chosen = b.selection.chosen
    curve = curve_points(chosen, accuracies, False)
    centre = chosen.predict(curve, known_developers=False)
    band_lo, band_hi = chosen.predict_interval(curve, known_developers=False)
    ax.plot(10**centre, accuracies, color="black", lw=1, ls="--", label="chosen size model, all years (80% band)")
    ax.fill_betweenx(accuracies, 10**band_lo, 10**band_hi, color="black", alpha=0.07)
    for e in b.estimates:
        if not math.isfinite(e.estimate_b):
            continue
        if e.low_b < x_max:
            ax.plot([max(e.low_b, lo / 2), min(e.high_b, x_max)], [e.accuracy_pct] * 2, color="tab:orange", lw=2,
                    alpha=0.3)
        if e.high_b > x_max:
            ax.annotate("", xy=(x_max, e.accuracy_pct), xytext=(x_max / 2, e.accuracy_pct),
                        arrowprops=dict(arrowstyle="->", color="tab:orange", alpha=0.6))
    ax.plot([], [], color="tab:orange", lw=2, alpha=0.5, label="closed: estimated 80% range")
    ax.axvspan(hi, x_max, color="grey", alpha=0.06)
    shown = [p.accuracy_pct for p in points] + [e.accuracy_pct for e in b.estimates]
    ax.set_xscale("log")
    ax.set_xlim(lo / 2, x_max * 1.3)
    ax.set_ylim(min(shown) - 3, max(shown) + 3)
    ax.text(hi * 1.2, max(shown) + 2, "beyond open models:\nextrapolation", fontsize=8, color="grey", va="top")
    ax.set_xlabel("total parameters (B)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"{b.benchmark}: accuracy against total parameters", fontsize=10)
    _horizon_panel(axes[1], b)
    fig.tight_layout()
    return png(fig, dpi=100)


def _horizon_panel(ax, b) -> None:
    if b.selection.validation != "rolling origin":  # no release dates: nothing to plot against a horizon
        held = size.summarise(b.selection.forecasts, b.selection.chosen.scales)
        ax.axis("off")
        ax.text(0.5, 0.5, f"too few release dates for a rolling origin:\nvalidated by leaving one developer out\n"
                          f"median |error| {held['median_abs_error_decades']:.2f} decades, "
                          f"{held['coverage']:.0%} inside 80% intervals", ha="center", va="center", fontsize=9)
        return
    labels = [size.horizon_label(low, high).replace(" ahead", "") for low, high in size.HORIZON_BANDS]
    x = np.arange(len(labels))
    cover = ax.twinx()
    for (name, (_, scales, forecasts)), colour in zip(held_out_models(b.selection).items(), ("black", "tab:red", "tab:blue")):
        summary = size.by_horizon(forecasts, scales)
        chosen = name == "chosen"  # drawn wide and last: a reference with the same centre hides under it
        ax.plot(x, [v["median_abs_error_decades"] for v in summary.values()], "o-", color=colour,
                lw=3 if chosen else 1.2, alpha=0.5 if chosen else 1, zorder=1 if chosen else 2,
                label=f"{name}: median |error|")
        cover.plot(x, [v["coverage"] for v in summary.values()], "s--", color=colour, alpha=0.6,
                   label=f"{name}: 80% coverage")
    cover.axhspan(0.75, 0.85, color="tab:green", alpha=0.1)
    cover.set_ylim(0.4, 1.0)
    cover.set_ylabel("share of true sizes inside the 80% interval")
    ax.set_ylim(0, None)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_xlabel("months between the fit's data and the model's release")
    ax.set_ylabel("median |log10 error| (decades)")
    ax.grid(alpha=0.3)
    lines = ax.get_legend_handles_labels()
    more = cover.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower left")
    ax.set_title(f"{b.selection.validation}: error against horizon", fontsize=10)


def write_survey_report(results, rows, folder: str | Path) -> Path:
    """report.html (plots embedded, escaped tables) and one PNG per benchmark in `folder`."""
    folder = Path(folder)
    parts = ["<h1>moelab survey: knowledge against total and active parameters</h1>",
             "<p class=note>One point per open weights group (its best variant). Correlations on log10 "
             "parameter counts with 95% bootstrap intervals; size estimates with 80% calibration "
             "intervals from the size model chosen by rolling-origin error (fit on the models released before a "
             "month, predict the next three), calibrated so that 80% of held-out sizes fall inside at every "
             "horizon.</p>"]

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
        parts.append(table([f"size model ({b.selection.validation})", "median |error| (decades)", "within 2x",
                            "median signed error"],
                           [[r.candidate.name + (" (chosen)" if r.candidate == chosen.candidate else ""),
                             *((r.rolling if b.selection.validation == "rolling origin" else r.lodo)[k]
                               for k in ("median_abs_error_decades", "within_2x", "median_error_decades"))]
                            for r in sorted(b.selection.results, key=lambda r: r.score)]))
        rows_ = []
        for name, (_, scales, forecasts) in held_out_models(b.selection).items():
            for label, v in size.by_horizon(forecasts, scales).items():
                rows_.append([name, label, v["n"], v["median_abs_error_decades"], v["within_2x"], v["coverage"],
                              v["median_error_decades"]])
        parts.append(table(["size model", "horizon", "forecasts", "median |error|", "within 2x", "80% coverage",
                            "median signed error"], rows_))
        if b.estimates:
            parts.append(table(["closed model", "mode", "accuracy %", "estimate (B)", "80% low (B)",
                                 "80% high (B)", "months after the fit's data", "decades beyond open models"],
                                [[e.model, {True: "reasoning", False: "non-reasoning", None: "unknown"}[e.reasoning],
                                  e.accuracy_pct, e.estimate_b, e.low_b, e.high_b, e.months_ahead,
                                  e.extrapolation_decades]
                                 for e in sorted(b.estimates, key=lambda e: -e.accuracy_pct)]))
    return write_page(folder / "report.html", "moelab survey", parts)
