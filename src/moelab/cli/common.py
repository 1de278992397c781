"""The command line's shared parts: the Typer app every command module registers on, the two
consoles, `fail` (one line, exit 2) and the progress bar."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="How sparse can a language model be before it forgets facts?")
console = Console(markup=False) if sys.stdout.isatty() else Console(width=160, markup=False)
err_console = Console(stderr=True, markup=False)


def fail(message: str) -> None:
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def bar(description: str) -> Progress:
    """A progress bar on stderr, shown only in a terminal."""
    return Progress(TextColumn(description, style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=err_console, disable=not err_console.is_terminal)


@app.callback()
def main() -> None:
    """moelab: knowledge capacity of dense and Mixture-of-Experts language models."""


def output_path(path, option: str, folder: bool) -> None:
    """Refuse (exit 2) an output path of the wrong kind before any work: a file where a folder
    goes, a folder where a file goes, or a place that cannot be written."""
    from pathlib import Path

    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        fail(f"{option} {path}: a file, not a folder; give a folder (it is made if missing)")
    if not folder and path.is_dir():
        fail(f"{option} {path}: a folder; give a file name")
    parent = path if folder and path.exists() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        fail(f"{option} {path}: {parent} is not writable")
