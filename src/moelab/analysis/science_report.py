"""The science presets' report sections: seeds pooled, the sparsity frontier and its knees,
bits against exposures, load balance over training, junk data and reasoning accuracy. Numbers
come from `analysis/science.py`; this module draws and tabulates them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, FixedLocator, LogLocator, NullFormatter, PercentFormatter

from moelab.analysis import science
from moelab.analysis.html import estimate_cells, heading, img, note, png, save_png, table, yerr, yerrs

PERCENT_TICKS = (1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005)

ROUTER_COLOURS = {"learned": "black", "hash": "tab:blue"}


def active_fraction_axis(ax, fractions: list[float]) -> None:
    """A log active-fraction x axis, sparser to the right, with percent ticks down to the
    sparsest of `fractions`: the frontier and the dense-law figures read alike."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator([t for t in PERCENT_TICKS if min(fractions) / 1.5 <= t <= 1.0]))
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if min(fractions) >= 0.01 else 1))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.invert_xaxis()
    ax.set_xlabel("active fraction, moelab's count (sparser to the right)")


def point_name(label: str) -> str:
    """A frontier point's name on the figure: its expert count (and top-k where not 1); the
    colour already says the router, and whole labels overlap."""
    keep = [t for t in label.split() if t.startswith("E=") or (t.startswith("k=") and t != "k=1")]
    return " ".join(keep) or label


def frontier_figure(panels: list[list[science.Frontier]]) -> bytes:
    """Bits per total parameter over the dense reference against active fraction (log axis,
    sparser to the right), one panel per reference (the dense law; the dense run of the same
    total, where there is one): one line per router, filled markers on its frontier, and a star
    for each router's ratio interpolated at the target fraction (3% active, moelab's count)."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(9.5, 4.2 * len(panels)), sharex=True, squeeze=False,
                             layout="constrained")
    colours = plt.get_cmap("tab10")
    fractions = [1.0, science.TARGET_FRACTION, *(p.active_fraction for f in panels[0] for p in f.points)]
    for ax, frontiers in zip(axes[:, 0], panels):
        reference = frontiers[0].reference
        ax.errorbar(1.0, 1.0, marker="s", color="grey", linestyle="none", label=reference.kind)
        for n, f in enumerate(frontiers):
            colour = ROUTER_COLOURS.get(f.router, colours(n + 2))
            ax.plot(*zip(*f.curve), color=colour, lw=1, label=f"{f.router} router: frontier (best per sparsity)")
            on_frontier = {fraction for fraction, _ in f.curve}
            # alternate right and left of the points: routers share sparsities
            offset, align = ((4, 4), "left") if n % 2 == 0 else ((-4, 4), "right")
            for p in f.points:
                e = p.ratio_with_reference
                ax.errorbar(p.active_fraction, e.value, yerr=yerr(e), marker="o", capsize=3, color=colour,
                            linestyle="none", markerfacecolor=colour if p.active_fraction in on_frontier else "white")
                ax.annotate(point_name(p.label), (p.active_fraction, e.value), fontsize=7, color=colour,
                            xytext=offset, textcoords="offset points", ha=align)
            for t in f.at_target:
                if t.count == "moelab":
                    ax.errorbar(t.fraction, t.ratio.value, yerr=yerr(t.ratio), marker="*", markersize=11, capsize=3,
                                color=colour, linestyle="none", label=f"{f.router} at {t.fraction:.0%} (interpolated)")
            for level, style in ((0.9, "--"), (0.5, ":")):
                k = f.knees.get(level)
                if k is not None and not math.isnan(k.value):
                    ax.axvline(k.value, color=colour, ls=style, lw=1)
                    if not math.isnan(k.low):
                        ax.axvspan(k.low, k.high, color=colour, alpha=0.08)
        for level, colour in ((0.9, "tab:orange"), (0.5, "tab:red")):
            ax.axhline(level, color=colour, ls="--", lw=1, label=f"{level:.0%} of dense")
        ax.axhline(1 / 1.5, color="tab:green", ls="-.", lw=1, label="1/1.5: the paper's MoE ratio")
        ax.axvline(science.TARGET_FRACTION, color="grey", lw=2, alpha=0.4,
                   label=f"{science.TARGET_FRACTION:.0%} active (Kimi K2's regime)")
        ax.set_ylabel(f"bits per total parameter\n/ {reference.kind}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    active_fraction_axis(axes[-1, 0], fractions)  # the panels share it
    return png(fig, dpi=110)


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
    return png(fig, dpi=110)


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
    return png(fig, dpi=110)


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
    return png(fig, dpi=110)


def reasoning_figure(groups: list[science.Group]) -> bytes:
    """Accuracy (seed mean and t interval) against active and against total parameters, one colour
    per configuration (a legend, since MoE points sit on top of dense ones in the active panel)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True, layout="constrained")
    colours = plt.get_cmap("tab10")
    for ax, key, name in ((axes[0], "p_active", "active parameters"), (axes[1], "p_total", "total parameters")):
        for i, g in enumerate(groups):
            e = g.interval("accuracy")
            ax.errorbar(g.mean(key), e.value, yerr=yerr(e), marker="^" if g.runs[0]["n_experts"] else "o",
                        capsize=3, color=colours(i % 10), label=g.label, linestyle="none")
        ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("held-out accuracy (reasoning task)")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return png(fig, dpi=110)


