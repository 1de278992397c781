"""What a user sees while a sweep runs: in a terminal, a live table with one row per running run
(label, step / steps, loss) under a summary line with the time left; elsewhere (a log file, a
scheduler), a plain line every `PLAIN_EVERY` seconds and at every change of the counts.
"""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from moelab.sweeps.runner import Progress

PLAIN_EVERY = 30.0


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "estimating"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def summary(p: Progress) -> str:
    best = "" if p.best is None else f", best {p.best:.3f} bits/param"
    share = f"{p.steps_done / p.steps_total:.0%} of steps" if p.steps_total else ""
    return (f"{p.done + p.failed}/{p.total} runs finished ({p.done} done, {p.failed} failed), {p.running} running, "
            f"{share}{best}; time left {duration(p.eta_seconds)}")


def running_table(p: Progress) -> Table:
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column, justify in (("run", "left"), ("", "left"), ("step", "right"), ("loss", "right")):
        table.add_column(column, justify=justify, no_wrap=True)
    for r in p.active:
        bar = ProgressBar(total=max(1, r.steps), completed=r.step, width=24)
        loss = "" if r.loss is None else f"{r.loss:.3f}"
        table.add_row(r.label, bar, f"{r.step:,} / {r.steps:,}", loss)
    return table


class SweepProgress:
    """A context manager whose `update(progress)` is the runner's `on_progress`."""

    def __init__(self, console: Console):
        self.console, self.live = console, None
        self.last_plain, self.last_counts = 0.0, None

    def __enter__(self) -> SweepProgress:
        if self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, p: Progress) -> None:
        if self.live is not None:
            self.live.update(Group(Text(summary(p), style="bold"), running_table(p)))
            return
        counts = (p.done, p.failed, p.running)
        now = time.monotonic()
        if counts != self.last_counts or now - self.last_plain >= PLAIN_EVERY:
            self.last_plain, self.last_counts = now, counts
            running = "; ".join(f"{r.label} {r.step:,}/{r.steps:,}" + ("" if r.loss is None else f" loss {r.loss:.3f}")
                                for r in p.active)
            self.console.print(f"[{time.strftime('%H:%M:%S')}] {summary(p)}" + (f" | {running}" if running else ""),
                               highlight=False, soft_wrap=True)
