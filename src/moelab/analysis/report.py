"""The sweep report: `runs.csv`, `headline.png` and `report.html` (plots embedded, text escaped).

Headline figure: knowledge stored (bits) and recall against P_total and against P_active on log
axes, dense and MoE marked apart, each panel with its log-log fit and Pearson correlation (95%
bootstrap interval). The summary adds partial correlations: does total explain bits once active
is known, and the reverse?
"""

from __future__ import annotations

import csv
import html
import math
import textwrap
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import EngFormatter, LogLocator, MaxNLocator, NullFormatter

from moelab.analysis import science
from moelab.analysis import fit
from moelab.analysis.fit import Estimate, LogLinearFit, pearson, support_problem
from moelab.analysis.html import heading, img, png, save_png, table, write_page
from moelab.analysis.science_report import exit_cell, science_sections, selection_section
from moelab.io import atomic_write

COLUMNS = ["label", "status", "n_experts", "memory_kind", "memory_slots", "top_k", "expert_width", "granularity",
           "p_total", "p_active", "active_fraction", "bits", "information_bits", "bits_per_param",
           "bits_per_active_param", "accuracy", "omniscience_index", "hallucination_rate", "max_violation",
           "dead_experts", "exposures", "steps", "seed", "wall_seconds", "reason", "key",
           "unknown_fraction", "omniscience_threshold", "bits_gained_b", "bits_lost_a", "forgetting",
           "late_loss_drop", "plateau_exit_step"]


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
    record["routing"], record["fact_routing"] = routing, m.get("fact_routing", [])  # per layer; not CSV columns
    drop = science.late_loss_drop(record)  # how far from a plateau the run ended
    record["late_loss_drop"] = "" if drop is None else drop
    exit_step = science.plateau_exit(record)  # when memorization took off (inf: never)
    record["plateau_exit_step"] = "" if exit_step is None else exit_step
    record["data_kind"] = m.get("data_kind", "")
    record["n_people"] = m.get("n_people")
    record["d_model"] = m.get("config", {}).get("model", {}).get("d_model")
    record["params"] = m.get("params")  # the accounting's parts, for the paper's parameter count
    record["router"] = m.get("config", {}).get("model", {}).get("moe", {}).get("router", "learned") if m else ""
    record["data_config"] = data = m.get("config", {}).get("data", {})  # rebuilds the knowledge base where needed
    record["junk_fraction"], record["domain_token"] = data.get("junk_fraction", 0.0), data.get("domain_token", False)
    record["unknown_fraction"] = data.get("unknown_fraction", 0.0) if m else ""
    abstention = m.get("abstention")
    record["omniscience_threshold"] = abstention["threshold_best"]["omniscience_index"] if abstention else ""
    record["continual"] = continual = m.get("continual")  # a continued run's own measurements
    for column in ("bits_gained_b", "bits_lost_a", "forgetting"):
        record[column] = continual[column] if continual else ""
    return record


REPORT_BOOTSTRAP = 2000  # resamples for every correlation of a sweep report: the figure and the table agree
ROUTER_MARKERS = {"hash": "D", "hash_gated": "d", "token": "v", "cosine": "<", "stable": ">"}  # learned: ^ or s


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
    r = pearson(np.log10(x[keep]), target, n_boot=REPORT_BOOTSTRAP)
    slope = fit.slope_interval()
    kind = "log-log slope" if log_y else "change per decade"
    return fit, f"{kind} {slope}\nPearson r {r}"


NARROW_DECADES = 0.3  # a parameter axis spanning less than this is drawn linear: log ticks would crowd


def label_count_axis(axis, values: list[float], log: bool) -> None:
    """Readable ticks for a parameter-count axis: 1-2-5 ticks on a log axis (all nine per decade
    when that leaves fewer than three), a few plain ticks on a linear one; 50k, 100k, 1M labels."""
    if log:
        low, high = min(values), max(values)
        ticks = [m * 10**e for e in range(int(math.floor(math.log10(low))), int(math.ceil(math.log10(high))) + 1)
                 for m in (1, 2, 5)]
        subs = (1.0, 2.0, 5.0) if sum(low <= t <= high for t in ticks) >= 3 else tuple(range(1, 10))
        axis.set_major_locator(LogLocator(subs=subs))
        axis.set_minor_formatter(NullFormatter())
    else:
        axis.set_major_locator(MaxNLocator(4))
    axis.set_major_formatter(EngFormatter(sep=""))


