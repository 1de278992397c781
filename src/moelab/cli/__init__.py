"""The `moelab` command line. Thin: parse, call library functions, print what they return.

One module per area registers its commands on `app`: `lab` (train, sweep, report, export,
quantize, identities), `survey`, `design` and `probe`.

Errors a user can cause (MoelabError) print one line and exit with status 2, without a traceback.
Both consoles have Rich markup off: file names, model names and messages are printed as given
(a `[set]` in an error or a `[/]` in a name is text, never markup); styles are set explicitly.
Tables are built beside what they show (`moelab.tables`, `analysis/survey_tables.py`,
`design/tables.py`, `probe/tables.py`).
"""

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


# Each module registers its commands; this order is the order of `moelab --help`.
from moelab.cli import lab  # noqa: E402,F401,I001
from moelab.cli import survey  # noqa: E402,F401
from moelab.cli import design  # noqa: E402,F401
from moelab.cli import probe  # noqa: E402,F401

__all__ = ["app", "bar", "console", "err_console", "fail"]
