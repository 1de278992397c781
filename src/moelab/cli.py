"""The `moelab` command line. Thin: parse, call library functions, print with rich.

Errors a user can cause (MoelabError) print one line and exit with status 2, without a traceback.
Both consoles have Rich markup off: file names, model names and messages are printed as given
(a `[set]` in an error or a `[/]` in a name is text, never markup); styles are set explicitly.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from moelab.config import REASONING_KINDS, RunConfig, load_config, load_preset, preset_names, validate
from moelab.errors import MoelabError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="How sparse can a language model be before it forgets facts?")
console = Console(markup=False) if sys.stdout.isatty() else Console(width=160, markup=False)
err_console = Console(stderr=True, markup=False)
DEFAULT_PRESET = "tiny-dense"
DEFAULT_SWEEP = "sparsity-ladder"


def fail(message: str) -> None:
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
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
    reasoning = m["data_kind"] in REASONING_KINDS
    title = f"{m['name']}: {'reasoning task' if reasoning else 'knowledge stored'}"
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    arch = f"dense (d_ff {m['expert_width']})" if not m["n_experts"] else (
        f"MoE E={m['n_experts']} k={m['top_k']} expert width {m['expert_width']}")
    rows = [
        ("model", arch),
        ("P_total / P_active", f"{m['p_total']:,} / {m['p_active']:,}  ({m['active_fraction']:.1%} active)"),
        ("exposures / steps", f"{m['exposures']} / {m['steps']:,}"),
    ]
    if reasoning:  # nothing to store: fresh examples, scored on held-out ones
        rows += [("task", f"{m['data_kind']}, {m['n_people']:,} fresh examples per exposure"),
                 ("held-out accuracy", f"{m['accuracy']:.1%}")]
    else:
        rows += [
            ("knowledge base", f"{m['data_kind']}, {m['n_people']:,} people, {m['information_bits']:,.0f} bits"),
            ("bits stored", f"{m['bits']:,.0f}  ({', '.join(f'{k} {v:,.0f}' for k, v in m['bit_terms'].items())})"),
            ("bits / param", f"{m['bits_per_param']:.3f}  (R_max {m['r_max']:.2f})"),
            ("bits / active param", f"{m['bits_per_active_param']:.3f}"),
            ("recall accuracy", f"{m['accuracy']:.1%}"),
        ]
    rows.append(("wall time", f"{m['wall_seconds']:.1f} s  ({m['tokens_per_second']:,.0f} tokens/s)"))
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
        with Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(), console=err_console,
                      disable=not sys.stderr.isatty()) as progress:
            task = progress.add_task(f"training {cfg.name}", total=None)
            metrics = execute(cfg, out, on_step=lambda step, steps: progress.update(
                task, completed=step, total=steps))
    except MoelabError as err:
        fail(str(err))
    console.print(metrics_table(metrics))
    console.print(f"wrote {out / 'metrics.json'}")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


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
            console.print(Text.assemble((name, "bold"), f": {load_sweep_preset(name).description}"))
        return
    try:
        if file is not None and preset is not None:
            raise MoelabError("give a sweep FILE or --preset, not both")
        spec = load_sweep(file) if file is not None else load_sweep_preset(preset or DEFAULT_SWEEP)
        if workers is not None and workers < 1:
            raise MoelabError(f"--workers {workers}: must be at least 1")
        out = out or Path("runs") / spec.name
        console.print(Text.assemble("sweep ", (spec.name, "bold"), f": {len(spec.runs)} runs -> {out}"))
        store = Store(out)
        for note in store.notes:
            err_console.print(f"note: {note}", highlight=False)
        keys = [r.key for r in spec.runs]
        atomic_write_json(out / "sweep.json", {"name": spec.name, "description": spec.description, "keys": keys})
        engine = make_executor(executor, workers, ray_address)
    except MoelabError as err:
        fail(str(err))
    try:
        with Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                      MofNCompleteColumn(), TextColumn("{task.fields[status]}", markup=False),
                      TimeRemainingColumn(), console=err_console) as progress:
            task = progress.add_task("runs", total=len(spec.runs), status="")

            def show(p) -> None:
                best = "" if p.best is None else f", best {p.best:.3f} bits/param"
                progress.update(task, completed=p.done + p.failed,
                                status=f"{p.done} done, {p.running} running, {p.failed} failed{best}")

            signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's stop: the same as Ctrl-C
            run_sweep(spec, store, executor=engine, retry_failed=retry_failed, on_progress=show)
            for note in store.notes:
                err_console.print(f"note: {note}", highlight=False)
    except KeyboardInterrupt:
        err_console.print(f"interrupted: finished runs are kept in {out}; "
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
    """Rewrite a sweep folder's report.html, runs.csv and figures from its store."""
    import json

    from moelab.analysis.report import write_report
    from moelab.sweeps import Store

    if not (folder / "store.sqlite").exists():
        fail(f"{folder}: no store.sqlite here; give the folder a sweep wrote")
    store = Store(folder)  # first: opening re-keys an old store and its sweep.json
    meta = json.loads((folder / "sweep.json").read_text()) if (folder / "sweep.json").exists() else {}
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
    from moelab.analysis import survey as sv
    from moelab.io import dumps

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
        print(dumps(document))  # strict JSON: NaN becomes null
        return
    for b in results:
        print_benchmark_survey(b)
    if predictions is not None:
        console.print(estimates_table("estimates for " + str(predict), predictions))


