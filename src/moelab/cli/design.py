"""`moelab design`: hardware-aligned MoE configurations with exact accounting."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from moelab.cli.common import app, console, err_console, fail, output_path
from moelab.errors import MoelabError
from moelab.io import dumps


DESIGN_BREAKS_A_RULE = 5  # exit status when even the best candidate breaks an error-level rule


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
    """Hardware-aligned MoE configurations for a parameter budget, with exact accounting and memory per GPU."""
    from moelab.design import golden
    from moelab.design.lab import write_design
    from moelab.design.search import candidate_rows, search_candidates
    from moelab.design.tables import best_findings, candidates_table, validation_table

    if validate_golden and (total_b is not None or active_b is not None or write is not None):
        fail("--validate checks the accounting against published models and takes no budget or --write; "
             "run it alone")
    if scale_to_lab and write is None:
        fail("--scale-to-lab shapes the config that --write writes; give --write FILE too")
    for option, value in (("--vocab", vocab), ("--top", top), ("--tokens-per-step", tokens_per_step),
                          ("--layers-min", layers_min), ("--tp", tp), ("--ep", ep)):
        if value < 1:
            fail(f"{option} {value}: must be at least 1")
    if layers_min > layers_max:
        fail(f"--layers-min {layers_min} is above --layers-max {layers_max}")
    if write is not None:
        output_path(write, "--write", folder=False)
    if validate_golden:
        rows = golden.validation_rows()
        console.print(dumps(rows) if json_output else validation_table(rows))
        if golden.worst_error(rows) > 0.01:
            fail(f"accounting is {golden.worst_error(rows):.2%} off a published count (limit 1%)")
        return
    try:
        deployment, candidates = search_candidates(total_b, active_b, gpu, tp, ep, vocab, (layers_min, layers_max),
                                                   tokens_per_step, top, measure)
    except MoelabError as err:
        fail(str(err))
    rows = candidate_rows(candidates, deployment)
    if write is not None:
        write_design(candidates[0], write, scale_to_lab)
    errors = [w for w in rows[0]["warnings"] if w.startswith("error")] if rows else []
    if json_output:
        print(dumps(rows))
        if errors:
            raise typer.Exit(DESIGN_BREAKS_A_RULE)
        return
    title = (f"candidates for {total_b:g}B total / {active_b:g}B active on {deployment.hardware.name}, "
             f"tp={tp} ep={ep}" + (" (ranked by measured GEMM TFLOP/s)" if measure else ""))
    console.print(candidates_table(rows, title, measure))
    for finding in best_findings(rows):
        console.print(finding, soft_wrap=True)
    if write is not None:
        console.print(f"wrote {write}")
    if errors:  # the best there is breaks a rule: a script must be able to tell
        err_console.print(f"the best candidate breaks {len(errors)} rule(s) (above); no candidate in this budget "
                          "meets them all: change the budget, --tp/--ep or --gpu")
        raise typer.Exit(DESIGN_BREAKS_A_RULE)
