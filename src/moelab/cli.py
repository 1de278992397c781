"""The `moelab` command line. Thin: parse, call library functions, print with rich.

Errors a user can cause (MoelabError) print one line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from moelab.config import RunConfig, load_config, load_preset, preset_names, validate
from moelab.errors import MoelabError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="How sparse can a language model be before it forgets facts?")
console = Console() if sys.stdout.isatty() else Console(width=160)
DEFAULT_PRESET = "tiny-dense"
DEFAULT_SWEEP = "sparsity-ladder"


def fail(message: str) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.callback()
def main() -> None:
    """moelab: knowledge capacity of dense and Mixture-of-Experts language models."""


def resolve_run_config(config: Path | None, preset: str | None, seed: int | None) -> RunConfig:
    if config is not None and preset is not None:
        raise MoelabError("give a CONFIG file or --preset, not both")
    cfg = load_config(config) if config is not None else load_preset(preset or DEFAULT_PRESET)
    if seed is not None:
        cfg.seed = seed
    return validate(cfg)


def metrics_table(m: dict) -> Table:
    table = Table(title=f"{m['name']}: knowledge stored", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    arch = f"dense (d_ff {m['expert_width']})" if not m["n_experts"] else (
        f"MoE E={m['n_experts']} k={m['top_k']} expert width {m['expert_width']}")
    rows = [
        ("model", arch),
        ("P_total / P_active", f"{m['p_total']:,} / {m['p_active']:,}  ({m['active_fraction']:.1%} active)"),
        ("exposures / steps", f"{m['exposures']} / {m['steps']:,}"),
        ("knowledge base", f"{m['data_kind']}, {m['n_people']:,} people, {m['information_bits']:,.0f} bits"),
        ("bits stored", f"{m['bits']:,.0f}  ({', '.join(f'{k} {v:,.0f}' for k, v in m['bit_terms'].items())})"),
        ("bits / param", f"{m['bits_per_param']:.3f}  (R_max {m['r_max']:.2f})"),
        ("bits / active param", f"{m['bits_per_active_param']:.3f}"),
        ("recall accuracy", f"{m['accuracy']:.1%}"),
        ("wall time", f"{m['wall_seconds']:.1f} s  ({m['tokens_per_second']:,.0f} tokens/s)"),
    ]
    for row in rows:
        table.add_row(*row)
    return table


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="run config TOML file")] = None,
    preset: Annotated[str | None, typer.Option(help=f"a built-in config (default {DEFAULT_PRESET})")] = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/NAME-TIMESTAMP)")] = None,
    seed: Annotated[int | None, typer.Option(help="override the run seed")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace a finished run in --out")] = False,
    list_presets: Annotated[bool, typer.Option("--list-presets", help="print preset names and exit")] = False,
) -> None:
    """Train one model on a synthetic knowledge base and measure the bits it stores."""
    from moelab.run import execute

    if list_presets:
        console.print("\n".join(preset_names()))
        return
    try:
        cfg = resolve_run_config(config, preset, seed)
        out = out or Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (out / "metrics.json").exists() and not overwrite:
            raise MoelabError(f"{out} already holds a finished run; pick another --out or pass --overwrite")
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=Console(stderr=True),
                      disable=not sys.stderr.isatty()) as progress:
            task = progress.add_task(f"training {cfg.name}", total=None)
            metrics = execute(cfg, out, on_step=lambda step, steps: progress.update(
                task, completed=step, total=steps))
    except MoelabError as err:
        fail(str(err))
    console.print(metrics_table(metrics))
    console.print(f"wrote {out / 'metrics.json'}")


@app.command()
def sweep(
    file: Annotated[Path | None, typer.Argument(help="sweep TOML file")] = None,
    preset: Annotated[str | None, typer.Option(help="a built-in sweep (see --list-presets)")] = None,
    out: Annotated[Path | None, typer.Option(help="sweep folder (default runs/SWEEP_NAME)")] = None,
    executor: Annotated[str, typer.Option(help="'local' (process pool) or 'ray'")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to join (default: start a local one)")] = None,
    workers: Annotated[int | None, typer.Option(help="parallel runs (default: one per core)")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="rerun failed runs")] = False,
    list_presets: Annotated[bool, typer.Option("--list-presets", help="print sweep presets and exit")] = False,
) -> None:
    """Train a grid of runs and write a report; rerun the same command to resume after an interruption."""
    from moelab.analysis.report import write_report
    from moelab.sweeps import Store, load_sweep, load_sweep_preset, make_executor, run_sweep, sweep_preset_names
    from moelab.io import atomic_write_json

    if list_presets:
        for name in sweep_preset_names():
            console.print(f"[bold]{name}[/]: {load_sweep_preset(name).description}", highlight=False)
        return
    try:
        if file is not None and preset is not None:
            raise MoelabError("give a sweep FILE or --preset, not both")
        spec = load_sweep(file) if file is not None else load_sweep_preset(preset or DEFAULT_SWEEP)
        if workers is not None and workers < 1:
            raise MoelabError(f"--workers {workers}: must be at least 1")
        out = out or Path("runs") / spec.name
        console.print(f"sweep [bold]{spec.name}[/]: {len(spec.runs)} runs -> {out}", highlight=False)
        store = Store(out)
        keys = [r.key for r in spec.runs]
        atomic_write_json(out / "sweep.json", {"name": spec.name, "description": spec.description, "keys": keys})
        engine = make_executor(executor, workers, ray_address)
    except MoelabError as err:
        fail(str(err))
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                      console=Console(stderr=True)) as progress:
            task = progress.add_task("runs", total=len(spec.runs), status="")

            def show(p) -> None:
                best = "" if p.best is None else f", best {p.best:.3f} bits/param"
                progress.update(task, completed=p.done + p.failed,
                                status=f"{p.done} done, {p.running} running, {p.failed} failed{best}")

            run_sweep(spec, store, executor=engine, retry_failed=retry_failed, on_progress=show)
    except KeyboardInterrupt:
        Console(stderr=True).print(f"interrupted: finished runs are kept in {out}; "
                                   "rerun the same command to finish the rest", highlight=False)
        raise typer.Exit(130) from None
    finally:
        engine.close()
    rows = store.rows(keys)
    store.close()
    console.print(runs_table(rows))
    report = write_report(rows, out, title=f"moelab sweep: {spec.name}", description=spec.description)
    console.print(f"report: {report}  (table: {out / 'runs.csv'}, store: {out / 'store.sqlite'})")


@app.command()
def report(folder: Annotated[Path, typer.Argument(help="a sweep folder")]) -> None:
    """Rewrite report.html, headline.png and runs.csv of a sweep folder from its store."""
    import json

    from moelab.analysis.report import write_report
    from moelab.sweeps import Store

    if not (folder / "store.sqlite").exists():
        fail(f"{folder}: no store.sqlite here; give the folder a sweep wrote")
    meta = json.loads((folder / "sweep.json").read_text()) if (folder / "sweep.json").exists() else {}
    store = Store(folder)
    rows = store.rows(meta.get("keys"))
    store.close()
    path = write_report(rows, folder, title=f"moelab sweep: {meta.get('name', folder.name)}",
                        description=meta.get("description", ""))
    console.print(f"report: {path}")


def runs_table(rows: list[dict]) -> Table:
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


if __name__ == "__main__":
    app()


def _interval(e) -> str:
    return "n/a" if e is None else f"{e.value:+.2f} [{e.low:+.2f}, {e.high:+.2f}]"


def _billions(x: float) -> str:
    if not math.isfinite(x):
        return "unbounded"
    return f"{x:,.0f}" if x >= 10 else f"{x:.2g}"


@app.command()
def survey(
    csv_file: Annotated[Path | None, typer.Argument(help="survey CSV (default: the bundled data)")] = None,
    benchmark: Annotated[list[str] | None, typer.Option(help="benchmark(s) to analyse (default: all with data)")] = None,
    predict: Annotated[Path | None, typer.Option(help="CSV of the same columns: estimate total params per row")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
    html: Annotated[Path | None, typer.Option(help="write report.html and plots to this folder")] = None,
    skip_bad_rows: Annotated[bool, typer.Option("--skip-bad-rows", help="report bad rows and skip them")] = False,
    n_boot: Annotated[int, typer.Option(help="bootstrap resamples for intervals")] = 1000,
) -> None:
    """Knowledge accuracy vs total and active parameters of public models; size estimates for closed ones."""
    import json

    from moelab.analysis import survey as sv

    err_console = Console(stderr=True)
    try:
        if n_boot < 100:
            raise MoelabError(f"--n-boot {n_boot}: use at least 100 resamples")
        unknown = [b for b in benchmark or [] if b not in sv.BENCHMARKS]
        if unknown:
            raise MoelabError(f"--benchmark {unknown[0]!r}: unknown; known: {', '.join(sv.BENCHMARKS)}")
        rows, problems = sv.load_rows(csv_file, skip_bad_rows)
        targets = None
        if predict is not None:
            targets, predict_problems = sv.parse_rows(predict)
            if predict_problems and not skip_bad_rows:
                raise sv.SurveyDataError(f"{len(predict_problems)} bad field(s) in --predict file; fix them "
                                         "or pass --skip-bad-rows:\n" + "\n".join(predict_problems))
            problems += predict_problems
    except MoelabError as err:
        fail(str(err))
    for problem in problems:
        err_console.print(f"skipped: {problem}", highlight=False, soft_wrap=True)
    results = sv.survey(rows, benchmark, n_boot)
    if not results:
        fail(f"no benchmark has {sv.MIN_GROUPS} or more open weights groups with accuracy to fit")
    predictions = sv.estimate_rows(results, targets) if targets is not None else None
    if html is not None:
        from moelab.analysis.report import write_survey_report

        path = write_survey_report(results, rows, html)
        err_console.print(f"report: {path}", highlight=False)
    if json_output:
        document = {"benchmarks": sv.results_json(results)}
        if predictions is not None:
            document["predictions"] = [sv.estimate_json(e) for e in predictions]
        print(json.dumps(document, indent=2))
        return
    for b in results:
        print_benchmark_survey(b)
    if predictions is not None:
        console.print(estimates_table("estimates for " + str(predict), predictions))


def print_benchmark_survey(b) -> None:
    lo, hi = min(p.total_b for p in b.chosen.points), max(p.total_b for p in b.chosen.points)
    console.rule(f"[bold]{b.benchmark}[/]")
    console.print(f"{len(b.chosen.points)} open-weights points ({_billions(lo)}B to {_billions(hi)}B total); "
                  "one per weights group, its best variant. Intervals: 95% bootstrap.", highlight=False)
    table = Table(title="which parameter count tracks accuracy (correlations on log10 counts)", title_justify="left")
    for column in ("models", "groups", "r(total)", "r(active)", "partial r(total | active)",
                   "partial r(active | total)", "gamma (1 = total only)"):
        table.add_column(column, justify="right" if column != "models" else "left")
    for a in b.attribution:
        table.add_row(a.subset, str(a.n_groups), _interval(a.r_total), _interval(a.r_active),
                      _interval(a.partial_total), _interval(a.partial_active), _interval(a.gamma))
    console.print(table)
    table = Table(title="leave-one-developer-out: predicting held-out labs' total params from accuracy",
                  title_justify="left")
    for column in ("fit", "held-out points", "labs", "median |error| (decades)", "80% interval coverage", ""):
        table.add_column(column, justify="right" if column not in ("fit", "") else "left")
    for v in b.validation:
        chosen = "<- used" if v.model == b.chosen.name else ""
        table.add_row(v.model, str(v.n_points), str(v.n_developers), f"{v.median_abs_error_decades:.2f}",
                      f"{v.coverage:.0%}", chosen)
    console.print(table)
    if b.estimates:
        console.print(estimates_table(f"closed models: estimated total parameters (80% interval), "
                                      f"fit: {b.chosen.name}", b.estimates))


def estimates_table(title: str, estimates) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("model", "variant", "accuracy %", "estimate (B)", "80% interval (B)", "beyond open models?"):
        table.add_column(column, justify="left" if column in ("model", "variant", "beyond open models?") else "right",
                         no_wrap=column == "model")
    for e in sorted(estimates, key=lambda e: -e.accuracy_pct):
        flag = f"yes, +{e.extrapolation_decades:.1f} decades" if e.extrapolated else ""
        table.add_row(e.model, e.variant.split(";")[0][:28], f"{e.accuracy_pct:.1f}", _billions(e.estimate_b),
                      f"{_billions(e.low_b)} to {_billions(e.high_b)}", flag)
    return table
