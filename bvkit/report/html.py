"""One self-contained HTML page: figures as base64 PNG data URIs, tables as HTML tables."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field

import pandas as pd
from matplotlib.figure import Figure

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.9em; color: #555; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.Better, td.HOLDS { background: #e3f2e1; } td.Worse, td.FAILS { background: #f9e0df; }
td.INCONCLUSIVE, td.UNTESTABLE { background: #f3f3f3; }
.note { color: #666; font-style: italic; }
"""
VERDICT_CLASSES = ("Better", "Worse", "Comparable", "HOLDS", "FAILS", "INCONCLUSIVE", "UNTESTABLE")


def png_data_uri(figure: Figure | bytes, dpi: int = 150) -> str:
    """``data:image/png;base64,...`` for a matplotlib Figure (or PNG bytes)."""
    if isinstance(figure, Figure):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi)
        figure = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(figure).decode("ascii")


def table_html(frame: pd.DataFrame, table_id: str) -> str:
    """An HTML table; cells reading a verdict (Better / Worse / Comparable, a claim's HOLDS /
    FAILS / INCONCLUSIVE / UNTESTABLE) get that class (coloured)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(index=False):
        cells = []
        for value in row:
            text = html.escape(str(value))
            css = f' class="{text}"' if text in VERDICT_CLASSES else ""
            cells.append(f"<td{css}>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table id="{html.escape(table_id)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


@dataclass
class Section:
    """A heading with figures (caption, Figure or PNG bytes), tables (caption, frame) and notes."""

    title: str
    figures: list = field(default_factory=list)
    tables: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def render_report(title: str, sections: list[Section], *, subtitle: str = "") -> str:
    """The whole page as a string; it references nothing outside itself."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if subtitle:
        parts.append(f"<p>{html.escape(subtitle)}</p>")
    n_tables = 0
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>")
        for note in section.notes:
            parts.append(f'<p class="note">{html.escape(note)}</p>')
        for caption, frame in section.tables:
            n_tables += 1
            parts.append(f"<p><strong>{html.escape(caption)}</strong></p>")
            parts.append(table_html(frame, f"table-{n_tables}"))
        for caption, figure in section.figures:
            parts.append(f'<figure><img alt="{html.escape(caption)}" src="{png_data_uri(figure)}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</section>")
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")