def abstention_figure(rows: list[dict]) -> bytes:
    """The Omniscience Index (top) and hallucination rate (bottom) per configuration against total
    (left) and active (right) parameters: a colour per architecture, filled markers trained with
    abstention rows, open ones not, one marker shape per knowledge base; bars span the seeds;
    crosses mark the threshold baseline's best index."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 8), sharey="row", layout="constrained")
    colours = {a: plt.get_cmap("tab10")(i) for i, a in enumerate(dict.fromkeys(r["architecture"] for r in rows))}
    shapes = {n: m for n, m in zip(sorted({r["n_people"] for r in rows}, reverse=True), "os^Dv")}
    for col, (x_key, x_label) in enumerate([("p_total", "total parameters"), ("p_active", "active parameters")]):
        for row, (y_key, y_label) in enumerate([("omniscience_index", "Omniscience Index"),
                                                ("hallucination_rate", "hallucination rate")]):
            ax = axes[row, col]
            for r in rows:
                trained, colour = r["unknown_fraction"] > 0, colours[r["architecture"]]
                low, high = r[f"{y_key}_range"]
                value = r[y_key].value
                ax.errorbar(r[x_key], value, yerr=[[value - low], [high - value]], marker=shapes[r["n_people"]],
                            capsize=3, linestyle="none", color=colour, markerfacecolor=colour if trained else "white")
                if row == 0 and not trained:
                    ax.plot(r[x_key], r["omniscience_threshold"].value, marker="x", color=colour, linestyle="none")
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(x_label)
            if col == 0:
                ax.set_ylabel(y_label)
            ax.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], color=c, marker="o", linestyle="none", label=a) for a, c in colours.items()]
    handles += [Line2D([], [], color="grey", marker=m, linestyle="none", markerfacecolor="white",
                       label=f"{n:,} people" if n else "people") for n, m in shapes.items()]
    handles += [Line2D([], [], color="grey", marker="o", linestyle="none", label="trained to abstain (filled)"),
                Line2D([], [], color="grey", marker="x", linestyle="none", label="threshold baseline, untrained")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return png(fig)


def continual_figure(rows: list[dict]) -> bytes:
    """Bits gained on B against bits lost on A, one point per configuration (the mean of its
    seeds, bars spanning them): a colour per architecture, a marker per way of continuing."""
    fig, ax = plt.subplots(figsize=(9, 6), layout="constrained")
    colours = {a: plt.get_cmap("tab10")(i) for i, a in enumerate(dict.fromkeys(r["architecture"] for r in rows))}
    markers = {s: m for s, m in zip(dict.fromkeys(r["strategy"] for r in rows), "osD^vP*Xh")}
    for r in rows:
        x, y = r["bits_lost_a"].value, r["bits_gained_b"].value
        (x0, x1), (y0, y1) = r["bits_lost_a_range"], r["bits_gained_b_range"]
        ax.errorbar(x, y, xerr=[[x - x0], [x1 - x]], yerr=[[y - y0], [y1 - y]], marker=markers[r["strategy"]],
                    capsize=3, linestyle="none", color=colours[r["architecture"]], markersize=8)
    if all(r["bits_lost_a_range"][0] > 0 for r in rows):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.yaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlabel("bits lost on A (knowledge base trained first)")
    ax.set_ylabel("bits gained on B (new people)")
    ax.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], color=c, marker="o", linestyle="none", label=a) for a, c in colours.items()]
    handles += [Line2D([], [], color="grey", marker=m, linestyle="none", label=s) for s, m in markers.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return png(fig)


def na(value):
    """A table cell: the value, or "n/a" for a measure the runs did not record."""
    return "n/a" if value is None else value


def churn_figure(records: list[dict]) -> bytes:
    """Bits per total parameter against routing churn, one point per MoE run: at the end of
    training (left) and fact churn over the whole run (right). One colour per configuration where
    every run has the same experts (a router study), else per router (a frontier)."""
    runs = [r for r in science.knowledge_runs(records) if r["n_experts"] and science.final_churn(r) is not None]
    by_configuration = len({(r["n_experts"], r["p_total"] // 10_000) for r in runs}) == 1
    colour_of = (lambda r: science.group_label(r["label"])) if by_configuration else science.router_of
    names = sorted({colour_of(r) for r in runs})
    shared = os.path.commonprefix([n.split() for n in names]) if by_configuration and len(names) > 1 else []
    short = {n: " ".join(n.split()[len(shared):]) or n for n in names}  # "E=32 k=1 w=32 " said once, in the title
    legend_height = 0.22 * math.ceil(len(names) / 2) if by_configuration else 0.0  # inches, below both panels
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4 + legend_height), sharey=True)
    panels = ((science.final_churn, "routing churn at the end of training (% of probe tokens per record)"),
              (lambda r: science.mean_churn(r, "fact_churn"), "fact churn over the whole run (% of fact positions per record)"))
    for ax, (measure, xlabel) in zip(axes, panels):
        for i, name in enumerate(names):
            mine = [r for r in runs if colour_of(r) == name and measure(r) is not None]
            ax.scatter([100 * measure(r) for r in mine], [r["bits_per_param"] for r in mine],
                       color=plt.cm.tab20(i % 20) if by_configuration else plt.cm.tab10(i % 10), label=short[name], s=22)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("bits per total parameter")
    if by_configuration:  # many configurations: the legend below both panels, not over one
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=7,
                   title=" ".join(shared) or "configuration", title_fontsize=8)
        fig.tight_layout(rect=(0, legend_height / (4.4 + legend_height), 1, 1))
    else:
        axes[1].legend(fontsize=7, title="router", loc="best")
        fig.tight_layout()
    return png(fig)


def fact_routing_figure(records: list[dict]) -> bytes:
    """Bits per total parameter against the effective experts of the recall values' predictions,
    one point per MoE run that recorded them, one colour per router; filled where the routing is
    fixed by the token id (token determinism 1), hollow where it splits a context's facts by person."""
    runs = [r for r in science.knowledge_runs(records) if science.fact_routing_mean(r, "effective_experts") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.3))
    for i, router in enumerate(sorted({science.router_of(r) for r in runs})):
        for by_token in (True, False):
            mine = [r for r in runs if science.router_of(r) == router
                    and (science.fact_routing_mean(r, "token_determinism") > 0.999) == by_token]
            if mine:
                ax.scatter([science.fact_routing_mean(r, "effective_experts") for r in mine],
                           [r["bits_per_param"] for r in mine], s=28, edgecolors=plt.cm.tab10(i % 10),
                           facecolors=plt.cm.tab10(i % 10) if by_token else "none",
                           label=f"{router}" + ("" if by_token else " (splits facts by person)"))
    ax.set_xlabel("effective experts of the recall values' predictions (exp entropy, mean over layers)")
    ax.set_ylabel("bits per total parameter")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return png(fig)


