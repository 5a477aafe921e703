"""HTML building blocks for report.html: escaping, tables, long texts, figures, the style sheet.

Everything that reaches the page as text goes through `esc` (html.escape, quotes included); a
cell that is already HTML is wrapped in `Raw`. The page loads nothing from outside: the CSS is
inline, images are data: URIs, and a Content-Security-Policy forbids scripts and remote fetches,
so hostile text in a prompt or a response cannot run even if it escaped escaping.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prefalign.eval.formatting import MISSING

TEXT_LIMIT = 240  # characters shown before a long text folds into <details>
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f;
       background: #f6f6f4; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.25em; border-bottom: 2px solid #e2e2de; padding-bottom: 4px; margin-top: 2em; }
h3 { font-size: 1.05em; margin: 1.4em 0 0.4em; }
.sub { color: #666; margin: 0 0 1em; }
nav { font-size: 0.92em; margin: 0.6em 0 1em; }
nav a { margin-right: 0.9em; color: #1f6fb4; text-decoration: none; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #deded9; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f1f1ee; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.headline td:first-child { min-width: 22em; }
table.headline td:last-child { font-weight: 600; }
table.kv td:first-child { color: #555; white-space: nowrap; }
table.texts { width: 100%; table-layout: fixed; }
table.texts td { overflow-wrap: anywhere; }
table.texts td.num { white-space: normal; }
.mono { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.86em;
        overflow-wrap: anywhere; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; }
details summary { cursor: pointer; list-style: none; }
details summary .preview { white-space: pre-wrap; overflow-wrap: anywhere; }
details summary .more, details summary .less { display: block; color: #1f6fb4;
                                               font-size: 0.85em; }
details summary .less, details[open] summary .preview, details[open] summary .more {
  display: none; }
details[open] summary .less { display: block; }
details .text { overflow-wrap: anywhere; }
.missing { color: #8a6d00; background: #fff8e0; padding: 4px 8px; border-radius: 3px;
           display: inline-block; }
.note { color: #555; font-size: 0.9em; }
figure { margin: 1em 0 1.4em; }
figure img { max-width: 100%; height: auto; border: 1px solid #e5e5e0; }
figcaption { color: #444; font-size: 0.9em; max-width: 60em; margin-top: 4px; }
.figrow { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.figrow figure { flex: 1 1 420px; margin-top: 0.4em; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 0 28px; }
.grid table { width: 100%; }
footer { margin-top: 3em; color: #777; font-size: 0.85em; }
"""


class Raw(str):
    """A string that is already HTML: `esc` and `table` pass it through unchanged."""


def esc(value: Any) -> str:
    """`value` as escaped text; None becomes "—"; a `Raw` string is returned as is."""
    if isinstance(value, Raw):
        return value
    return MISSING if value is None else html.escape(str(value), quote=True)


def tag(name: str, body: Any, **attributes: Any) -> Raw:
    """<name attr="...">body</name>; `body` is escaped unless Raw; `class_` gives class=,
    `data_plots` gives data-plots=; attributes that are None are left out."""
    attrs = "".join(f' {key.rstrip("_").replace("_", "-")}="{esc(value)}"'
                    for key, value in attributes.items() if value is not None)
    return Raw(f"<{name}{attrs}>{esc(body)}</{name}>")


def join(parts: Iterable[Any]) -> Raw:
    """Concatenate escaped parts."""
    return Raw("\n".join(esc(part) for part in parts if part))


def table(header: Sequence[str] | None, rows: Iterable[Sequence[Any]], *,
          class_: str | None = None, numeric: Iterable[int] = (),
          widths: Sequence[str] = ()) -> Raw:
    """A table; cells are escaped unless Raw; columns in `numeric` are right-aligned; `widths`
    (CSS lengths, one per column) fix the column widths of a table of long texts."""
    numeric = set(numeric)
    columns = tag("colgroup", join(Raw(f'<col style="width: {esc(width)}">') for width in widths))
    head = tag("tr", join(tag("th", cell) for cell in header)) if header else None
    body = [tag("tr", join(tag("td", cell, class_="num" if index in numeric else None)
                           for index, cell in enumerate(row))) for row in rows]
    return tag("table", join([columns if widths else None, head, *body]), class_=class_)


def key_values(pairs: Iterable[tuple[str, Any]], *, mono: Sequence[str] = ()) -> Raw:
    """A two-column table of (name, value); names in `mono` are shown in a monospace font."""
    rows = [(name, tag("span", value, class_="mono") if name in mono else value)
            for name, value in pairs if value is not None]
    return table(None, rows, class_="kv") if rows else missing("nothing recorded")


def inline_dict(mapping: Mapping[str, Any] | None) -> str:
    """{"a": 1, "b": true} as "a=1, b=true" (plain text, escaped later)."""
    if not isinstance(mapping, Mapping):
        return MISSING
    return ", ".join(f"{key}={_plain(value)}" for key, value in mapping.items())


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return MISSING if value is None else str(value)


def long_text(text: Any, limit: int = TEXT_LIMIT) -> Raw:
    """Escaped text; beyond `limit` characters only a preview shows, and a <details> holds the
    whole text (the preview hides when it is open, so nothing is shown twice; no script)."""
    if text is None:
        return Raw(MISSING)
    text = str(text)
    if len(text) <= limit:
        return tag("div", text, class_="text")
    summary = tag("summary", join([tag("span", f"{text[:limit].rstrip()}…", class_="preview"),
                                   tag("span", f"show all {len(text)} characters",
                                       class_="more"),
                                   tag("span", "show less", class_="less")]))
    return tag("details", join([summary, tag("div", text, class_="text")]))


def figure(uri: str, alt: str, caption: str) -> Raw:
    """An <img> with a data: URI and a caption."""
    image = Raw(f'<img src="{esc(uri)}" alt="{esc(alt)}">')
    return tag("figure", join([image, tag("figcaption", caption)]))


def missing(what: str) -> Raw:
    return tag("p", Raw(tag("span", what, class_="missing")))


def section(anchor: str, title: str, parts: Iterable[Any]) -> Raw:
    return tag("section", join([tag("h2", title), *parts]), id=anchor)


def page(title: str, body: Any, *, plots: int) -> str:
    """The whole document; `data-plots` on <body> says how many figures the page carries."""
    head = join([Raw('<meta charset="utf-8">'),
                 Raw(f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'),
                 Raw('<meta name="viewport" content="width=device-width, initial-scale=1">'),
                 tag("title", title), tag("style", Raw(CSS))])
    document = join([tag("head", head), tag("body", tag("main", body), data_plots=plots)])
    return f'<!DOCTYPE html>\n<html lang="en">\n{document}\n</html>\n'
