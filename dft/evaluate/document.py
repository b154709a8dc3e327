"""One report document, rendered twice: Markdown (``report.md``) and self-contained HTML (``index.html``).

The report builds a ``Document`` once (headings, notes, lists, tables, figures); ``to_markdown`` and
``to_html`` only say how each block looks, so the two files cannot drift apart in content. Text is
escaped here, never by the caller."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Union

# Inline text: (style, text) spans, style "" (plain), "b" (bold) or "code".
Span = tuple[str, str]


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Note:
    """A paragraph of explanation (smaller and grey in HTML)."""

    text: str


@dataclass
class Bullets:
    items: list[list[Span]]


@dataclass
class Cell:
    """``text``, then ``small`` (an interval) beside it and ``note`` under it; ``cls`` a style
    ("better"/"worse"); ``left`` for label columns."""

    text: str = ""
    small: str = ""
    note: str = ""
    cls: str = ""
    left: bool = False


@dataclass
class Table:
    id: str
    head: list[Cell]
    rows: list[list[Cell]]


@dataclass
class Figure:
    """An image by relative path; ``own_line``: not side by side with the figures after it."""

    src: str
    alt: str
    caption: str = ""
    cls: str = ""
    own_line: bool = False


Block = Union[Heading, Note, Bullets, Table, Figure]


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)


# -- Markdown ------------------------------------------------------------------------------------


def _md_spans(spans: list[Span]) -> str:
    return "".join(f"**{t}**" if s == "b" else f"`{t}`" if s == "code" else t for s, t in spans)


def _md_cell(c: Cell) -> str:
    return f"{c.text} {c.small}".strip() + (f" ({c.note})" if c.note else "")


def to_markdown(doc: Document) -> str:
    out = [f"# {doc.title}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            if out[-1] != "":
                out.append("")
            out += [f"{'#' * b.level} {b.text}", ""]
        elif isinstance(b, Note):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {_md_spans(item)}" for item in b.items] + [""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_cell(c) for c in b.head) + " |")
            out.append("|" + "---|" * len(b.head))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Figure):
            out.append(f"![{b.alt}]({b.src})" + (f"  \n*{b.caption}*" if b.caption else ""))
    while out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


# -- HTML ----------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td.l,th.l{text-align:left}.better{color:#1a7f37;font-weight:600}.worse{color:#b42318;font-weight:600}
.note{color:#555;font-size:13px}img{max-width:100%}figure{display:inline-block;margin:6px;vertical-align:top}
figcaption{font-size:12px;color:#444}h2{border-bottom:1px solid #ddd;padding-bottom:4px}
"""

e = html.escape


def _html_spans(spans: list[Span]) -> str:
    return "".join(f"<b>{e(t)}</b>" if s == "b" else f"<code>{e(t)}</code>" if s == "code" else e(t) for s, t in spans)


def _html_cell(c: Cell, tag: str) -> str:
    cls = " ".join(x for x in ("l" if c.left else "", c.cls) if x)
    body = e(c.text) + (f" <small>{e(c.small)}</small>" if c.small else "")
    if c.note:
        body += f"<br><small class='note'>{e(c.note)}</small>"
    attr = f" class='{e(cls)}'" if cls else ""
    return f"<{tag}{attr}>{body}</{tag}>"


def _html_block(b: Block) -> str:
    if isinstance(b, Heading):
        return f"<h{b.level}>{e(b.text)}</h{b.level}>"
    if isinstance(b, Note):
        return f"<p class='note'>{e(b.text)}</p>"
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{_html_spans(item)}</li>" for item in b.items) + "</ul>"
    if isinstance(b, Table):
        head = "".join(_html_cell(c, "th") for c in b.head)
        rows = "\n".join("<tr>" + "".join(_html_cell(c, "td") for c in row) + "</tr>" for row in b.rows)
        return f"<table id='{e(b.id)}'><thead><tr>{head}</tr></thead><tbody>\n{rows}\n</tbody></table>"
    if isinstance(b, Figure):
        cls = f" class='{e(b.cls)}'" if b.cls else ""
        cap = f"<figcaption>{e(b.caption)}</figcaption>" if b.caption else ""
        return f"<figure{cls}><img src='{e(b.src)}' alt='{e(b.alt)}'>{cap}</figure>" + ("<br>" if b.own_line else "")
    raise TypeError(f"not a document block: {b!r}")


def to_html(doc: Document) -> str:
    """One page that opens from disk: relative image paths, inline style, no script, no network."""
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{e(doc.title)}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{e(doc.title)}</h1>"]
    parts += [_html_block(b) for b in doc.blocks]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
