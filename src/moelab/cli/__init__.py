"""The `moelab` command line. Thin: parse, call library functions, print what they return.

One module per area registers its commands on `app`: `lab` (train, sweep, report, export,
quantize, identities), `survey`, `design` and `probe`.

Errors a user can cause (MoelabError) print one line and exit with status 2, without a traceback.
Both consoles have Rich markup off: file names, model names and messages are printed as given
(a `[set]` in an error or a `[/]` in a name is text, never markup); styles are set explicitly.
Tables are built beside what they show (`moelab.tables`, `analysis/survey_tables.py`,
`design/tables.py`, `probe/tables.py`).
"""

from moelab.cli.common import app, bar, console, err_console, fail

# Each module registers its commands; this order is the order of `moelab --help`.
from moelab.cli import lab  # noqa: F401,I001
from moelab.cli import survey  # noqa: F401
from moelab.cli import design  # noqa: F401
from moelab.cli import probe  # noqa: F401

__all__ = ["app", "bar", "console", "err_console", "fail"]