def headline_figure(records: list[dict]) -> bytes:
    """Bits (top) and recall (bottom) against total (left) and active (right) parameters. Each
    panel's fit and correlation is written above it and the legend sits below the figure, so no
    annotation covers a point; the legend lists only the kinds of run present."""
    done = [r for r in records if r["status"] == "done"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 9), sharey="row")
    experts = sorted({r["n_experts"] for r in done if r["n_experts"]})
    cmap = plt.get_cmap("viridis")
    for col, (x_key, x_label) in enumerate([("p_total", "total parameters"), ("p_active", "active parameters")]):
        xs = [r[x_key] for r in done]
        log_x = math.log10(max(xs) / min(xs)) >= NARROW_DECADES
        for row, (y_key, y_label, log_y) in enumerate([("bits", "knowledge stored (bits)", True),
                                                        ("accuracy", "recall accuracy", False)]):
            ax = axes[row, col]
            if log_y and any(r[y_key] <= 0 for r in done):
                log_y = False  # a run stored <= 0 bits (never clipped): a log axis cannot show it
                y_label += " (linear: some runs <= 0)"
            dense = [r for r in done if science.is_dense(r)]
            if dense:
                ax.scatter([r[x_key] for r in dense], [r[y_key] for r in dense], marker="o", s=50,
                           facecolors="none", edgecolors="black", label="dense")
            for i, kind in enumerate(sorted({science.kind_of(r) for r in done if science.is_memory(r)})):
                memory = [r for r in done if science.is_memory(r) and science.kind_of(r) == kind]
                ax.scatter([r[x_key] for r in memory], [r[y_key] for r in memory], marker="D", s=45,
                           color=plt.cm.Dark2(i % 8), label=f"memory layer: {kind}")
            routers = sorted({science.router_of(r) for r in done if r["n_experts"]})
            for i, e in enumerate(experts):
                runs = [r for r in done if r["n_experts"] == e]
                colour = cmap(i / max(1, len(experts) - 1))
                for k, router in sorted({(r["top_k"], science.router_of(r)) for r in runs}):
                    sel = [r for r in runs if r["top_k"] == k and science.router_of(r) == router]
                    named = f" {router} router" if len(routers) > 1 else ""  # runs that differ must look different
                    ax.scatter([r[x_key] for r in sel], [r[y_key] for r in sel], s=55, color=colour,
                               marker=ROUTER_MARKERS.get(router, "P") if router != "learned" else "^" if k == 1 else "s",
                               label=f"MoE E={e} k={k}{named}")
            fit, text = _fit_text(xs, [r[y_key] for r in done], log_y, x_label)
            if fit is not None:
                grid = np.logspace(math.log10(min(xs)), math.log10(max(xs)), 50)
                line = fit.predict(grid)
                ax.plot(grid, 10**line if log_y else line, color="grey", lw=1, ls="--")
            ax.set_title(textwrap.fill(text.replace("\n", "; "), 80), fontsize=8, loc="left")
            if log_x:
                ax.set_xscale("log")
            label_count_axis(ax.xaxis, xs, log_x)
            if log_y:
                ax.set_yscale("log")
                label_count_axis(ax.yaxis, [r[y_key] for r in done], True)
            ax.set_xlabel(x_label + ("" if log_x else " (linear: they span under 0.3 decades)"))
            if col == 0:
                ax.set_ylabel(y_label)
            ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    fig.suptitle("Knowledge follows total or active parameters?", fontsize=13)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return png(fig, dpi=110)


REPORTED_ATTRIBUTION = {"r_total": "r(bits, P_total)", "r_active": "r(bits, P_active)",
                        "partial_total": "partial r(bits, P_total | P_active)",
                        "partial_active": "partial r(bits, P_active | P_total)"}


def attribution(records: list[dict]) -> tuple[dict[str, Estimate], list[str]]:
    """Correlations of log10 bits with log10 P_total and log10 P_active, raw and partial
    (fit.attribution, with its notes on what the runs cannot support)."""
    done = [r for r in records if r["status"] == "done" and r["bits"] > 0]
    if not done:
        return {}, ["no finished run stored a positive number of bits"]
    stats, notes = fit.attribution([r["p_total"] for r in done], [r["p_active"] for r in done],
                                   np.log10([r["bits"] for r in done]), n_boot=REPORT_BOOTSTRAP)
    return {label: stats[key] for key, label in REPORTED_ATTRIBUTION.items() if key in stats}, notes


