"""The lab's commands: train one run, sweep a grid, redraw a report, export, quantize, read routing, check identities."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from moelab.cli.common import app, bar, console, err_console, fail, output_path
from moelab.errors import MoelabError, RunStopped
from moelab.config import RunConfig, load_config, load_preset, preset_names, resolve

DEFAULT_PRESET = "tiny-dense"
DEFAULT_SWEEP = "sparsity-ladder"
STOPPED = 3  # exit status of a run or sweep stopped on request with its checkpoints written: rerun to resume
RUNS_FAILED = 4  # exit status of a sweep that finished with failed runs


def resolve_run_config(config: Path | None, preset: str | None, seed: int | None) -> RunConfig:
    if config is not None and preset is not None:
        raise MoelabError("give a CONFIG file or --preset, not both")
    cfg = load_config(config) if config is not None else load_preset(preset or DEFAULT_PRESET)
    if seed is not None:
        cfg.seed = seed
    return resolve(cfg)


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="run config TOML file")] = None,
    preset: Annotated[str | None, typer.Option(help=f"a built-in config (default {DEFAULT_PRESET})")] = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/NAME-TIMESTAMP)")] = None,
    seed: Annotated[int | None, typer.Option(help="override the run seed")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace a finished run in --out")] = False,
    stop_after: Annotated[str | None, typer.Option(help="checkpoint and stop after this long (2h30m, 90m, 45s); "
                                                        "the same command resumes")] = None,
    list_presets: Annotated[bool, typer.Option("--list-presets", help="print preset names and exit")] = False,
) -> None:
    """Train one model on a synthetic knowledge base and measure the bits it stores. Under torchrun
    (`torchrun --nproc-per-node N -m moelab train CONFIG --out DIR`) the run trains with DDP.
    SIGTERM or --stop-after writes a mid-run checkpoint and exits with status 3; rerunning the
    same command with the same --out resumes it."""
    from moelab import distributed
    from moelab.stopping import parse_duration, stop_at, stop_on_sigterm
    from moelab.distributed import resolve_device
    from moelab.run import execute
    from moelab.tables import run_table

    if list_presets:
        console.print("\n".join(preset_names()))
        return
    try:
        if stop_after is not None:
            stop_at(time.monotonic() + parse_duration(stop_after), f"--stop-after {stop_after}")
        stop_on_sigterm()
        cfg = resolve_run_config(config, preset, seed)
        if distributed.launched():
            if out is None:
                raise MoelabError("under torchrun give --out, so that every process trains the same run folder")
            distributed.join(resolve_device(cfg.train.device))
        out = out or Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        output_path(out, "--out", folder=True)
        if (out / "metrics.json").exists() and not overwrite:
            raise MoelabError(f"{out} already holds a finished run; pick another --out or pass --overwrite")
        with bar(f"training {cfg.name}") as progress:
            task = progress.add_task("", total=None)
            metrics = execute(cfg, out, on_step=lambda step, steps, loss: progress.update(
                task, completed=step, total=steps))
    except MoelabError as err:
        fail(str(err))
    except RunStopped as stopped:
        source = [str(config)] if config is not None else ["--preset", preset or DEFAULT_PRESET]
        again = ["moelab", "train", *source, *(["--seed", str(seed)] if seed is not None else []), "--out", str(out)]
        if distributed.is_main():
            err_console.print(f"{stopped}\nresume with: {shlex.join(again)}"
                              + (" (the same torchrun command)" if distributed.launched() else ""))
        raise typer.Exit(STOPPED) from None
    if not distributed.is_main():
        return
    console.print(run_table(metrics))
    console.print(f"wrote {out / 'metrics.json'}")


@app.command()
def sweep(
    file: Annotated[Path | None, typer.Argument(help="sweep TOML file")] = None,
    preset: Annotated[str | None, typer.Option(help="a built-in sweep (see --list-presets)")] = None,
    out: Annotated[Path | None, typer.Option(help="sweep folder (default runs/SWEEP_NAME)")] = None,
    executor: Annotated[str, typer.Option(help="'local' (process pool) or 'ray'")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to join (default: start a local one)")] = None,
    gpus_per_run: Annotated[float, typer.Option(help="with --executor ray: the share of a GPU each run asks for "
                                                     "(0.25 packs four runs on a GPU); 0: CPU")] = 0.0,
    workers: Annotated[int | None, typer.Option(help="parallel runs (default: one per core)")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="rerun failed runs")] = False,
    stop_after: Annotated[str | None, typer.Option(help="checkpoint every run in flight and stop after this long "
                                                        "(2h30m, 90m); the same command resumes")] = None,
reuse: Annotated[list[Path] | None, typer.Option(help="another sweep folder whose finished runs of the same "
                                                     "run key are adopted instead of trained (repeatable)")] = None,
        list_presets: Annotated[bool, typer.Option("--list-presets", help="print sweep presets and exit")] = False,
) -> None:
    """Train a grid of runs and write a report; rerun the same command to resume after an interruption.
    SIGTERM or --stop-after checkpoints the runs in flight within seconds and exits with status 3."""
    from moelab.analysis.report import write_report
    from moelab.stopping import parse_duration, stop_at, stop_on_sigterm
    from moelab.sweeps import Store, load_sweep, load_sweep_preset, make_executor, run_sweep, sweep_preset_names
    from moelab.sweeps.grid import selection_runs
    from moelab.sweeps.progress import SweepProgress
    from moelab.tables import runs_table

    if list_presets:
        for name in sweep_preset_names():
            console.print(Text.assemble((name, "bold"), f": {load_sweep_preset(name).description}"))
        return
    try:
        if stop_after is not None:
            stop_at(time.monotonic() + parse_duration(stop_after), f"--stop-after {stop_after}")
        if file is not None and preset is not None:
            raise MoelabError("give a sweep FILE or --preset, not both")
        spec = load_sweep(file) if file is not None else load_sweep_preset(preset or DEFAULT_SWEEP)
        if workers is not None and workers < 1:
            raise MoelabError(f"--workers {workers}: must be at least 1")
        out = out or Path("runs") / spec.name
        plan = f"{len(spec.runs)} runs" + (f" after {len(selection_runs(spec))} selection runs" if spec.selection else "")
        console.print(Text.assemble("sweep ", (spec.name, "bold"), f": {plan} -> {out}"))
        store = Store(out)
        sources = [Store.existing(folder, "--reuse") for folder in reuse or []]
        for note in store.notes:
            err_console.print(f"note: {note}")
        engine = make_executor(executor, workers, ray_address, gpus_per_run)
        for note in getattr(engine, "notes", []):
            err_console.print(f"note: {note}")
    except MoelabError as err:
        fail(str(err))
    try:
        stop_on_sigterm()  # a scheduler's stop: checkpoint the runs in flight, then exit
        with SweepProgress(err_console) as view:
            keys = run_sweep(spec, store, executor=engine, retry_failed=retry_failed, on_progress=view.update,
                             reuse=sources)
    except KeyboardInterrupt:
        err_console.print(f"interrupted: finished runs are kept in {out}, runs in flight resume from their last "
                          "mid-run checkpoint; rerun the same command to finish the rest")
        raise typer.Exit(130) from None
    except RunStopped as stopped:
        source = [str(file)] if file is not None else ["--preset", preset or DEFAULT_SWEEP]
        again = ["moelab", "sweep", *source, "--out", str(out)] + (["--workers", str(workers)] if workers else []) + (
            ["--executor", executor] if executor != "local" else []) + [a for f in reuse or [] for a in ("--reuse", str(f))]
        err_console.print(f"{stopped}\nresume with: {shlex.join(again)}")
        raise typer.Exit(STOPPED) from None
    finally:
        engine.close()
    for note in store.notes:
        err_console.print(f"note: {note}")
    rows = store.rows(keys)
    for opened in (store, *sources):
        opened.close()
    console.print(runs_table(rows))
    meta = json.loads((out / "sweep.json").read_text())
    report = write_report(rows, out, title=f"moelab sweep: {spec.name}", description=spec.description,
                          selection=meta.get("selection"), reported=meta.get("reported"))
    console.print(f"report: {report}  (table: {out / 'runs.csv'}, store: {out / 'store.sqlite'})")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:  # a script must be able to tell
        err_console.print(f"{len(failed)} of {len(rows)} runs failed (their reasons are in the table and the "
                          f"report); rerun with --retry-failed to try them again")
        raise typer.Exit(RUNS_FAILED)


def sweep_rows(folder: Path, what: str) -> tuple[dict, list[dict]]:
    """A sweep folder's sweep.json (empty if absent) and its store's rows; exit 2 naming `what`
    when the folder holds no store."""
    from moelab.sweeps import Store

    try:
        store = Store.existing(folder, what)  # first: opening re-keys an old store and its sweep.json
    except MoelabError as err:
        fail(str(err))
    meta = json.loads((folder / "sweep.json").read_text()) if (folder / "sweep.json").exists() else {}
    rows = store.rows(meta.get("keys"))
    store.close()
    return meta, rows


@app.command()
def report(
    folder: Annotated[Path, typer.Argument(help="a sweep folder")],
    join: Annotated[list[Path] | None, typer.Option(
        "--with", help="another sweep folder whose reported runs join this report's analysis, e.g. frontier v3's "
                       "MoE runs beside memory-frontier-v2's memory layers in one figure (repeatable)")] = None,
) -> None:
    """Rewrite a sweep folder's report.html, runs.csv and figures from its store."""
    from moelab.analysis.report import write_report

    meta, rows = sweep_rows(folder, "report")
    if not rows:  # an empty store would overwrite a report with "0 of 0 runs"
        fail(f"{folder / 'store.sqlite'}: holds no runs; nothing was rewritten (run the sweep into this folder first)")
    reported = meta.get("reported")
    title = f"moelab sweep: {meta.get('name', folder.name)}"
    if join:
        reported = set(reported if reported is not None else (r["key"] for r in rows))
        keys = {r["key"] for r in rows}
        for other in join:
            other_meta, other_rows = sweep_rows(other, "--with")
            other_reported = other_meta.get("reported")
            chosen = [r for r in other_rows if other_reported is None or r["key"] in set(other_reported)]
            rows += [r for r in chosen if r["key"] not in keys]  # a run both sweeps hold counts once
            keys |= {r["key"] for r in chosen}
            reported |= {r["key"] for r in chosen}
            title += f" with {other_meta.get('name', other.name)}"
        reported = sorted(reported)
    path = write_report(rows, folder, title=title, description=meta.get("description", ""),
                        selection=meta.get("selection"), reported=reported)
    console.print(f"report: {path}")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="a finished run folder")],
    hf: Annotated[Path, typer.Option(help="write a Hugging Face transformers model folder here")],
) -> None:
    """Export a lab checkpoint so AutoModelForCausalLM.from_pretrained loads it (Qwen3 / Qwen3-MoE)."""
    from moelab.models.hf import export_hf
    from moelab.runs.weights import load_run

    output_path(hf, "--hf", folder=True)
    try:
        folder = export_hf(*load_run(run_dir), hf)
    except MoelabError as err:
        fail(str(err))
    console.print(f"wrote {folder} (load with transformers.AutoModelForCausalLM.from_pretrained)")


