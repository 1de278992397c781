"""`moelab probe`: score a lab, transformers or OpenAI-compatible model on factual questions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from moelab.cli.common import app, bar, console, err_console, fail, output_path
from moelab.errors import MoelabError


def parse_numbers(text: str, kind: type, option: str) -> tuple:
    """'0,256,1024' as numbers of `kind`; a MoelabError naming `option` otherwise."""
    try:
        return tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise MoelabError(f"{option} {text!r}: expected comma-separated numbers") from None


@app.command()
def probe(
    model: Annotated[str, typer.Argument(help="lab:RUN_DIR, hf:MODEL_DIR or openai:BASE_URL")],
    task: Annotated[str, typer.Argument(help="a task JSONL file, or kb:RUN_DIR to ask about that run's knowledge base")],
    out: Annotated[Path | None, typer.Option(help="results folder (default runs/probe-MODEL-TASK)")] = None,
    context_lengths: Annotated[str, typer.Option(help="prompt lengths in words, e.g. 0,256,1024 (0 = question alone)")] = "0",
    depths: Annotated[str, typer.Option(help="needle depths in padded prompts, 0 = start, 1 = end")] = "0,0.5,1",
    distractors: Annotated[Path | None, typer.Option(help="padding text: paragraphs separated by blank lines")] = None,
    retrieve: Annotated[int, typer.Option(help="also answer each padded prompt from its K passages BM25 ranks "
                                               "highest (selective context); 0 = off")] = 0,
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
    compose: Annotated[int, typer.Option(help="kb tasks: also N questions composed of two people's facts "
                                              "(medium) and N of three people's (hard)")] = 0,
    answer_composed: Annotated[str, typer.Option(help="composed questions: 'parts' (ask each fact, compose the "
                                                      "answers by the question's rule) or 'whole' (send the question)")] = "parts",
    seed: Annotated[int, typer.Option(help="sampling of people and of padding passages")] = 0,
    save_task: Annotated[Path | None, typer.Option(help="also write the task as JSONL here")] = None,
    survey_row: Annotated[Path | None, typer.Option(help="append the result as a row of this survey CSV")] = None,
    survey_model: Annotated[str | None, typer.Option(help="model name in the survey row")] = None,
    developer: Annotated[str, typer.Option(help="developer in the survey row")] = "unknown",
) -> None:
    """Score a model on factual questions: correct / incorrect / partial / not attempted, the
    Omniscience Index, hallucination rate, F-score, output tokens, and accuracy as the prompt grows."""
    from moelab.probe.backends import judge_key_env, make_backend
    from moelab.probe.report import write_probe_report
    from moelab.probe.prompts import ProbeSettings
    from moelab.probe.runner import default_out, read_samples, run_probe
    from moelab.probe.survey_rows import append_survey_row, check_survey_csv
    from moelab.probe.survey_rows import survey_row as make_survey_row
    from moelab.probe.tables import context_rot_table, difficulty_table, probe_table, selective_table
    from moelab.probe.tasks import load_task, write_task

    for option, value, low in (("--people", people, 1), ("--invented", invented, 0), ("--concurrency", concurrency, 1),
                               ("--max-tokens", max_tokens, 1), ("--compose", compose, 0), ("--retrieve", retrieve, 0)):
        if value is not None and value < low:
            fail(f"{option} {value}: must be at least {low}")
    if not timeout > 0:
        fail(f"--timeout {timeout}: give the seconds each request may take, more than 0")
    for option, path, folder in (("--out", out, True), ("--save-task", save_task, False),
                                 ("--survey-row", survey_row, False)):
        if path is not None:
            output_path(path, option, folder)
    try:
        if model.startswith(("lab:", "hf:")) or (judge or "").startswith(("lab:", "hf:")):
            from moelab.distributed import resolve_device

            resolve_device(device, "--device")  # a CUDA device asked of a CPU-only torch is named before any work
        if survey_row is not None:
            check_survey_csv(survey_row)  # a bad file is named now, not after the whole probe
        settings = ProbeSettings(parse_numbers(context_lengths, int, "--context-lengths"),
                                 parse_numbers(depths, float, "--depths"), max_tokens, seed, retrieve,
                                 answer_composed)
        questions = load_task(task, people, invented, seed, distractors, compose)
        if save_task is not None:
            write_task(questions, save_task)
        judge_key = judge_key_env(model, judge, api_key_env, judge_api_key_env) if judge else None
        backend = make_backend(model, device, model_name, api, api_key_env, concurrency, timeout, server_stop)
        grader = make_backend(judge, device, judge_model_name, "chat", judge_key, concurrency, timeout) if judge else None
        out = out or default_out(backend, questions)
        console.print(Text.assemble("probe ", (backend.spec, "bold"),
                                    f" on {questions.name} ({len(questions.questions)} questions) -> {out}"))
        with bar("answers") as progress:
            answers = progress.add_task("", total=None)
            metrics = run_probe(backend, questions, out, settings, grader,
                                on_progress=lambda n, total: progress.update(answers, total=total, advance=n))
        report_path = write_probe_report(metrics, read_samples(out / "samples.jsonl"), out)
        if survey_row is not None:
            append_survey_row(survey_row, make_survey_row(metrics, survey_model, developer))
    except MoelabError as err:
        fail(str(err))
    except KeyboardInterrupt:
        err_console.print(f"interrupted: answers so far are kept in {out}; rerun the same command to finish")
        raise typer.Exit(130) from None
    console.print(probe_table(metrics))
    if len(metrics["by_difficulty"]) > 1:
        console.print(difficulty_table(metrics))
    if len({r["context_words"] for r in metrics["context_rot"]}) > 1:
        console.print(context_rot_table(metrics["context_rot"]))
    if metrics.get("selective_context"):
        console.print(selective_table(metrics["selective_context"]))
    console.print(f"report: {report_path}  (samples: {out / 'samples.jsonl'}, metrics: {out / 'metrics.json'})")
    if survey_row is not None:
        console.print(f"survey row appended to {survey_row}")
