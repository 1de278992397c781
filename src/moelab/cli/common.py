"""The command line's shared parts: the Typer app every command module registers on, the two
consoles, `fail` (one line, exit 2) and the progress bar."""

from __future__ import annotations

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