def write_report(rows: list[dict], folder: str | Path, title: str, description: str = "",
                 selection: list[dict] | None = None, reported: list[str] | None = None) -> Path:
    """Write runs.csv, headline.png and report.html for these store rows; returns the HTML path.
    With a selection (sweep.json's record of it), the figures, fits and frontier use only the
    `reported` runs, at each configuration's chosen values; the selection runs are tabulated."""
    folder = Path(folder)
    records = sorted((flatten_run(r) for r in rows), key=lambda r: (r["p_total"] or 0, r["label"]))
    analysed = records if reported is None else [r for r in records if r["key"] in set(reported)]

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
    if selection:
        parts += selection_section(selection)
    knowledge = science.knowledge_runs(analysed)
    exposures = [r["exposures"] for r in knowledge]
    if len(set(exposures)) > 1:  # size fits compare runs trained alike: keep the most common exposures
        modal = max(set(exposures), key=exposures.count)
        knowledge = [r for r in knowledge if r["exposures"] == modal]
        parts.append(f"<p class=note>The figure and fits below use the {len(knowledge)} runs at {modal} "
                     "exposures; the exposures section shows the rest.</p>")
    if len(knowledge) >= 2:
        figure = headline_figure(knowledge)
        save_png(folder, "headline.png", figure)
        parts.append(img(figure, "headline figure"))
    stats, notes = attribution(knowledge)
    if stats or notes:
        parts.append("<h2>Which parameter count explains the knowledge stored?</h2>")
    if stats:
        parts.append(table(["statistic (log10 scales)", "value", "95% low", "95% high"],
                            [[k, v.value, v.low, v.high] for k, v in stats.items()]))
    parts += [f"<p class=note>{html.escape(note)}</p>" for note in notes]
    parts += science_sections(analysed, folder)
    parts.append("<h2>Runs</h2>")
    headers = ["run", "E", "k", "expert width", "P_total", "P_active", "active fraction", "bits",
               "bits/param", "bits/active param", "recall", "loss fall, last 10% of steps", "left the plateau at step",
               "time (s)", "status"]
    parts.append(table(headers, [[r["label"], r["n_experts"], r["top_k"], r["expert_width"], r["p_total"],
                                   r["p_active"], r["active_fraction"], r["bits"], r["bits_per_param"],
                                   r["bits_per_active_param"], r["accuracy"], r["late_loss_drop"],
                                   exit_cell(r["plateau_exit_step"]), r["wall_seconds"],
                                   r["status"] + (f": {r['reason']}" if r["reason"] else "")]
                                  for r in records]))
    routing, paragraphs = [], set()
    for row in rows:
        if row["metrics"] and row["metrics"].get("routing"):
            paragraphs.add(row["metrics"].get("routing_paragraphs", 1024))  # runs before the field: 1,024
        for layer in (row["metrics"] or {}).get("routing", []):
            routing.append([row["label"], layer["layer"], layer["max_violation"], layer["dead_experts"],
                            layer["router_entropy"], " ".join(f"{x:.2f}" for x in layer["load"])])
    if routing:
        counts = " or ".join(f"{n:,}" for n in sorted(paragraphs))
        parts.append(heading(f"Routing diagnostics (per MoE layer, on {counts} training paragraphs)"))
        parts.append(table(["run", "layer", "max violation", "dead experts", "router entropy", "load share"],
                            routing))
    provenance = Counter((str(m.get("git_commit")), m.get("versions", {}).get("torch", ""), m.get("device", ""))
                         for r in rows if (m := r["metrics"]))
    if provenance:
        parts.append("<h2>Provenance</h2>")
        parts.append(table(["git commit", "torch", "device (measured on)", "runs"],
                           [[*p, n] for p, n in sorted(provenance.items())]))
        resumed = [[r["label"], "; ".join(f"from step {s['from_step']:,}: {s['device'] or 'not recorded'}"
                                          f" ({s['git_commit'] or 'commit not recorded'})" for s in segments)]
                   for r in rows if len(segments := (r["metrics"] or {}).get("training_segments", [])) > 1]
        if resumed:
            parts.append("<p>Runs trained in more than one segment (stopped and resumed from a mid-run "
                         "checkpoint). A segment on another CPU sums in another order from its first step.</p>")
            parts.append(table(["run", "segments"], resumed))
    return write_page(folder / "report.html", title, parts)
