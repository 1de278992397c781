"""Terminal tables for `moelab design`: accounting against published models, and candidates."""

from __future__ import annotations

from rich.table import Table


def validation_table(rows: list[dict]) -> Table:
    table = Table(title="accounting against published models", title_justify="left")
    for column in ("model", "total (B)", "published", "error", "active (B)", "published", "error",
                   "KV bytes/token (bf16)", "reference"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        reference = r["reference_kv_bytes_per_token"]
        table.add_row(r["model"], f"{r['total_b']:.2f}", f"{r['published_total_b']}", f"{r['total_error']:+.2%}",
                      f"{r['active_b']:.2f}", f"{r['published_active_b']}", f"{r['active_error']:+.2%}",
                      f"{r['kv_bytes_per_token_bf16']:,.0f}", "" if reference is None else f"{reference:,}")
    return table


def candidates_table(rows: list[dict], title: str, measured: bool) -> Table:
    """One row per candidate: shape, exact counts, FLOPs, and memory per GPU against the GPU's."""
    table = Table(title=title, title_justify="left")
    columns = ["hidden", "layers", "heads", "E", "k", "shared", "expert ffn", "total (B)", "active (B)",
               "active %", "train GFLOP/token", "KV KiB/token/GPU", "weights GB/GPU", "train GB/GPU",
               "warnings", "errors"] + (["GEMM TFLOP/s"] if measured else [])
    for column in columns:
        table.add_column(column, justify="right")
    for r in rows:
        errors = sum(w.startswith("error") for w in r["warnings"])
        cells = [r["hidden"], r["layers"], r["heads"], r["n_experts"], r["top_k"], r["n_shared"], r["expert_ffn"],
                 f"{r['total_b']:.1f}", f"{r['active_b']:.2f}", f"{r['active_fraction']:.2%}",
                 f"{r['train_flops_per_token'] / 1e9:.0f}", f"{r['kv_bytes_per_token_per_gpu_bf16'] / 1024:.0f}",
                 f"{r['weights_gb_per_gpu']:,.0f}", f"{r['training_gb_per_gpu']:,.0f}",
                 len(r["warnings"]) - errors, errors]
        if measured:
            cells.append(f"{r['measured_expert_gemm_tflops']:.3f}")
        table.add_row(*map(str, cells))
    return table


def best_findings(rows: list[dict]) -> list[str]:
    """The best candidate's findings, to print under the table (every row shares most of them)."""
    return [f"best candidate: {w}" for w in rows[0]["warnings"]] if rows else []
