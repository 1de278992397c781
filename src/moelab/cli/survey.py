"""`moelab survey`: public models' knowledge against their parameter counts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from moelab.cli.common import app, console, err_console, fail, output_path
from moelab.errors import MoelabError
from moelab.io import dumps


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
    from moelab.analysis.survey_tables import benchmark_renderables, estimates_table

    if html is not None:
        output_path(html, "--html", folder=True)
    try:
        rows, targets, problems = sv.load_inputs(csv_file, benchmark, predict, skip_bad_rows, n_boot)
    except MoelabError as err:
        fail(str(err))
    for problem in problems:
        err_console.print(f"skipped: {problem}", highlight=False, soft_wrap=True)
    results = sv.survey(rows, benchmark, n_boot)
    if not results:
        fail(f"no benchmark has {sv.MIN_GROUPS} or more open weights groups with accuracy to fit")
    predictions = sv.estimate_rows(results, targets) if targets is not None else None
    check = sv.held_out_check(predictions) if predictions else None
    if html is not None:
        from moelab.analysis.survey_report import write_survey_report

        err_console.print(f"report: {write_survey_report(results, rows, html)}", highlight=False)
    if json_output:
        document = {"benchmarks": sv.results_json(results, rows)}
        if predictions is not None:
            document["predictions"] = [sv.estimate_json(e) for e in predictions]
            document["held_out_check"] = check
        print(dumps(document))  # strict JSON: NaN becomes null
        return
    for b in results:
        for renderable in benchmark_renderables(b, rows):
            console.print(renderable, highlight=False)
    if predictions is not None:
        console.print(estimates_table(f"estimates for {predict}", predictions))
        if check["n"]:
            console.print(f"held-out check on the {check['n']} rows with a known total: median |error| "
                          f"{check['median_abs_error_decades']:.2f} decades, {check['within_2x']:.0%} within 2x, "
                          f"{check['coverage']:.0%} inside their 80% intervals", highlight=False)
