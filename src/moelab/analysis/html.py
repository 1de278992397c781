"""What every HTML report shares: figures as PNG bytes, escaped tables, one page style.

Reports are static HTML with their figures embedded (and saved beside them as PNG files); every
string that reaches a page goes through `html.escape`.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from moelab.analysis.fit import Estimate  # noqa: E402
from moelab.io import atomic_write, atomic_write_text  # noqa: E402

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{padding:3px 8px;border-bottom:1px solid #ddd;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.note{color:#555;font-size:13px}"""


def png(fig, dpi: int = 110) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def save_png(folder: Path, name: str, data: bytes) -> None:
    atomic_write(folder / name, lambda tmp: Path(tmp).write_bytes(data))


def yerr(e: Estimate) -> list | None:
    """matplotlib's asymmetric error bar for an estimate; None when it has no interval."""
    return None if math.isnan(e.low) else [[e.value - e.low], [e.high - e.value]]


def yerrs(estimates: list[Estimate]) -> list[list[float]]:
    """matplotlib's asymmetric error bars for a line of estimates; 0 where one has no interval."""
    return [[e.value - e.low if math.isfinite(e.low) else 0.0 for e in estimates],
            [e.high - e.value if math.isfinite(e.high) else 0.0 for e in estimates]]


def estimate_cells(e: Estimate | None) -> list:
    """An estimate as three table cells: value, low, high ('n/a' where undefined)."""
    if e is None:
        return ["n/a", "", ""]
    return [e.value if math.isfinite(e.value) else "n/a",
            *("n/a" if not math.isfinite(v) else v for v in (e.low, e.high))]


def img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def heading(text: str, level: int = 2) -> str:
    return f"<h{level}>{html.escape(text)}</h{level}>"


def note(text: str) -> str:
    return f"<p class=note>{html.escape(text)}</p>"


def write_page(path: Path, title: str, parts: list[str]) -> Path:
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    atomic_write_text(path, page)
    return path