@app.command()
def quantize(
    run_dir: Annotated[Path, typer.Argument(help="a finished run folder")],
    bits: Annotated[list[int] | None, typer.Option(help="weight widths to try (repeatable; default 8 and 4)")] = None,
    group_size: Annotated[int, typer.Option(help="input weights per scale (0: one scale per output channel)")] = 0,
) -> None:
    """Round a trained model's weights to int8/int4 (per channel or per group) and measure the bits it still stores."""
    from moelab.run import quantize_run
    from moelab.tables import quantization_table

    try:
        out_file, rows = quantize_run(run_dir, bits or [8, 4], group_size)
    except MoelabError as err:
        fail(str(err))
    scales = f"one scale per {group_size} weights" if group_size else "one scale per output channel"
    console.print(quantization_table(f"{run_dir}: knowledge after round-to-nearest quantization ({scales})", rows))
    console.print(f"wrote {out_file}")


@app.command()
def routing(
    paths: Annotated[list[Path], typer.Argument(help="finished run folders, or sweep folders (their finished runs)")],
) -> None:
    """How finished MoE runs route the predictions of their recall values, per layer: token determinism
    (the share sent to their input token's usual expert; 1 for routing by token id), experts used,
    effective experts. Weights are needed: runs trained here, not stores checked out alone."""
    from moelab.run import fact_routing_of_run
    from moelab.runs.folder import WEIGHTS
    from moelab.tables import fact_routing_table

    runs: list[tuple[str, Path]] = []
    for path in paths:
        if (path / "store.sqlite").exists():  # a sweep folder: its finished runs, labelled as the sweep labels them
            _, rows = sweep_rows(path, "routing")
            runs += [(r["label"], path / "runs" / r["key"]) for r in rows
                     if r["status"] == "done" and (path / "runs" / r["key"] / WEIGHTS).exists()]
        else:
            runs.append((str(path), path))
    measured = []
    for label, run_dir in runs:
        try:
            cfg, layers = fact_routing_of_run(run_dir)
        except MoelabError as err:
            fail(str(err))
        if layers:
            measured.append((label, cfg.model.moe.router, layers))
    if not measured:
        fail("no finished MoE run with weights among " + ", ".join(map(str, paths)))
    console.print(fact_routing_table(measured))


@app.command()
def identities() -> None:
    """Check the bit estimator's identities (docs/science.md §5.1) with an oracle model; no training."""
    from moelab.evaluation.identities import identity_table
    from moelab.tables import identities_table

    rows = identity_table()
    console.print(identities_table(rows))
    if any(r["relative_error"] > 1e-6 for r in rows):
        fail("an identity does not hold to 1e-6")