KIND_COLOURS = {**ROUTER_COLOURS, "stable": "tab:red", "pkm": "tab:green", "peer": "tab:purple"}


def law_figure(rows: list[dict]) -> bytes:
    """Bits relative to the dense law at each run's own total against active fraction (log axis,
    sparser to the right, as on the frontier), one colour per kind of sparsity (a router, or a
    memory layer), with the seeds-and-law interval. A hollow marker: the law is capped there, so
    the ratio is the share of the knowledge base stored."""
    fig, ax = plt.subplots(figsize=(10, 4.5), layout="constrained")
    for i, kind in enumerate(sorted({r["kind"] for r in rows})):
        colour = KIND_COLOURS.get(kind, plt.cm.tab10(i))
        mine = [r for r in rows if r["kind"] == kind]
        # the line is the kind's frontier (the best at each sparsity), as on the frontier figure:
        # configurations need not order by fraction (StableMoE's 256 experts read more router
        # weights than its 64)
        if len(mine) > 1:  # one configuration is a point, not a frontier
            curve = science.frontier_curve(1.0, [(r["active_fraction"], r["ratio"].value) for r in mine])
            ax.plot(*zip(*curve), color=colour, lw=1, label=f"{kind} (frontier from dense)")
        else:
            ax.plot([], [], marker="o", color=colour, linestyle="none", label=kind)
        for r in mine:
            ax.errorbar(r["active_fraction"], r["ratio"].value, yerr=yerr(r["ratio_with_law"]), color=colour,
                        marker="o", capsize=3, linestyle="none",
                        markerfacecolor="white" if r["law_capped"] else colour)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--", label="the dense law")
    ax.axhline(1 / science.PAPER_RATIO, color="tab:green", ls="-.", lw=1, label="1/1.5: the paper's MoE ratio")
    ax.axvline(science.TARGET_FRACTION, color="grey", lw=2, alpha=0.4,
               label=f"{science.TARGET_FRACTION:.0%} active (Kimi K2's regime)")
    ax.plot([], [], marker="o", color="grey", markerfacecolor="white", linestyle="none",
            label="law capped at the base: the ratio is the share stored")
    active_fraction_axis(ax, [1.0, science.TARGET_FRACTION, *(r["active_fraction"] for r in rows)])
    ax.set_ylabel("bits / dense law's bits at the same total")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return png(fig)


def width_figure(trends: list[dict]) -> bytes:
    """Dense over MoE bits per total parameter (log) against d_model (log 2), one line per MoE
    configuration, with the seeds' interval at each width; the paper's 1.5 dashed. On log axes
    the per-doubling fit is a straight line."""
    fig, ax = plt.subplots(figsize=(7, 4.3))
    for i, trend in enumerate(trends):
        ax.errorbar(trend["widths"], [e.value for e in trend["ratios"]], yerr=yerrs(trend["ratios"]),
                    color=plt.cm.tab10(i % 10), marker="o", capsize=3,
                    label=f"{trend['moe']} ({trend['per_doubling'].value:.2f}x per doubling)")
    ax.axhline(science.PAPER_RATIO, color="grey", lw=0.8, ls="--", label="Allen-Zhu & Li at 100 exposures (1.5)")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    widths = sorted({w for t in trends for w in t["widths"]})
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.minorticks_off()
    ax.set_xlabel("d_model")
    ax.set_ylabel("dense bits/param over MoE bits/param")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return png(fig)


def figure_section(folder: Path, filename: str, figure: bytes, title: str, alt: str) -> list[str]:
    """A section's heading and figure, the figure also saved beside the report."""
    save_png(folder, filename, figure)
    return [heading(title), img(figure, alt)]


