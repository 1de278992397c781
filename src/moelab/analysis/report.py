"""The sweep report: `runs.csv`, `headline.png` and `report.html` (plots embedded, text escaped).

Headline figure: knowledge stored (bits) and recall against P_total and against P_active on log
axes, dense and MoE marked apart, each panel with its log-log fit and Pearson correlation (95%
bootstrap interval). The summary adds partial correlations: does total explain bits once active
is known, and the reverse?
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter  # noqa: E402

from moelab.analysis import science  # noqa: E402
from moelab.analysis.fit import (  # noqa: E402
    Estimate, LogLinearFit, partial_correlation, pearson, support_problem,
)
from moelab.io import atomic_write, atomic_write_text  # noqa: E402

COLUMNS = ["label", "status", "n_experts", "top_k", "expert_width", "granularity", "p_total", "p_active",
           "active_fraction", "bits", "information_bits", "bits_per_param", "bits_per_active_param", "accuracy",
           "max_violation", "dead_experts", "exposures", "steps", "seed", "wall_seconds", "reason", "key"]


def flatten_run(row: dict) -> dict:
    """One store row as a flat record of the report's columns (metrics empty for unfinished runs)."""
    m = row["metrics"] or {}
    routing = m.get("routing", [])
    record = {"label": row["label"], "status": row["status"], "reason": row["reason"] or "", "key": row["key"]}
    for column in COLUMNS:
        if column not in record:
            record[column] = m.get(column, "")
    if routing:
        record["max_violation"] = max(r["max_violation"] for r in routing)
        record["dead_experts"] = sum(r["dead_experts"] for r in routing)
    record["history"] = m.get("history", [])  # for the figures; not a CSV column
    data = m.get("config", {}).get("data", {})
    record["junk_fraction"], record["domain_token"] = data.get("junk_fraction", 0.0), data.get("domain_token", False)
    return record