def print_benchmark_survey(b) -> None:
    lo, hi = min(p.total_b for p in b.chosen.points), max(p.total_b for p in b.chosen.points)
    console.rule(Text(b.benchmark, style="bold"))
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


@app.command()
def design(
    total_b: Annotated[float | None, typer.Option(help="total parameter budget, billions")] = None,
    active_b: Annotated[float | None, typer.Option(help="active parameter budget, billions")] = None,
    gpu: Annotated[str, typer.Option(help="a100, h100, h200, b200 or cpu")] = "h100",
    tp: Annotated[int, typer.Option(help="tensor-parallel degree")] = 1,
    ep: Annotated[int, typer.Option(help="expert-parallel degree")] = 1,
    vocab: Annotated[int, typer.Option(help="tokenizer vocabulary (padded for alignment)")] = 128_000,
    layers_min: Annotated[int, typer.Option(help="fewest layers to consider")] = 24,
    layers_max: Annotated[int, typer.Option(help="most layers to consider")] = 96,
    tokens_per_step: Annotated[int, typer.Option(help="tokens per GPU per step (expert load, waves)")] = 8192,
    top: Annotated[int, typer.Option(help="candidates to show")] = 10,
    measure: Annotated[bool, typer.Option("--measure", help="time each candidate's GEMM shapes here")] = False,
    write: Annotated[Path | None, typer.Option(help="write the best candidate to this TOML file")] = None,
    scale_to_lab: Annotated[bool, typer.Option("--scale-to-lab", help="with --write: a trainable lab config")] = False,
    validate_golden: Annotated[bool, typer.Option("--validate", help="check accounting against published models")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Hardware-aligned MoE configurations for a parameter budget, with exact accounting."""
    import json

    from moelab.design import golden
    from moelab.design.hardware import hardware
    from moelab.design.rules import Deployment
    from moelab.design.search import candidate_row, search

    if validate_golden:
        rows = golden.validation_rows()
        if json_output:
            print(json.dumps(rows, indent=2))
        else:
            table = Table(title="accounting against published models", title_justify="left")
            for column in ("model", "total (B)", "published", "error", "active (B)", "published", "error",
                           "KV bytes/token (bf16)", "reference"):
                table.add_column(column, justify="left" if column == "model" else "right")
            for r in rows:
                table.add_row(r["model"], f"{r['total_b']:.2f}", f"{r['published_total_b']}", f"{r['total_error']:+.2%}",
                              f"{r['active_b']:.2f}", f"{r['published_active_b']}", f"{r['active_error']:+.2%}",
                              f"{r['kv_bytes_per_token_bf16']:,.0f}",
                              "" if r["reference_kv_bytes_per_token"] is None else f"{r['reference_kv_bytes_per_token']:,}")
            console.print(table)
        worst = max(max(abs(r["total_error"]), abs(r["active_error"])) for r in rows)
        if worst > 0.01:
            fail(f"accounting is {worst:.2%} off a published count (limit 1%)")
        return
    try:
        if total_b is None or active_b is None:
            raise MoelabError("give --total-b and --active-b (or --validate)")
        if tp < 1 or ep < 1 or top < 1 or tokens_per_step < 1:
            raise MoelabError("--tp, --ep, --top and --tokens-per-step must be positive")
        deployment = Deployment(hardware(gpu), tp=tp, ep=ep, tokens_per_step=tokens_per_step)
        candidates = search(total_b, active_b, deployment, vocab, (layers_min, layers_max), top=top)
        if not candidates:
            raise MoelabError("no aligned candidate within 5% of both budgets; widen --layers-min/--layers-max "
                              "or relax --tp/--ep")
    except MoelabError as err:
        fail(str(err))
    if measure:
        import torch

        from moelab.design.measure import measure as measure_gemms

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        measure_gemms(candidates, tokens_per_step, device)
        candidates.sort(key=lambda c: -c.measured_tflops)
    rows = [candidate_row(c) for c in candidates]
    if write is not None:
        write_design(candidates[0], write, scale_to_lab)
    if json_output:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"candidates for {total_b:g}B total / {active_b:g}B active on {deployment.hardware.name}, "
                        f"tp={tp} ep={ep}" + (" (ranked by measured GEMM TFLOP/s)" if measure else ""),
                  title_justify="left")
    columns = ["hidden", "layers", "heads", "E", "k", "shared", "expert ffn", "total (B)", "active (B)",
               "active %", "train GFLOP/token", "KV KiB/token", "warnings"] + (["GEMM TFLOP/s"] if measure else [])
    for column in columns:
        table.add_column(column, justify="right")
    for r in rows:
        cells = [r["hidden"], r["layers"], r["heads"], r["n_experts"], r["top_k"], r["n_shared"], r["expert_ffn"],
                 f"{r['total_b']:.1f}", f"{r['active_b']:.2f}", f"{r['active_fraction']:.2%}",
                 f"{r['train_flops_per_token'] / 1e9:.0f}", f"{r['kv_bytes_per_token_bf16'] / 1024:.0f}",
                 len(r["warnings"])]
        if measure:
            cells.append(f"{r['measured_expert_gemm_tflops']:.3f}")
        table.add_row(*map(str, cells))
    console.print(table)
    if write is not None:
        console.print(f"wrote {write}")


def write_design(candidate, path: Path, scale_to_lab: bool) -> None:
    """The best candidate as a TOML file: its architecture, or (--scale-to-lab) a lab run config
    with the same E, k, shared experts and expert width relative to hidden size."""
    import dataclasses

    import tomli_w

    from moelab.config import MoEConfig, ModelConfig, RunConfig, save_config, validate
    from moelab.io import atomic_write_text

    a = candidate.arch
    if not scale_to_lab:
        atomic_write_text(path, tomli_w.dumps({"architecture": dataclasses.asdict(a)}))
        return
    d_model = 48
    width = max(8, round(d_model * a.expert_ffn / a.hidden / 8) * 8)
    cfg = validate(RunConfig(
        name=f"lab-{a.name}",
        model=ModelConfig(d_model=d_model, n_layers=2, n_heads=4, d_ff=max(8, round(d_model * a.dense_ffn / a.hidden / 8) * 8),
                          mlp="swiglu", moe=MoEConfig(n_experts=a.n_experts, top_k=a.top_k, expert_width=width,
                                                      n_shared_experts=a.n_shared, renormalize=a.top_k > 1,
                                                      aux_loss_weight=0.01, z_loss_weight=0.001))))
    save_config(cfg, path)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="a finished run folder")],
    hf: Annotated[Path, typer.Option(help="write a Hugging Face transformers model folder here")],
) -> None:
    """Export a lab checkpoint so AutoModelForCausalLM.from_pretrained loads it (Qwen3 / Qwen3-MoE)."""
    from moelab.models.hf import export_hf
    from moelab.run import load_run

    try:
        cfg, kb, model = load_run(run_dir)
        folder = export_hf(cfg, kb, model, hf)
    except MoelabError as err:
        fail(str(err))
    console.print(f"wrote {folder} (load with transformers.AutoModelForCausalLM.from_pretrained)")


def _numbers(text: str, kind, option: str) -> tuple:
    try:
        return tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise MoelabError(f"{option} {text!r}: expected comma-separated numbers") from None


def load_probe_task(task: str, people: int | None, invented: int | None, seed: int, distractors: Path | None):
    """A JSONL task file, or kb:RUN_DIR (questions about that run's knowledge base)."""
    from moelab.probe.tasks import knowledge_task, read_task

    if task.startswith("kb:"):
        from moelab.config import load_config
        from moelab.knowledge import build_knowledge_base

        run_dir = Path(task[3:])
        if not (run_dir / "config.toml").exists():
            raise MoelabError(f"{task}: no config.toml in {run_dir}; give a lab run folder")
        kb = build_knowledge_base(load_config(run_dir / "config.toml").data)
        result = knowledge_task(kb, people, invented, seed, name=f"kb-{run_dir.name}")
    else:
        result = read_task(task)
        result.distractors = [q.needle for q in result.questions if q.needle]
    if distractors is not None:
        try:
            text = distractors.read_text()
        except FileNotFoundError:
            raise MoelabError(f"--distractors {distractors}: no such file") from None
        result.distractors = [p.strip() for p in text.split("\n\n") if p.strip()]
    return result


@app.command()
def probe(
    model: Annotated[str, typer.Argument(help="lab:RUN_DIR, hf:MODEL_DIR or openai:BASE_URL")],
    task: Annotated[str, typer.Argument(help="a task JSONL file, or kb:RUN_DIR to ask about that run's knowledge base")],
    out: Annotated[Path | None, typer.Option(help="results folder (default runs/probe-MODEL-TASK)")] = None,
    context_lengths: Annotated[str, typer.Option(help="prompt lengths in words, e.g. 0,256,1024 (0 = question alone)")] = "0",
    depths: Annotated[str, typer.Option(help="needle depths in padded prompts, 0 = start, 1 = end")] = "0,0.5,1",
    distractors: Annotated[Path | None, typer.Option(help="padding text: paragraphs separated by blank lines")] = None,
    judge: Annotated[str | None, typer.Option(help="grade with an LLM judge on this backend (e.g. openai:URL)")] = None,
    judge_model_name: Annotated[str | None, typer.Option(help="the judge's model name on its server")] = None,
    judge_api_key_env: Annotated[str | None, typer.Option(
        help="the judge's API key variable (required unless the judge is on the model's own host)")] = None,
    max_tokens: Annotated[int, typer.Option(help="output budget for questions that set none")] = 64,
    model_name: Annotated[str | None, typer.Option(help="openai: the model name (default: the server's only one)")] = None,
    api: Annotated[str, typer.Option(help="openai: 'chat' or 'completions'")] = "chat",
    api_key_env: Annotated[str, typer.Option(help="openai: environment variable holding the API key")] = "OPENAI_API_KEY",
    concurrency: Annotated[int, typer.Option(help="openai: requests in flight")] = 4,
    timeout: Annotated[float, typer.Option(help="openai: seconds per request")] = 120.0,
    server_stop: Annotated[bool, typer.Option("--server-stop", help="openai: also send stop strings to the server")] = False,
    device: Annotated[str, typer.Option(help="lab and hf: torch device")] = "cpu",
    people: Annotated[int | None, typer.Option(help="kb tasks: people asked about (default all)")] = None,
    invented: Annotated[int | None, typer.Option(help="kb tasks: invented people (default a tenth as many)")] = None,
    seed: Annotated[int, typer.Option(help="sampling of people and of padding passages")] = 0,
    save_task: Annotated[Path | None, typer.Option(help="also write the task as JSONL here")] = None,
    survey_row: Annotated[Path | None, typer.Option(help="append the result as a row of this survey CSV")] = None,
    survey_model: Annotated[str | None, typer.Option(help="model name in the survey row")] = None,
    developer: Annotated[str, typer.Option(help="developer in the survey row")] = "unknown",
) -> None:
    """Score a model on factual questions: correct / incorrect / partial / not attempted, the
    Omniscience Index, hallucination rate, F-score, output tokens, and accuracy as the prompt grows."""
    from moelab.analysis.report import write_probe_report
    from moelab.probe.backends import judge_key_env, make_backend
    from moelab.probe.runner import ProbeSettings, append_survey_row, read_samples, run_probe
    from moelab.probe.runner import survey_row as make_survey_row
    from moelab.probe.tasks import write_task

    try:
        settings = ProbeSettings(_numbers(context_lengths, int, "--context-lengths"),
                                 _numbers(depths, float, "--depths"), max_tokens, seed)
        questions = load_probe_task(task, people, invented, seed, distractors)
        if save_task is not None:
            write_task(questions, save_task)
        judge_key = judge_key_env(model, judge, api_key_env, judge_api_key_env) if judge else None
        backend = make_backend(model, device, model_name, api, api_key_env, concurrency, timeout, server_stop)
        grader = make_backend(judge, device, judge_model_name, "chat", judge_key, concurrency, timeout) if judge else None
        label = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(backend.describe()["model"]))
        out = out or Path("runs") / f"probe-{label}-{questions.name}"
        console.print(Text.assemble("probe ", (backend.spec, "bold"),
                                    f" on {questions.name} ({len(questions.questions)} questions) -> {out}"))
        with Progress(TextColumn("answers", style="bold"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=err_console) as progress:
            bar = progress.add_task("answers", total=None)

            def advance(n: int, total: int) -> None:
                progress.update(bar, total=total, advance=n)

            metrics = run_probe(backend, questions, out, settings, grader, on_progress=advance)
        report = write_probe_report(metrics, read_samples(out / "samples.jsonl"), out)
        if survey_row is not None:
            append_survey_row(survey_row, make_survey_row(metrics, survey_model, developer))
    except MoelabError as err:
        fail(str(err))
    except KeyboardInterrupt:
        err_console.print(f"interrupted: answers so far are kept in {out}; rerun the same command "
                                   "to finish", highlight=False)
        raise typer.Exit(130) from None
    console.print(probe_table(metrics))
    if len({r["context_words"] for r in metrics["context_rot"]}) > 1:
        console.print(context_rot_table(metrics["context_rot"]))
    console.print(f"report: {report}  (samples: {out / 'samples.jsonl'}, metrics: {out / 'metrics.json'})")
    if survey_row is not None:
        console.print(f"survey row appended to {survey_row}")


def _rate(m: dict, key: str, scale: float = 100.0, unit: str = "%") -> str:
    value, interval = m.get(key), m.get(f"{key}_interval")
    if value is None:
        return "n/a"
    text = f"{value * scale:.1f}{unit}"
    if interval and None not in interval:
        text += f"  [{interval[0] * scale:.1f}, {interval[1] * scale:.1f}]"
    return text


def probe_table(m: dict) -> Table:
    table = Table(title=f"{m['model']} on {m['task']}: {m['n']} questions (95% intervals)",
                  show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("correct / incorrect / partial / not attempted",
         f"{m['correct']} / {m['incorrect']} / {m['partial']} / {m['not_attempted']}"),
        ("accuracy", _rate(m, "accuracy")),
        ("Omniscience Index", _rate(m, "omniscience_index", 1.0, "")),
        ("hallucination rate", _rate(m, "hallucination_rate")),
        ("accuracy given attempted", _rate(m, "accuracy_given_attempted")),
        ("F-score", _rate(m, "f_score")),
        ("output tokens per question", f"{m['output_tokens_per_question']:.1f}"),
        ("grader", f"{m['grader']} ({m['judge_parse_failures']} unparsed), {m['errors']} backend errors"),
    ]
    if m.get("unanswerable"):
        rows.insert(2, ("abstained on invented questions", _rate(m["unanswerable"], "accuracy")))
    for row in rows:
        table.add_row(*row)
    return table


def context_rot_table(rot: list[dict]) -> Table:
    table = Table(title="accuracy as the prompt grows", title_justify="left")
    for name in ("context (words)", "needle depth", "n", "accuracy", "ratio to shortest"):
        table.add_column(name, justify="right")
    for r in rot:
        table.add_row(str(r["context_words"]), "none" if r["depth"] is None else f"{r['depth']:g}", str(r["n"]),
                      _rate(r, "accuracy"), "n/a" if r["ratio_to_shortest"] is None else f"{r['ratio_to_shortest']:.2f}")
    return table


@app.command()
def quantize(
    run_dir: Annotated[Path, typer.Argument(help="a finished run folder")],
    bits: Annotated[list[int] | None, typer.Option(help="weight widths to try (repeatable; default 8 and 4)")] = None,
    group_size: Annotated[int, typer.Option(help="input weights per scale (0: one scale per output channel)")] = 0,
) -> None:
    """Round a trained model's weights to int8/int4 (per channel or per group) and measure the bits it still stores."""
    import torch

    from moelab.evaluation.quantization import quantized_capacity
    from moelab.io import atomic_write_json
    from moelab.run import load_run

    if group_size < 0:
        fail(f"--group-size = {group_size}: use 0 (per channel) or a positive group")
    try:
        cfg, kb, model = load_run(run_dir)
        rows = quantized_capacity(model, kb, bits or [8, 4], cfg.train.eval_batch_size, torch.device("cpu"), group_size)
    except (MoelabError, ValueError) as err:
        fail(str(err))
    out_file = run_dir / ("quantization.json" if not group_size else f"quantization-g{group_size}.json")
    atomic_write_json(out_file, {"run": str(run_dir), "group_size": group_size, "rows": rows})
    scales = f"one scale per {group_size} weights" if group_size else "one scale per output channel"
    table = Table(title=f"{run_dir}: knowledge after round-to-nearest quantization ({scales})", title_justify="left")
    for name in ("weights", "bits stored", "vs full precision", "bits / param", "storage used", "recall"):
        table.add_column(name, justify="right")
    for r in rows:
        name = "fp32" if r["weight_bits"] == 32 else f"int{r['weight_bits']}"
        table.add_row(name + (" (embeddings fp32)" if r["embeddings_full_precision"] else ""), f"{r['bits']:,.0f}",
                      f"{r['bits_vs_full_precision']:.1%}", f"{r['bits_per_param']:.3f}",
                      f"{r['storage_used']:.1%}", f"{r['accuracy']:.1%}")
    console.print(table)
    console.print(f"wrote {out_file}")


@app.command()
def identities() -> None:
    """Check the bit estimator's identities (SCIENCE.md §5.1) with an oracle model; no training."""
    from moelab.evaluation.identities import identity_table

    rows = identity_table()
    table = Table(title="estimator identities (oracle model through the full probe pipeline)", title_justify="left")
    for name, justify in (("identity", "left"), ("expected", "right"), ("measured", "right"), ("relative error", "right")):
        table.add_column(name, justify=justify)
    for r in rows:
        table.add_row(r["identity"], f"{r['expected']:.6f}", f"{r['measured']:.6f}", f"{r['relative_error']:.1e}")
    console.print(table)
    if any(r["relative_error"] > 1e-6 for r in rows):
        fail("an identity does not hold to 1e-6")