TOKEN_ID_ROUTERS = ("hash", "hash_gated", "token", "stable")  # routers that see only the input token id (stable: after its first stage)


def token_id_section(records: list[dict]) -> list[str]:
    """For runs routed by token id: how many experts the knowledge base's scored predictions can
    reach at all, which bounds what such a router can store when experts outnumber the contexts."""
    from moelab.config import DataConfig
    from moelab.config.convert import from_dict
    from moelab.evaluation.routing import token_id_reach
    from moelab.knowledge import build_knowledge_base

    configurations: dict[str, tuple[dict, set[int]]] = {}  # one knowledge base per data config
    for r in science.knowledge_runs(records):
        data = r.get("data_config")
        if r["n_experts"] and science.router_of(r) in TOKEN_ID_ROUTERS and data:
            configurations.setdefault(json.dumps(data, sort_keys=True), (data, set()))[1].add(r["n_experts"])
    if not configurations:
        return []
    rows = []
    for data, experts in configurations.values():
        kb = build_knowledge_base(from_dict(DataConfig, data))
        for n_experts in sorted(experts):
            for probe, reach in token_id_reach(kb, n_experts).items():
                rows.append([f"{kb.n_people:,} people", n_experts, probe, reach["contexts"], reach["hash_experts"],
                             reach["hash_experts"] / n_experts, reach["hash_largest_share"]])
    return ["<h2>Where routing by token id can put the facts</h2>",
            note("A router that sees only the input token id (hash, hash-gated, token, StableMoE after its first stage) sends the prediction of each "
                 "scored token to the expert of the token before it, whoever the fact is about. Contexts: the distinct "
                 "input tokens at the bit estimate's scored positions, the most experts such a router can give those "
                 "predictions; hash routing's experts and the busiest one's share of the scored positions follow. "
                 "Where experts outnumber the contexts, the rest of the experts never hold a scored prediction."),
            table(["knowledge base", "experts", "probe", "contexts", "experts hash routing reaches", "share of experts",
                   "busiest expert's share of the predictions"], rows)]


def exit_cell(step) -> str | float:
    """A `plateau_exit` step for a table: "never" for a run whose loss never left the plateau."""
    return "never" if step == math.inf else step


def _exit_text(step) -> str:
    """A `plateau_exit` step within a list of seeds: "never", "n/a" without a history, or the step."""
    return "n/a" if step is None else "never" if step == math.inf else f"{step:,.0f}"


def target_section(panels: list[list[science.Frontier]]) -> list[str]:
    """Each router's bits per total parameter relative to each reference at TARGET_FRACTION active,
    by each parameter count whose measured configurations bracket it; the sparsest point where none do."""
    target = science.TARGET_FRACTION
    rows = []
    for fronts in panels:
        kind = fronts[0].reference.kind
        rows += [[kind, f.router, t.count, " / ".join(t.between), *estimate_cells(t.ratio)]
                 for f in fronts for t in f.at_target]
        rows += [[kind, f.router, count, f"not reached: sparsest is {f.sparsest.label} at {fraction:.1%}",
                  "n/a", "n/a", "n/a"]
                 for f in fronts for count, fraction in (("moelab", f.sparsest.active_fraction),
                                                         ("paper", f.sparsest.paper_fraction))
                 if fraction is not None and count not in {t.count for t in f.at_target}]
    if not rows:
        return []
    return [heading(f"At {target:.0%} active"),
            note(f"Bits per total parameter relative to the reference at {target:.0%} active, the regime the "
                 "question is about, interpolated in log active fraction between the two configurations either "
                 "side of it (their means over seeds); by moelab's count (every parameter a token reads, routers "
                 "included) and by the paper's (attention and experts). The interval resamples seeds and the "
                 "reference's runs."),
            table(["reference", "router", "count", "between", "ratio to dense", "95% low", "95% high"], rows)]


def _loss_history(record: dict) -> list[tuple[float, float]]:
    return [(h["step"], h["loss"]) for h in record.get("history") or [] if "loss" in h]


