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
    lo, hi = min(p.total_b for p in chosen.points_), max(p.total_b for p in chosen.points_)
    out.append(Text(f"{len(chosen.points_)} open-weights points ({billions(lo)}B to {billions(hi)}B total), one per "
                    "weights group and mode. Size models: log10 total from the knowledge score; held-out error in "
                    "decades, share within 2x, coverage of the 80% interval."))
    table = Table(title="size models, validated as they are used: unseen labs and later months", title_justify="left")
    for column in ("size model", "LODO |error|", "LODO 2x", "LODO cover", "time |error|", "time 2x", "time cover", ""):
        table.add_column(column, justify="left" if column in ("size model", "") else "right")
    for r in sorted(b.selection.results, key=lambda r: r.score)[:12]:
        used = r.candidate == chosen.candidate
        cells = [_validation_cells(v) for v in ((b.selection.chosen_result if used else r).lodo,
                                                (b.selection.chosen_result if used else r).time)]
        table.add_row(r.candidate.name, *cells[0], *cells[1],
                      f"<- used (intervals x{chosen.scales.unseen:.2f} unseen labs, x{chosen.scales.known:.2f} known)" if used else "")
    out.append(table)
    coefficients = chosen.coefficients()
    out.append(Text("chosen size model, decades of total parameters per unit (95%): " + "; ".join(
        f"{name} {e.format('+.3f')}" for name, e in coefficients.items())
        + (f"; lab effects spread {math.sqrt(chosen.fit_.tau2_):.2f} decades (sd)" if chosen.candidate.developer else "")))
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


def _validation_cells(v: dict) -> list[str]:
    if not v["n"]:
        return ["-", "-", "-"]
    return [f"{v['median_abs_error_decades']:.2f}", f"{v['within_2x']:.0%}", f"{v['coverage']:.0%}"]


def estimates_table(title: str, estimates) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("model", "variant", "accuracy %", "estimate (B)", "80% interval (B)", "beyond open models?"):
        table.add_column(column, justify="left" if column in ("model", "variant", "beyond open models?") else "right",
                         no_wrap=column == "model")
    for e in sorted(estimates, key=lambda e: -e.accuracy_pct):
        flag = f"yes, +{e.extrapolation_decades:.1f} decades" if e.extrapolated else ""
        table.add_row(e.model, e.variant.split(";")[0][:28], f"{e.accuracy_pct:.1f}", billions(e.estimate_b),
                      f"{billions(e.low_b)} to {billions(e.high_b)}", flag)
    return table
