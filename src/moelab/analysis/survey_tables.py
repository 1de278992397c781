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


def benchmark_renderables(b) -> list:
    """What `moelab survey` prints for one benchmark, in order."""
    lo, hi = min(p.total_b for p in b.chosen.points_), max(p.total_b for p in b.chosen.points_)
    out = [Rule(Text(b.benchmark, style="bold")),
           Text(f"{len(b.chosen.points_)} open-weights points ({billions(lo)}B to {billions(hi)}B total); "
                "one per weights group, its best variant. Intervals: 95% bootstrap.")]
    table = Table(title="which parameter count tracks accuracy (correlations on log10 counts)", title_justify="left")
    for column in ("models", "groups", "r(total)", "r(active)", "partial r(total | active)",
                   "partial r(active | total)", "gamma (1 = total only)"):
        table.add_column(column, justify="right" if column != "models" else "left")
    for a in b.attribution:
        table.add_row(a.subset, str(a.n_groups), _interval(a.r_total), _interval(a.r_active),
                      _interval(a.partial_total), _interval(a.partial_active), _interval(a.gamma))
    out.append(table)
    table = Table(title="leave-one-developer-out: predicting held-out labs' total params from accuracy",
                  title_justify="left")
    for column in ("fit", "held-out points", "labs", "median |error| (decades)", "80% interval coverage", ""):
        table.add_column(column, justify="right" if column not in ("fit", "") else "left")
    for v in b.validation:
        table.add_row(v.model, str(v.n_points), str(v.n_developers), f"{v.median_abs_error_decades:.2f}",
                      f"{v.coverage:.0%}", "<- used" if v.model == b.chosen.name else "")
    out.append(table)
    if b.estimates:
        out.append(estimates_table(f"closed models: estimated total parameters (80% interval), fit: {b.chosen.name}",
                                   b.estimates))
    return out


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
