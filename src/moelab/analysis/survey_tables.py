"""Terminal tables for `moelab survey`: attribution, held-out validation and size estimates."""

from __future__ import annotations

import math

from rich.rule import Rule
from rich.table import Table
from rich.text import Text


def billions(x: float) -> str:
    if not math.isfinite(x):
        return "unbounded"
    return f"{x:,.0f}" if x >= 10 else f"{x:.2g}"


def _interval(e) -> str:
    return "n/a" if e is None else e.format("+.2f")


def benchmark_renderables(b, rows) -> list:
    """What `moelab survey` prints for one benchmark, in order."""
    from moelab.analysis.survey import frontier_claim, mode_agreement

    out = [Rule(Text(b.benchmark, style="bold"))]
    table = Table(title="which parameter count tracks accuracy (correlations on log10 counts, 95% bootstrap)",
                  title_justify="left")
    for column in ("models", "groups", "r(total)", "r(active)", "partial r(total | active)",
                   "partial r(active | total)", "gamma (1 = total only)"):
        table.add_column(column, justify="right" if column != "models" else "left")
    for a in b.attribution:
        table.add_row(a.subset, str(a.n_groups), *(_interval(a.stats.get(k)) for k in
                      ("r_total", "r_active", "partial_total", "partial_active", "gamma")))
    out.append(table)
    if b.selection is None:
        out.append(Text(b.note))
        return out
    chosen = b.selection.chosen
    lo, hi = chosen.total_range_
    newest = chosen.newest_.isoformat() if chosen.newest_ else "unknown"
    out.append(Text(f"{len(chosen.points_)} open-weights points ({billions(lo)}B to {billions(hi)}B total, newest "
                    f"released {newest}), one per weights group and mode. Size models: log10 total from the "
                    f"knowledge score, chosen by {b.selection.validation}; held-out error in decades, share "
                    "within 2x, coverage of the 80% interval, median signed error (+: sizes overestimated)."))
    table = Table(title=f"size models by {b.selection.validation} (the best 10 of {len(b.selection.results)})",
                  title_justify="left")
    for column in ("size model", "|error|", "2x", "bias", ""):
        table.add_column(column, justify="left" if column in ("size model", "") else "right")
    for r in sorted(b.selection.results, key=lambda r: r.score)[:10]:
        v = r.rolling if b.selection.validation == "rolling origin" else r.lodo
        table.add_row(r.candidate.name, *_validation_cells(v, coverage=False),
                      "<- chosen" if r.candidate == chosen.candidate else "")
    out.append(table)
    out.append(held_out_table(b))
    coefficients = chosen.coefficients()
    out.append(Text("chosen size model, decades of total parameters per unit (95%): " + "; ".join(
        f"{name} {e.format('+.3f')}" for name, e in coefficients.items())
        + (f"; lab effects spread {math.sqrt(chosen.fit_.tau2_):.2f} decades (sd)" if chosen.candidate.developer != "none"
           else "")))
    scales = chosen.scales
    out.append(Text(f"80% intervals: the fit's spread x{scales.known:.2f} (labs it saw) or x{scales.unseen:.2f} "
                    f"(unseen labs), plus {scales.per_month:.3f} decades per month after its newest release and "
                    f"{scales.per_decade:.2f} per decade above its largest size (in quadrature; "
                    + ("calibrated" if scales.per_decade_calibrated else "a stated prior, too few held-out forecasts "
                       "lie there to calibrate it") + "), the rest calibrated on the held-out forecasts"))
    agreement = mode_agreement(b, rows)
    if agreement:
        ratios = sorted(abs(math.log10(a["ratio"])) for a in agreement)
        worst = max(agreement, key=lambda a: abs(math.log10(a["ratio"])))
        out.append(Text(f"one set of weights in two modes, reasoning / non-reasoning estimate: median "
                        f"x{10 ** ratios[len(ratios) // 2]:.2f} apart over {len(agreement)} groups, worst "
                        f"{worst['ratio']:.2f} ({worst['group']})"))
    if b.estimates:
        out.append(estimates_table(f"closed models: estimated total parameters (80% interval), size model: "
                                   f"{chosen.candidate.name}", b.estimates))
        out.append(Text(frontier_claim(b)[1]))
    return out


def _validation_cells(v: dict, coverage: bool = True) -> list[str]:
    if not v["n"] or not math.isfinite(v["median_abs_error_decades"]):
        return ["-"] * (4 if coverage else 3)
    cells = [f"{v['median_abs_error_decades']:.2f}", f"{v['within_2x']:.0%}"]
    cells += [f"{v['coverage']:.0%}"] if coverage else []
    return cells + [f"{v['median_error_decades']:+.2f}"]


def held_out_table(b) -> Table:
    """The chosen model and survey v2's side by side, with their own intervals, by months ahead
    and by how far the true size lies above the fitted ones."""
    from moelab.analysis import size
    from moelab.analysis.survey import held_out_json, held_out_models

    models = held_out_models(b.selection)
    table = Table(title=f"held-out forecasts ({b.selection.validation}): median |error| (decades), within 2x, 80% "
                        "coverage, median signed error, each model at its own interval widths", title_justify="left")
    table.add_column("forecasts")
    table.add_column("n", justify="right")
    for name in models:
        table.add_column(name, justify="right")
    first = size.HORIZON_MONTHS
    summaries = []  # per model: (slice label, summary), in the table's order
    for _, scales, forecasts in models.values():
        held = held_out_json(scales, forecasts)
        summaries.append([(f"all within {first} months", held[f"within {first} months"]),
                          *held["by_months_ahead"].items(),
                          *((f"{name} (within {first} months)", v)
                            for name, v in held[f"by_size_within {first} months"].items())])
    for row in zip(*summaries):
        label, summary = row[0]
        table.add_row(label, str(summary["n"]), *(" ".join(_validation_cells(v)) for _, v in row))
    return table


def estimates_table(title: str, estimates) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("model", "mode", "accuracy %", "estimate (B)", "80% interval (B)", "months after fit",
                   "decades outside sizes"):
        table.add_column(column, justify="left" if column in ("model", "mode") else "right",
                         max_width=40 if column == "model" else None,
                         min_width={"model": None, "mode": 19}.get(column, len(column)))
    for e in sorted(estimates, key=lambda e: -e.accuracy_pct):
        mode = {True: "reasoning", False: "non-reasoning", None: "unknown"}[e.reasoning]
        table.add_row(e.model, mode + (f" ({e.mode_source})" if e.mode_source in ("name", "sibling") else ""),
                      f"{e.accuracy_pct:.1f}", billions(e.estimate_b), f"{billions(e.low_b)} to {billions(e.high_b)}",
                      f"{e.months_ahead:.0f}" if e.months_ahead else "",
                      f"+{e.extrapolation_decades:.1f}" if e.extrapolated else "")
    return table