def _fit_text(x, y, log_y: bool, x_name: str) -> tuple[LogLinearFit | None, str]:
    """Fit y (or log10 y) against log10 x and describe slope and Pearson r with intervals, or say
    why the runs cannot support a fit."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = y > 0 if log_y else np.isfinite(y)
    problem = support_problem(x[keep], x_name)
    if problem is not None:
        return None, f"no fit: {problem}"
    target = np.log10(y[keep]) if log_y else y[keep]
    fit = LogLinearFit().fit(x[keep], target)
    r = pearson(np.log10(x[keep]), target, n_boot=1000)
    slope = fit.slope_interval()
    kind = "log-log slope" if log_y else "change per decade"
    return fit, f"{kind} {slope}\nPearson r {r}"


def headline_figure(records: list[dict]) -> bytes:
    done = [r for r in records if r["status"] == "done"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5), sharey="row")
    experts = sorted({r["n_experts"] for r in done if r["n_experts"]})
    cmap = plt.get_cmap("viridis")
    for col, (x_key, x_label) in enumerate([("p_total", "total parameters"), ("p_active", "active parameters")]):
        for row, (y_key, y_label, log_y) in enumerate([("bits", "knowledge stored (bits)", True),
                                                        ("accuracy", "recall accuracy", False)]):
            ax = axes[row, col]
            if log_y and any(r[y_key] <= 0 for r in done):
                log_y = False  # a run stored <= 0 bits (never clipped): a log axis cannot show it
                y_label += " (linear: some runs <= 0)"
            dense = [r for r in done if not r["n_experts"]]
            ax.scatter([r[x_key] for r in dense], [r[y_key] for r in dense], marker="o", s=50,
                       facecolors="none", edgecolors="black", label="dense")
            for i, e in enumerate(experts):
                runs = [r for r in done if r["n_experts"] == e]
                colour = cmap(i / max(1, len(experts) - 1))
                for k in sorted({r["top_k"] for r in runs}):
                    sel = [r for r in runs if r["top_k"] == k]
                    ax.scatter([r[x_key] for r in sel], [r[y_key] for r in sel], s=55, color=colour,
                               marker="^" if k == 1 else "s", label=f"MoE E={e} k={k}")
            fit, text = _fit_text([r[x_key] for r in done], [r[y_key] for r in done], log_y, x_label)
            if fit is not None:
                grid = np.logspace(math.log10(min(r[x_key] for r in done)),
                                   math.log10(max(r[x_key] for r in done)), 50)
                line = fit.predict(grid)
                ax.plot(grid, 10**line if log_y else line, color="grey", lw=1, ls="--")
            ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top", fontsize=8,
                    bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
            ax.set_xscale("log")
            axes_to_label = [ax.xaxis]
            if log_y:
                ax.set_yscale("log")
                axes_to_label.append(ax.yaxis)
            for axis in axes_to_label:  # lab ranges span about a decade: label 1-2-5 ticks as 50k, 100k
                axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                axis.set_major_formatter(EngFormatter(sep=""))
                axis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(x_label)
            if col == 0:
                ax.set_ylabel(y_label)
            ax.grid(alpha=0.3, which="both")
    axes[0, 1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Knowledge follows total or active parameters?", fontsize=13)
    fig.tight_layout()
    return _png(fig, dpi=110)


def attribution(records: list[dict]) -> tuple[dict[str, Estimate], list[str]]:
    """Correlations of log10 bits with log10 P_total and log10 P_active, raw and partial, and the
    reasons for those the runs cannot support (too few or too close parameter counts, or total
    and active equal in every run, as in a dense-only sweep)."""
    done = [r for r in records if r["status"] == "done" and r["bits"] > 0]
    counts = {name: np.array([r[key] for r in done], float)
              for name, key in (("P_total", "p_total"), ("P_active", "p_active"))}
    problems = {name: support_problem(x, f"{name} values") for name, x in counts.items()}
    out, notes = {}, [f"r(bits, {name}) not shown: {p}" for name, p in problems.items() if p]
    if not done:
        return out, notes
    bits = np.log10([r["bits"] for r in done])
    total, active = np.log10(counts["P_total"]), np.log10(counts["P_active"])
    for name, x in (("P_total", total), ("P_active", active)):
        if problems[name] is None:
            out[f"r(bits, {name})"] = pearson(x, bits)
    if problems["P_total"] is None and problems["P_active"] is None:
        if np.allclose(total, active):
            notes.append("partial correlations not shown: total and active parameters are equal in every run")
        else:
            out["partial r(bits, P_total | P_active)"] = partial_correlation(total, bits, active)
            out["partial r(bits, P_active | P_total)"] = partial_correlation(active, bits, total)
    return out, notes


def _png(fig, dpi: int) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def _save_png(folder: Path, name: str, png: bytes) -> None:
    atomic_write(folder / name, lambda tmp: Path(tmp).write_bytes(png))


def _yerr(e: Estimate) -> list | None:
    """matplotlib's asymmetric error bar for an estimate; None when it has no interval."""
    return None if math.isnan(e.low) else [[e.value - e.low], [e.high - e.value]]


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _page(title: str, parts: list[str]) -> str:
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{padding:3px 8px;border-bottom:1px solid #ddd;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.note{color:#555;font-size:13px}"""


def write_report(rows: list[dict], folder: str | Path, title: str, description: str = "") -> Path:
    """Write runs.csv, headline.png and report.html for these store rows; returns the HTML path."""
    folder = Path(folder)
    records = sorted((flatten_run(r) for r in rows), key=lambda r: (r["p_total"] or 0, r["label"]))

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(records)

    atomic_write(folder / "runs.csv", write_csv)
    done = [r for r in records if r["status"] == "done"]
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if description:
        parts.append(f"<p>{html.escape(description)}</p>")
    parts.append(f"<p class=note>{len(done)} of {len(records)} runs done. Bits: Allen-Zhu &amp; Li's "
                 "estimator from summed span losses under the full softmax (a lower bound). Intervals: "
                 "95% bootstrap.</p>")
    knowledge = science.knowledge_runs(records)
    exposures = [r["exposures"] for r in knowledge]
    if len(set(exposures)) > 1:  # size fits compare runs trained alike: keep the most common exposures
        modal = max(set(exposures), key=exposures.count)
        knowledge = [r for r in knowledge if r["exposures"] == modal]
        parts.append(f"<p class=note>The figure and fits below use the {len(knowledge)} runs at {modal} "
                     "exposures; the exposures section shows the rest.</p>")
    if len(knowledge) >= 2:
        png = headline_figure(knowledge)
        _save_png(folder, "headline.png", png)
        parts.append(_img(png, "headline figure"))
    stats, notes = attribution(knowledge)
    if stats or notes:
        parts.append("<h2>Which parameter count explains the knowledge stored?</h2>")
    if stats:
        parts.append(_table(["statistic (log10 scales)", "value", "95% low", "95% high"],
                            [[k, v.value, v.low, v.high] for k, v in stats.items()]))
    parts += [f"<p class=note>{html.escape(note)}</p>" for note in notes]
    parts += science_sections(records, folder)
    parts.append("<h2>Runs</h2>")
    headers = ["run", "E", "k", "expert width", "P_total", "P_active", "active fraction", "bits",
               "bits/param", "bits/active param", "recall", "time (s)", "status"]
    parts.append(_table(headers, [[r["label"], r["n_experts"], r["top_k"], r["expert_width"], r["p_total"],
                                   r["p_active"], r["active_fraction"], r["bits"], r["bits_per_param"],
                                   r["bits_per_active_param"], r["accuracy"], r["wall_seconds"],
                                   r["status"] + (f": {r['reason']}" if r["reason"] else "")]
                                  for r in records]))
    routing = []
    for row in rows:
        for layer in (row["metrics"] or {}).get("routing", []):
            routing.append([row["label"], layer["layer"], layer["max_violation"], layer["dead_experts"],
                            layer["router_entropy"], " ".join(f"{x:.2f}" for x in layer["load"])])
    if routing:
        parts.append("<h2>Routing diagnostics (per MoE layer, on 1,024 training paragraphs)</h2>")
        parts.append(_table(["run", "layer", "max violation", "dead experts", "router entropy", "load share"],
                            routing))
    provenance = sorted({(str(m.get("git_commit")), m.get("versions", {}).get("torch", ""), m.get("device", ""))
                         for r in rows if (m := r["metrics"])})
    if provenance:
        parts.append("<h2>Provenance</h2>")
        parts.append(_table(["git commit", "torch", "device"], [list(p) for p in provenance]))
    atomic_write_text(folder / "report.html", _page(title, parts))
    return folder / "report.html"


def _est(e: Estimate) -> list:
    return [e.value, "n/a" if math.isnan(e.low) else e.low, "n/a" if math.isnan(e.high) else e.high]


def frontier_figure(f: science.Frontier) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    ax.plot(*zip(*f.curve), color="black", lw=1, label="frontier (best configuration per sparsity)")
    on_frontier = {fraction for fraction, _ in f.curve}
    for p in [None, *f.points]:  # None: the dense point
        x, e = (1.0, Estimate(1.0, math.nan, math.nan, 0.95)) if p is None else (p.active_fraction, p.ratio)
        ax.errorbar(x, e.value, yerr=_yerr(e), marker="o", capsize=3, color="black", linestyle="none",
                    markerfacecolor="black" if x in on_frontier else "white")
        if p is not None:
            ax.annotate(p.label, (x, e.value), fontsize=7, xytext=(4, 4), textcoords="offset points")
    for level, colour in ((0.9, "tab:orange"), (0.5, "tab:red")):
        ax.axhline(level, color=colour, ls="--", lw=1, label=f"{level:.0%} of dense")
        k = f.knees.get(level)
        if k is not None and not math.isnan(k.value):
            ax.axvline(k.value, color=colour, ls=":", lw=1)
            if not math.isnan(k.low):
                ax.axvspan(k.low, k.high, color=colour, alpha=0.12)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("active fraction (sparser to the right)")
    ax.set_ylabel("bits per total parameter / dense")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _png(fig, dpi=110)


def exposures_figure(rows: list[dict]) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.plot([r["exposures"] for r in rows], [r["bits_per_param"] for r in rows], marker="o", color="black")
    ax.axhline(2.0, color="tab:green", ls="--", lw=1, label="2 bits/param (paper, 1000 exposures)")
    ax.axhline(1.0, color="tab:blue", ls="--", lw=1, label="1 bit/param (paper, 100 exposures)")
    ax.set_xscale("log")
    ax.set_xlabel("exposures per person")
    ax.set_ylabel("bits per parameter")
    ax.set_title(f"dense model, {rows[0]['p_total']:,} parameters", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _png(fig, dpi=110)


def violation_figure(records: list[dict]) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    labels = sorted({science.group_label(r["label"]) for r in records})
    cmap = plt.get_cmap("tab10")
    labelled = set()
    for r in records:
        points = [(h["step"], h["max_violation"]) for h in r["history"] if "max_violation" in h]
        group = science.group_label(r["label"])
        i = labels.index(group)
        ax.plot(*zip(*points), color=cmap(i % 10), lw=1, alpha=0.8, label=None if group in labelled else group)
        labelled.add(group)  # one legend entry per configuration, however many seeds
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("max load violation (max load / mean - 1)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _png(fig, dpi=110)


def junk_figure(rows: list[dict]) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    fractions = sorted({r["junk_fraction"] for r in rows})
    for offset, token, colour in ((-0.15, False, "grey"), (0.15, True, "tab:blue")):
        sel = {r["junk_fraction"]: r["bits"] for r in rows if r["domain_token"] == token}
        xs = [i + offset for i, f in enumerate(fractions) if f in sel]
        ax.bar(xs, [sel[f] for f in fractions if f in sel], width=0.3, color=colour,
               label="with <useful> token" if token else "no token")
    ax.set_xticks(range(len(fractions)), [f"{f:.0%} junk" for f in fractions])
    ax.set_ylabel("bits of the useful knowledge stored")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _png(fig, dpi=110)


def reasoning_figure(groups: list[science.Group]) -> bytes:
    """Accuracy (seed mean and t interval) against active and against total parameters, one colour
    per configuration (a legend, since MoE points sit on top of dense ones in the active panel)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True, layout="constrained")
    colours = plt.get_cmap("tab10")
    for ax, key, name in ((axes[0], "p_active", "active parameters"), (axes[1], "p_total", "total parameters")):
        for i, g in enumerate(groups):
            e = g.interval("accuracy")
            ax.errorbar(g.mean(key), e.value, yerr=_yerr(e), marker="^" if g.runs[0]["n_experts"] else "o",
                        capsize=3, color=colours(i % 10), label=g.label, linestyle="none")
        ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("held-out accuracy (reasoning task)")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return _png(fig, dpi=110)


def science_sections(records: list[dict], folder: Path) -> list[str]:
    """Report sections for what a sweep varies: seeds, a fixed-total frontier, exposures, load
    balance over training, a reasoning task."""
    parts = []
    knowledge = science.knowledge_runs(records)
    configurations = science.groups(knowledge)
    if any(len(g.runs) > 1 for g in configurations):
        parts.append("<h2>Pooled over seeds (mean and 95% t interval)</h2>")
        parts.append(_table(["configuration", "seeds", "P_total", "active fraction", "bits", "low", "high",
                             "bits/param", "recall", "low", "high"],
                            [[g.label, len(g.runs), g.mean("p_total"), g.mean("active_fraction"),
                              *_est(g.interval("bits")), g.mean("bits_per_param"), *_est(g.interval("accuracy"))]
                             for g in configurations]))
    f = science.frontier(records)
    if f is not None:
        _save_png(folder, "frontier.png", png := frontier_figure(f))
        parts.append("<h2>Sparsity frontier at fixed total parameters</h2>")
        parts.append(_img(png, "bits per total parameter relative to dense against active fraction"))
        parts.append(_table(["knee (ratio to dense)", "active fraction", "95% low", "95% high"],
                            [[f"{level:.0%}", *_est(k)] for level, k in f.knees.items()]))
        parts.append(f"<p class=note>Dense: {f.dense_bits_per_param.value:.3f} bits/param "
                     f"(95% interval {f.dense_bits_per_param.low:.3f} to {f.dense_bits_per_param.high:.3f}). "
                     f"A knee of n/a was not reached down to the sparsest configuration measured "
                     f"({f.smallest_fraction:.1%} active); an interval of n/a means some seed resamples "
                     "never cross that level.</p>")
        parts.append(_table(["configuration", "active fraction", "seeds", "bits/param vs dense", "low", "high"],
                            [[p.label, p.active_fraction, p.n_seeds, *_est(p.ratio)] for p in f.points]))
    exposures = science.exposure_table(records)
    if exposures:
        _save_png(folder, "exposures.png", png := exposures_figure(exposures))
        parts.append("<h2>Bits per parameter against exposures</h2>")
        parts.append(_img(png, "bits per parameter against exposures"))
        parts.append(_table(["exposures", "bits", "bits/param", "recall"],
                            [[r["exposures"], r["bits"], r["bits_per_param"], r["accuracy"]] for r in exposures]))
    violations = science.violation_table(records)
    if len(violations) > 1:
        moe = [r for r in knowledge if r["n_experts"] and r["history"]]
        _save_png(folder, "violation.png", png := violation_figure(moe))
        parts.append("<h2>Load balance over training</h2>")
        parts.append(_img(png, "max load violation over training steps"))
        parts.append(_table(["configuration", "seeds", "max violation: first log", "mean", "last",
                             "bits", "low", "high", "recall", "low", "high"],
                            [[v["label"], v["seeds"], v["first"], v["mean"], v["last"], *_est(v["bits"]),
                              *_est(v["accuracy"])] for v in violations]))
    junk = [r for r in knowledge if r.get("junk_fraction") not in ("", None)]
    if len({r["junk_fraction"] for r in junk}) > 1:
        _save_png(folder, "junk.png", png := junk_figure(junk))
        parts.append("<h2>Useful knowledge among junk paragraphs</h2>")
        parts.append(_img(png, "bits stored against the share of junk paragraphs"))
        parts.append(_table(["junk fraction", "domain token", "steps", "bits", "bits/param", "recall"],
                            [[r["junk_fraction"], str(r["domain_token"]), r["steps"], r["bits"], r["bits_per_param"],
                              r["accuracy"]] for r in sorted(junk, key=lambda r: (r["junk_fraction"], r["domain_token"]))]))
    reasoning = science.groups(science.reasoning_runs(records))
    if reasoning:
        _save_png(folder, "reasoning.png", png := reasoning_figure(reasoning))
        parts.append("<h2>Reasoning task (no knowledge to store)</h2>")
        parts.append(_img(png, "reasoning accuracy against active and total parameters"))
        parts.append(_table(["configuration", "seeds", "P_total", "P_active", "accuracy", "low", "high"],
                            [[g.label, len(g.runs), g.mean("p_total"), g.mean("p_active"),
                              *_est(g.interval("accuracy"))] for g in reasoning]))
    return parts


def survey_figure(b, rows) -> bytes:
    """Accuracy vs total and vs active parameters for one benchmark: open models as points (dense
    circles, MoE triangles), the fit with its 80% prediction band, closed models as horizontal
    bands over their estimated 80% range (clipped, with an arrow, past 100x the largest open model)."""
    from moelab.analysis.survey import fit_points

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
    u = np.log10(grid)
    flags = (False, True) if b.chosen.covariate else (False,)
    for reasoning in flags:
        X = np.column_stack([u, np.full_like(u, float(reasoning))]) if b.chosen.covariate else u
        centre = b.chosen.fit_.predict(X)
        band_lo, band_hi = b.chosen.fit_.prediction_interval(X, 0.8)
        back = (lambda v: v) if b.chosen.scale == "linear" else (lambda v: 100 / (1 + np.exp(-v)))
        name = f"fit ({b.chosen.name}{', reasoning' if reasoning else ''})"
        colour = "tab:red" if reasoning else "tab:grey"
        axes[0].plot(grid, back(centre), color=colour, lw=1.2, label=name)
        axes[0].fill_between(grid, back(band_lo), back(band_hi), color=colour, alpha=0.12)
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
    return _png(fig, dpi=100)


def write_survey_report(results, rows, folder: str | Path) -> Path:
    """report.html (plots embedded, escaped tables) and one PNG per benchmark in `folder`."""
    folder = Path(folder)
    parts = ["<h1>moelab survey: knowledge against total and active parameters</h1>",
             "<p class=note>One point per open weights group (its best variant). Correlations on log10 "
             "parameter counts with 95% bootstrap intervals; size estimates with 80% calibration "
             "intervals from the fit chosen by leave-one-developer-out error.</p>"]

    def fmt(e) -> list:
        return ["n/a", "", ""] if e is None else [e.value, e.low, e.high]

    for b in results:
        png = survey_figure(b, rows)
        name = "".join(c if c.isalnum() else "_" for c in b.benchmark) + ".png"
        _save_png(folder, name, png)
        parts.append(f"<h2>{html.escape(b.benchmark)}</h2>")
        parts.append(_img(png, b.benchmark))
        parts.append(_table(["models", "groups", "r(total)", "low", "high", "r(active)", "low", "high",
                             "partial r(total|active)", "low", "high", "gamma", "low", "high"],
                            [[a.subset, a.n_groups, *fmt(a.r_total), *fmt(a.r_active), *fmt(a.partial_total),
                              *fmt(a.gamma)] for a in b.attribution]))
        parts.append(_table(["fit", "held-out points", "labs", "median |error| (decades)", "80% coverage"],
                            [[v.model + (" (used)" if v.model == b.chosen.name else ""), v.n_points,
                              v.n_developers, v.median_abs_error_decades, v.coverage] for v in b.validation]))
        if b.estimates:
            parts.append(_table(["closed model", "variant", "accuracy %", "estimate (B)", "80% low (B)",
                                 "80% high (B)", "decades beyond open models"],
                                [[e.model, e.variant.split(";")[0], e.accuracy_pct, e.estimate_b, e.low_b,
                                  e.high_b, e.extrapolation_decades]
                                 for e in sorted(b.estimates, key=lambda e: -e.accuracy_pct)]))
    atomic_write_text(folder / "report.html", _page("moelab survey", parts))
    return folder / "report.html"


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
    return _png(fig, dpi=120)


def write_probe_report(metrics: dict, samples: list[dict], folder: str | Path) -> Path:
    """report.html for a probe (and context_rot.png when several lengths were probed)."""
    folder = Path(folder)

    def interval(m: dict, key: str, scale: float = 1.0) -> list:
        low, high = m.get(f"{key}_interval") or (None, None)
        value = m.get(key)
        return [key.replace("_", " "), *(None if v is None else v * scale for v in (value, low, high))]

    title = f"moelab probe: {metrics['model']} on {metrics['task']}"
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class=note>{metrics['n']} questions at {metrics['context_words']} words of context, graded "
             f"{html.escape(metrics['grader'])}; {metrics['errors']} backend errors, "
             f"{metrics['judge_parse_failures']} judge replies unparsed. Intervals: 95% (Wilson for rates, "
             "normal for the Omniscience Index, bootstrap for the F-score).</p>",
             _table(["grade", "count"], [[g.replace("_", " "), metrics[g]]
                                         for g in ("correct", "incorrect", "partial", "not_attempted")])]
    rows = [interval(metrics, "accuracy"), interval(metrics, "omniscience_index"),
            interval(metrics, "hallucination_rate"), interval(metrics, "attempted_rate"),
            interval(metrics, "accuracy_given_attempted"), interval(metrics, "f_score")]
    parts.append(_table(["metric", "value", "95% low", "95% high"],
                        [[r[0]] + ["n/a" if v is None else v for v in r[1:]] for r in rows]))
    parts.append(_table(["output tokens per question", "per correct answer", "reasoning tokens per question"],
                        [[metrics.get("output_tokens_per_question") or "n/a",
                          metrics.get("output_tokens_per_correct") or "n/a",
                          metrics.get("reasoning_tokens_per_question") or "not reported"]]))
    if len(metrics["by_domain"]) > 1:
        parts.append("<h2>By domain</h2>")
        parts.append(_table(["domain", "n", "accuracy", "omniscience index", "hallucination rate"],
                            [[d, m["n"], m["accuracy"], m["omniscience_index"],
                              "n/a" if m["hallucination_rate"] is None else m["hallucination_rate"]]
                             for d, m in metrics["by_domain"].items()]))
    rot = metrics["context_rot"]
    if len({r["context_words"] for r in rot}) > 1:
        png = context_rot_figure(rot)
        _save_png(folder, "context_rot.png", png)
        parts.append("<h2>Accuracy as the prompt grows</h2>")
        parts.append(_img(png, "accuracy against prompt length"))
        parts.append(_table(["context (words)", "needle depth", "n", "accuracy", "95% low", "95% high",
                             "ratio to shortest"],
                            [[r["context_words"], "none" if r["depth"] is None else r["depth"], r["n"],
                              r["accuracy"], *r["accuracy_interval"],
                              "n/a" if r["ratio_to_shortest"] is None else r["ratio_to_shortest"]] for r in rot]))
    shortest = [s for s in samples if s["context_words"] == metrics["context_words"]][:50]
    parts.append(f"<h2>First {len(shortest)} answers</h2>")
    parts.append(_table(["id", "question", "gold", "output", "grade"],
                        [[s["id"], s["question"], "(abstain)" if s["answer"] is None else s["answer"],
                          s["output"], s["grade"]] for s in shortest]))
    atomic_write_text(folder / "report.html", _page(title, parts))
    return folder / "report.html"