def loss_curves_figure(fronts: list[science.Frontier], records: list[dict]) -> bytes:
    """Training loss against step for every run of the frontier, one panel per router with a
    history, one colour per configuration (all its seeds), the dense runs in grey: when each seed
    left the plateau shows here."""
    knowledge = science.knowledge_runs(records)
    panels = []
    for f in fronts:
        by_label = {p.label: [r for r in knowledge if r["n_experts"] and science.router_of(r) == f.router
                              and science.group_label(r["label"]) == p.label and _loss_history(r)]
                    for p in f.points}
        if any(by_label.values()):
            panels.append((f, by_label))
    dense = [r for r in knowledge if science.is_dense(r) and _loss_history(r)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, (f, by_label) in zip(axes[0], panels):
        for n, r in enumerate(dense):
            ax.plot(*zip(*_loss_history(r)), color="grey", lw=0.7, label="dense" if n == 0 else None)
        for i, p in enumerate(f.points):  # denser first
            colour = plt.cm.viridis(i / max(1, len(f.points) - 1))
            for n, r in enumerate(by_label[p.label]):
                ax.plot(*zip(*_loss_history(r)), color=colour, lw=0.8,
                        label=f"{r['n_experts']} experts ({p.active_fraction:.1%} active)" if n == 0 else None)
        ax.set_title(f"{f.router} router", fontsize=9)
        plateau = max(science.plateau_loss(r) for r in dense + [r for rs in by_label.values() for r in rs])
        ax.set_ylim(top=plateau + 0.15)  # the first steps' loss (the vocabulary's entropy) would flatten the rest
        ax.set_xlabel("step")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("training loss (nats a token)")
    return png(fig, dpi=100)


def seeds_section(fronts: list[science.Frontier], records: list[dict], folder: Path) -> list[str]:
    """Every run of the frontier seed by seed: what it stored, how much of the base, and when its
    loss left the plateau before memorization (`science.plateau_exit`), with the loss curves."""
    labels = {(f.router, p.label) for f in fronts for p in f.points}
    runs = sorted((r for r in science.knowledge_runs(records)
                   if (r["n_experts"] and (science.router_of(r), science.group_label(r["label"])) in labels)
                   or science.is_dense(r)), key=lambda r: (not science.is_dense(r), science.router_of(r),
                                                           -r["active_fraction"], r["label"]))
    if not any(_loss_history(r) for r in runs if not science.is_dense(r)):
        return []
    reference = fronts[0].reference
    drop = science.PLATEAU_EXIT_DROP
    parts = figure_section(folder, "loss_curves.png", loss_curves_figure(fronts, records), "Seed by seed",
                           "training loss against step for each run of the frontier, by router")
    parts.append(note(f"Left the plateau: the first step at which the training loss lay {drop} nats a token below "
                      f"its lowest value in the run's first {science.EARLY:.0%} of steps, the flat stretch where the "
                      "format is learned and no fact yet; never: it did not get there. A run that leaves late has "
                      "fewer steps left to store facts, so seeds of one configuration can differ several-fold. "
                      "Loss fall: over the last 10% of steps, with the learning rate decayed; a stalled run is "
                      "flat too, so only the bits tell a stalled run from a full one."))
    parts.append(table(["run", "router", "P_total", "active fraction", "bits", "share of base", "bits/param",
                        f"vs {reference.kind}", "left the plateau at step", "loss fall, last 10% of steps",
                        "final loss"],
                       [[r["label"], "dense" if science.is_dense(r) else science.router_of(r), r["p_total"],
                         r["active_fraction"], r["bits"], _share(r), r["bits_per_param"], _versus(r, reference),
                         na(exit_cell(science.plateau_exit(r))), na(science.late_loss_drop(r)), _final_loss(r)]
                        for r in runs]))
    return parts


def _versus(record: dict, reference: science.DenseReference):
    """A run's bits per parameter over the reference's at the frontier's total; a smaller dense
    model is a rung of the law, not a point to compare with it."""
    if science.is_dense(record) and abs(record["p_total"] / reference.total - 1) >= science.SAME_TOTAL:
        return "a rung of the law"
    return record["bits_per_param"] / reference.bits_per_param.value


def _share(record: dict):
    information = record.get("information_bits")
    return record["bits"] / information if isinstance(information, int | float) and information > 0 else "n/a"


def _final_loss(record: dict):
    history = _loss_history(record)
    return history[-1][1] if history else "n/a"


def science_sections(records: list[dict], folder: Path) -> list[str]:
    """Report sections for what a sweep varies: seeds, a fixed-total frontier, exposures, load
    balance over training, a reasoning task."""
    parts = []
    knowledge = science.knowledge_runs(records)
    configurations = science.groups(knowledge)
    if any(len(g.runs) > 1 for g in configurations):
        parts.append("<h2>Pooled over seeds (mean and 95% t interval)</h2>")
        parts.append(note("Loss fall over the last 10% of steps: how far from a plateau each configuration ended "
                          "((first - last) / first training loss in that stretch, mean over seeds; near 0 is a plateau)."))
        parts.append(table(["configuration", "seeds", "P_total", "active fraction", "bits", "low", "high",
                             "bits/param", "recall", "low", "high", "loss fall, last 10% of steps"],
                            [[g.label, len(g.runs), g.mean("p_total"), g.mean("active_fraction"),
                              *estimate_cells(g.interval("bits")), g.mean("bits_per_param"), *estimate_cells(g.interval("accuracy")),
                              na(science.mean_or_none(science.late_loss_drop(r) for r in g.runs))]
                             for g in configurations]))
    fronts = science.frontiers(records)
    if fronts:
        reference = fronts[0].reference
        panels = [fronts]
        if reference.kind == "dense law" and reference.check is not None:
            panels.append(science.frontiers(records, law=False))  # the measured dense model of the same total
        save_png(folder, "frontier.png", figure := frontier_figure(panels))
        parts.append("<h2>Sparsity frontier at fixed total parameters</h2>")
        parts.append(img(figure, "bits per total parameter relative to dense against active fraction"))
        parts.append(note(f"Reference: {reference.describe()}. "
                          + ("The frontier is also given against the dense run of the same total (lower panel, "
                             "rows marked same-total dense): a direct measurement where the law extrapolates "
                             f"{reference.total / max(reference.sizes):.1f}x past its widest rung. "
                             if len(panels) > 1 else "")
                          + "Knees: where the frontier (the best configuration "
                          "at each sparsity) falls below 90%, 67% (Allen-Zhu & Li's 1.5x fewer bits per total "
                          "parameter) and 50% of the reference, interpolated in log active fraction. A knee of n/a was not reached down to the sparsest configuration measured; an "
                          "interval of n/a means some resamples never cross that level. Intervals resample seeds "
                          "within each configuration and the reference's runs within each dense size."))
        parts.append(table(["reference", "router", "knee (ratio to dense)", "active fraction", "95% low", "95% high"],
                           [[f.reference.kind, f.router,
                             f"{level:.0%}" + (" (the paper's 1.5x)" if level == 1 / science.PAPER_RATIO else ""),
                             *estimate_cells(k)] for fs in panels for f in fs for level, k in f.knees.items()]))
        parts.append(table(["reference", "router", "configuration", "active fraction", "(paper's count)", "seeds",
                            "bits/param vs dense", "low (seeds)", "high (seeds)", "low (seeds and reference)",
                            "high (seeds and reference)", "each seed"],
                           [[f.reference.kind, f.router, p.label, p.active_fraction, na(p.paper_fraction), p.n_seeds,
                             *estimate_cells(p.ratio), *estimate_cells(p.ratio_with_reference)[1:],
                             ", ".join(f"{x:.2f}" for x in p.seed_ratios)] for fs in panels for f in fs for p in f.points]))
        parts += target_section(panels)
        parts += seeds_section(fronts, records, folder)
    parts += token_id_section(records)
    total = science.sparse_total(records)
    reference = (fronts[0].reference if fronts  # the frontier's own, at the same total: not bootstrapped twice
                 else science.dense_reference(records, total) if total is not None else None)
    if reference is not None and reference.kind == "dense law":
        parts.append("<h2>The dense law as the reference</h2>")
        parts.append(note("Allen-Zhu & Li compare a sparse model with the dense scaling law at the same knowledge base "
                          "and exposures, not with one dense model of equal total. Here the law is " + reference.describe()
                          + ". Where a dense model of that total was also run, it is a check on the law."))
        check = reference.check
        parts.append(table(["at total", "dense sizes", "law: bits/param", "low", "high", "before the base's cap",
                            "law exponent b", "low", "high", "measured at that total", "low", "high", "measured / law"],
                           [[reference.total, ", ".join(f"{x:,.0f}" for x in reference.sizes),
                             *estimate_cells(reference.bits_per_param),
                             reference.uncapped.value if reference.capped else "not capped",
                             *estimate_cells(reference.slope),
                             *estimate_cells(check),
                             check.value / reference.bits_per_param.value if check is not None else "n/a"]]))
    ratios = science.dense_moe_ratios(records)
    ladder = reference is not None and reference.kind == "dense law" and len(reference.sizes) >= 3
    if ladder:  # every MoE against every rung would repeat the frontier's comparison with the law, rung by rung
        ratios = [r for r in ratios if abs(r["dense_total"] - r["moe_total"]) <= 0.01 * r["moe_total"]]
    if ratios:
        parts.append("<h2>Dense against MoE: bits per total parameter</h2>")
        parts.append(note("Dense bits per total parameter over MoE bits per total parameter, seed by seed, then "
                          "their mean with a t interval of their logs (it stays above 0), counting every parameter "
                          "(moelab) and as Allen-Zhu & Li count them "
                          "(attention, MLPs and experts; no embeddings, norms or routers). Their Result 9: 1.5 "
                          "at 100 exposures, 1.3 at 1,000, for 32 top-1 experts of d-d-d."
                          + (" With a ladder of dense sizes the law is the reference (above); only the dense model "
                             "of the MoE's own total is paired here, as a check." if ladder else "")))
        widths = len({r["d_model"] for r in ratios}) > 1  # a width sweep: pairs are made within a width
        parts.append(table((["d_model"] if widths else []) + [
                            "dense", "MoE", "seeds", "MoE active fraction", "(paper's count)", "ratio", "low", "high",
                            "ratio (paper's count)", "low", "high"],
                           [([r["d_model"]] if widths else []) + [
                             r["dense"], r["moe"], r["seeds"], r["moe_active_fraction"], r["moe_active_fraction_paper"],
                             *estimate_cells(r["ratio"]), *estimate_cells(r["ratio_paper"])]
                            for r in sorted(ratios, key=lambda r: r["d_model"] or 0)]))
    trends = science.width_trend(records)
    if trends:
        parts += figure_section(folder, "width.png", width_figure(trends), "Does the gap close as the model widens?",
                                "dense over MoE bits per total parameter against d_model")
        parts.append(note("The ratios of the table above, per configuration across widths. Per doubling: the factor by "
                          "which the ratio changes when d_model doubles, from a least-squares line through every "
                          "seed's log ratio against log d_model, with a t interval (points - 2 degrees of freedom). "
                          "Below 1 with the interval below 1: the gap closes with width; an interval spanning 1: no "
                          "trend these runs can resolve."))
        parts.append(table(["dense", "MoE", "d_model", "ratio at each width", "points", "per doubling", "low", "high",
                            "per doubling (paper's count)", "low", "high"],
                           [[t["dense"], t["moe"], ", ".join(str(w) for w in t["widths"]),
                             ", ".join(f"{e.value:.2f}" for e in t["ratios"]), t["points"],
                             *estimate_cells(t["per_doubling"]), *estimate_cells(t["per_doubling_paper"])]
                            for t in trends]))
    memory = any(science.kind_of(r) in ("pkm", "peer") for r in knowledge)
    law = science.law_ratios(records) if memory else []
    if law:  # memory layers' totals differ: each configuration against the law at its own
        parts += figure_section(folder, "dense_law.png", law_figure(law),
                                "Sparse models against the dense law at their own totals",
                                "bits relative to the dense law against active fraction")
        parts.append(note("Each configuration's bits over the dense law's at its own total (fitted over the dense "
                          "ladder), the law capped at the knowledge base's information: where a dense model of that "
                          "total would store the whole base, a ratio of 1 means the sparse one does too. Intervals: "
                          "seeds (t), and seeds with the law's runs resampled (bootstrap). How far from a plateau: "
                          "the step each seed's loss left the pre-memorization plateau, and the loss's fall over the "
                          "last 10% of steps (a stalled run is flat too: the share of the base tells them apart)."))
        parts.append(table(["configuration", "kind", "seeds", "P_total", "active fraction", "law's bits",
                            "law capped at the base", "ratio", "low (seeds)", "high (seeds)", "low (and law)",
                            "high (and law)", "share of the base stored", "left the plateau at step (each seed)",
                            "loss fall, last 10% of steps"],
                           [[r["label"], r["kind"], r["seeds"], r["p_total"], r["active_fraction"], r["law_bits"],
                             "yes" if r["law_capped"] else "no", *estimate_cells(r["ratio"]),
                             *estimate_cells(r["ratio_with_law"])[1:],
                             na(r["base_share"]), ", ".join(_exit_text(x) for x in r["plateau_exits"]),
                             na(r["loss_fall"])] for r in law]))
    routers = science.router_table(records)
    if any(r["churn"] is not None for r in routers):
        parts += figure_section(folder, "churn.png", churn_figure(records),
                                "Routers: knowledge against routing churn",
                                "bits per total parameter against routing churn at the end of training")
        parts.append(note("Churn: the share of a fixed set of probe tokens whose first-choice expert changed since the "
                          "previous history record; fact churn: the same at the positions that predict a fact's value. "
                          "Both averaged over the MoE layers and the last 10% of the records (or, whole run, over "
                          "every record), then over seeds. Hash "
                          "routing never churns. Imbalance: at evaluation, the busiest expert's share of tokens over "
                          "the mean share, minus 1. Token determinism: the share of the recall values' predictions "
                          "that go to the expert their input token goes to most often (1 for routing by token id; "
                          "lower where the router splits one context's facts by person); effective experts: "
                          "exp(entropy) of those predictions' spread over experts. Agreement (balanced assignment "
                          "only): the share of training tokens whose balanced expert is their greedy top-1 expert, "
                          "the one evaluation uses."))
        parts.append(table(["configuration", "router", "seeds", "active fraction", "bits", "low", "high", "bits/param",
                            "churn", "fact churn", "churn, whole run", "fact churn, whole run", "imbalance",
                            "token determinism", "effective experts", "agreement"],
                           [[r["label"], r["router"], r["seeds"], r["active_fraction"], *estimate_cells(r["bits"]),
                             r["bits_per_param"], *(na(r[k]) for k in ("churn", "fact_churn", "churn_mean",
                                                                      "fact_churn_mean", "imbalance", "determinism",
                                                                      "effective_experts", "agreement"))]
                            for r in routers]))
    if any(r["effective_experts"] is not None for r in routers):
        parts += figure_section(folder, "fact_routing.png", fact_routing_figure(records),
                                "Routers: knowledge against how the facts are routed",
                                "bits per total parameter against the effective experts of the recall values")
    exposures = science.exposure_table(records)
    if exposures:
        save_png(folder, "exposures.png", figure := exposures_figure(exposures))
        parts.append("<h2>Bits per parameter against exposures</h2>")
        parts.append(img(figure, "bits per parameter against exposures"))
        parts.append(table(["exposures", "bits", "bits/param", "recall"],
                            [[r["exposures"], r["bits"], r["bits_per_param"], r["accuracy"]] for r in exposures]))
    violations = science.violation_table(records)
    if len(violations) > 1:
        moe = [r for r in knowledge if r["n_experts"] and r["history"]]
        save_png(folder, "violation.png", figure := violation_figure(moe))
        parts.append("<h2>Load balance over training</h2>")
        parts.append(img(figure, "max load violation over training steps"))
        parts.append(table(["configuration", "seeds", "max violation: first log", "mean", "last",
                             "bits", "low", "high", "recall", "low", "high"],
                            [[v["label"], v["seeds"], v["first"], v["mean"], v["last"], *estimate_cells(v["bits"]),
                              *estimate_cells(v["accuracy"])] for v in violations]))
    junk = [r for r in knowledge if r.get("junk_fraction") not in ("", None)]
    if len({r["junk_fraction"] for r in junk}) > 1:
        save_png(folder, "junk.png", figure := junk_figure(junk))
        parts.append("<h2>Useful knowledge among junk paragraphs</h2>")
        parts.append(img(figure, "bits stored against the share of junk paragraphs"))
        parts.append(table(["junk fraction", "domain token", "steps", "bits", "bits/param", "recall"],
                            [[r["junk_fraction"], str(r["domain_token"]), r["steps"], r["bits"], r["bits_per_param"],
                              r["accuracy"]] for r in sorted(junk, key=lambda r: (r["junk_fraction"], r["domain_token"]))]))
    abstention = science.abstention_table(records)
    if abstention:
        parts += figure_section(folder, "abstention.png", abstention_figure(abstention),
                                "Knowing what it does not know: abstention",
                                "Omniscience Index and hallucination rate against total and active parameters")
        parts.append(note("Over the real people's questions and the held-out invented people's (AA-Omniscience's "
                          "definitions): Omniscience Index 100 (correct - incorrect) / all; hallucination rate "
                          "incorrect / (incorrect + abstained). Threshold baseline: the best index when the model "
                          "abstains below a confidence threshold. Means over seeds with 95% t intervals (the figure's bars "
                          "span the seeds)."))
        parts.append(table(["configuration", "seeds", "P_total", "P_active", "Omniscience Index", "low", "high",
                            "hallucination rate", "low", "high", "threshold baseline", "low", "high",
                            "recall", "low", "high", "bits", "low", "high"],
                           [[r["label"], r["seeds"], r["p_total"], r["p_active"],
                             *estimate_cells(r["omniscience_index"]), *estimate_cells(r["hallucination_rate"]),
                             *estimate_cells(r["omniscience_threshold"]), *estimate_cells(r["accuracy"]),
                             *estimate_cells(r["bits"])] for r in abstention]))
    continual = science.continual_table(records)
    if continual:
        parts += figure_section(folder, "continual.png", continual_figure(continual),
                                "Learning after deployment: bits gained on B against bits lost on A",
                                "bits gained on B against bits lost on A")
        parts.append(note("Each continued run starts from its parent (trained on A) and trains on B, new people "
                          "with A's attributes and value sets. Forgetting: the share of A's bits lost (above 100% when "
                          "the model turns confidently wrong about A). Means over seeds with 95% t intervals (the "
                          "figure's bars span the seeds)."))
        parts.append(table(["configuration", "seeds", "P_total", "P_active", "trainable params", "added params",
                            "steps on B", "bits on A before", "B's information", "bits gained on B", "low", "high",
                            "bits lost on A", "low", "high", "forgetting", "low", "high", "recall on A after",
                            "low", "high", "recall on B after", "low", "high"],
                           [[r["label"], r["seeds"], r["p_total"], r["p_active"], r["trainable_params"],
                             r["added_params"], r["steps"], r["bits_a_before"], r["information_bits_b"],
                             *(cell for k in science.CONTINUAL_METRICS for cell in estimate_cells(r[k]))]
                            for r in continual]))
    reasoning = science.groups(science.reasoning_runs(records))
    if reasoning:
        save_png(folder, "reasoning.png", figure := reasoning_figure(reasoning))
        parts.append("<h2>Reasoning task (no knowledge to store)</h2>")
        parts.append(img(figure, "reasoning accuracy against active and total parameters"))
        parts.append(table(["configuration", "seeds", "P_total", "P_active", "accuracy", "low", "high"],
                            [[g.label, len(g.runs), g.mean("p_total"), g.mean("p_active"),
                              *estimate_cells(g.interval("accuracy"))] for g in reasoning]))
    return parts


def grid_edge(record: dict) -> str | None:
    """Where a selection chose the smallest or largest of a numeric field's candidates, the best
    may lie beyond the grid: that end, e.g. "the lowest lr"; None inside the grid, or where a
    block fixed the value."""
    candidates = record["candidates"]
    if record.get("fixed") or len(candidates) < 2:
        return None
    for field, value in record["chosen"].items():
        values = [c["values"].get(field) for c in candidates]
        if not all(isinstance(v, int | float) for v in values) or len(set(values)) < 2:
            continue
        name = field.split(".")[-1]
        if value == min(values):
            return f"the lowest {name}"
        if value == max(values):
            return f"the highest {name}"
    return None


def selection_section(selection: list[dict]) -> list[str]:
    """Each configuration's candidates (mean of the selection metric over the selection seeds),
    the one chosen (flagged where it is at an end of the grid), and on which seeds: the reported
    runs use other seeds."""
    chosen_on = [r for r in selection if not r.get("fixed")]
    seeds = ", ".join(str(x) for x in chosen_on[0]["seeds"]) if chosen_on else "none"
    by = selection[0]["by"]
    rows = []
    for record in selection:
        for c in record["candidates"]:
            values = " ".join(f"{k.split('.')[-1]}={v}" for k, v in c["values"].items())
            chosen = "fixed by its block" if record.get("fixed") else "chosen" if c["values"] == record["chosen"] else ""
            if chosen == "chosen" and (edge := grid_edge(record)):
                chosen += f" ({edge} tried: the best may lie beyond)"
            rows.append([record["configuration"], values, c["finished"], na(c[by]), chosen])
    return [heading("Selected per configuration"),
            note(f"Every configuration ran at each of its candidates (all of [select]'s, or those its grid "
                 f"block narrowed them to) on seed(s) {seeds}; the candidate with the "
                 f"highest mean {by} is used for the runs reported below, which use other seeds. A block "
                 "narrowed to one candidate fixes that value: no selection runs."),
            table(["configuration", "candidate", "selection runs finished", f"mean {by}", ""], rows)]
