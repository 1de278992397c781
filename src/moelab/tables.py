"""Terminal tables of the lab's results: one run, a sweep's runs, quantization, estimator identities.

Cells are plain text: the CLI's consoles print them with Rich markup off.
"""

from __future__ import annotations

from rich.table import Table

from moelab.config import REASONING_KINDS
from moelab.runs.folder import Metrics


def key_value_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def architecture(m: Metrics) -> str:
    if not m["n_experts"]:
        return f"dense (d_ff {m['expert_width']})"
    return f"MoE E={m['n_experts']} k={m['top_k']} expert width {m['expert_width']}"


def run_table(m: Metrics) -> Table:
    """One run's metrics (`metrics.json`)."""
    reasoning = m["data_kind"] in REASONING_KINDS
    rows = [("model", architecture(m)),
            ("P_total / P_active", f"{m['p_total']:,} / {m['p_active']:,}  ({m['active_fraction']:.1%} active)"),
            ("exposures / steps", f"{m['exposures']} / {m['steps']:,}")]
    if reasoning:  # nothing to store: fresh examples, scored on held-out ones
        rows += [("task", f"{m['data_kind']}, {m['n_people']:,} fresh examples per exposure"),
                 ("held-out accuracy", f"{m['accuracy']:.1%}")]
    else:
        terms = ", ".join(f"{k} {v:,.0f}" for k, v in m["bit_terms"].items())
        rows += [("knowledge base", f"{m['data_kind']}, {m['n_people']:,} people, {m['information_bits']:,.0f} bits"),
                 ("bits stored", f"{m['bits']:,.0f}  ({terms})"),
                 ("bits / param", f"{m['bits_per_param']:.3f}  (R_max {m['r_max']:.2f})"),
                 ("bits / active param", f"{m['bits_per_active_param']:.3f}"),
                 ("recall accuracy", f"{m['accuracy']:.1%}")]
        a = m.get("abstention")
        if a:
            low, high = a["omniscience_index_interval"]
            rows += [("abstention", f"real people: {a['real']['correct']['share']:.1%} correct, "
                                    f"{a['real']['incorrect']['share']:.1%} wrong, {a['real']['abstained']['share']:.1%} "
                                    f"abstained; {a['invented']['people']:,} invented: "
                                    f"{a['invented']['abstained']['share']:.1%} abstained"),
                     ("Omniscience Index", f"{a['omniscience_index']:+.1f} [{low:+.1f}, {high:+.1f}]; hallucination rate "
                                           f"{a['hallucination_rate']:.1%}; by threshold at best "
                                           f"{a['threshold_best']['omniscience_index']:+.1f}")]
    c = m.get("continual")
    if c:  # a continued run: what it learned on B and lost on A
        rows += [("continued from", f"run {c['parent_key']}: {c['new_people']:,} new people, "
                                    f"{c['replay_rows_per_exposure']:,} replay rows per pass, "
                                    f"training {'+'.join(c['trainable']) or 'nothing'}"),
                 ("trainable / added", f"{c['trainable_params']:,} / {c['added_params']:,} parameters"),
                 ("bits on A", f"{c['bits_a_before']:,.0f} -> {c['bits_a_after']:,.0f}  "
                               f"(forgetting {c['forgetting']:.1%}; recall {c['recall_a_before']:.1%} -> "
                               f"{c['recall_a_after']:.1%})"),
                 ("bits on B", f"{c['bits_b_before']:,.0f} -> {c['bits_b_after']:,.0f}  (gained "
                               f"{c['bits_gained_b']:,.0f} of {c['information_bits_b']:,.0f}; recall "
                               f"{c['recall_b_after']:.1%})")]
    rows.append(("wall time", f"{m['wall_seconds']:.1f} s  ({m['tokens_per_second']:,.0f} tokens/s, {m['device']})"))
    kind = "reasoning task" if reasoning else "knowledge stored"
    return key_value_table(f"{m['name']}: {kind}", rows)


def runs_table(rows: list[dict]) -> Table:
    """A sweep's store rows, smallest total first; unfinished runs show their status and reason."""
    table = Table(title="runs", title_justify="left")
    for column in ("run", "E", "k", "P_total", "P_active", "bits", "bits/param", "bits/active", "recall", "status"):
        table.add_column(column, justify="left" if column in ("run", "status") else "right",
                         no_wrap=column == "run")
    for row in sorted(rows, key=lambda r: (r["metrics"] or {}).get("p_total", 0)):
        m = row["metrics"]
        if m is None:
            table.add_row(row["label"], *[""] * 8, f"{row['status']} {row['reason'] or ''}".strip())
            continue
        table.add_row(row["label"], str(m["n_experts"]), str(m["top_k"]), f"{m['p_total']:,}",
                      f"{m['p_active']:,}", f"{m['bits']:,.0f}", f"{m['bits_per_param']:.3f}",
                      f"{m['bits_per_active_param']:.3f}", f"{m['accuracy']:.1%}", row["status"])
    return table


def quantization_table(title: str, rows: list[dict]) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("weights", "bits stored", "vs full precision", "bits / param", "storage used", "recall"):
        table.add_column(name, justify="right")
    for r in rows:
        name = "fp32" if r["weight_bits"] == 32 else f"int{r['weight_bits']}"
        table.add_row(name + (" (embeddings fp32)" if r["embeddings_full_precision"] else ""), f"{r['bits']:,.0f}",
                      f"{r['bits_vs_full_precision']:.1%}", f"{r['bits_per_param']:.3f}",
                      f"{r['storage_used']:.1%}", f"{r['accuracy']:.1%}")
    return table


def fact_routing_table(runs: list[tuple[str, str, list[dict]]]) -> Table:
    """`moelab routing`: per run (label, router, per-layer rows of evaluation/routing.py's fact_routing)."""
    table = Table(title="how the recall values' predictions are routed (per MoE layer)", title_justify="left")
    for name, justify in (("run", "left"), ("router", "left"), ("layer", "right"), ("token determinism", "right"),
                          ("experts used", "right"), ("effective experts", "right")):
        table.add_column(name, justify=justify)
    for label, router, layers in runs:
        for i, layer in enumerate(layers):
            table.add_row(label, router, str(i), f"{layer['token_determinism']:.3f}", str(layer["experts_used"]),
                          f"{layer['effective_experts']:.1f}")
    return table


def identities_table(rows: list[dict]) -> Table:
    table = Table(title="estimator identities (oracle model through the full probe pipeline)", title_justify="left")
    for name, justify in (("identity", "left"), ("expected", "right"), ("measured", "right"),
                          ("relative error", "right")):
        table.add_column(name, justify=justify)
    for r in rows:
        table.add_row(r["identity"], f"{r['expected']:.6f}", f"{r['measured']:.6f}", f"{r['relative_error']:.1e}")
    return table
