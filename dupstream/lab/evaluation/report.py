"""The report: one document model rendered as Markdown and as HTML."""

from __future__ import annotations

import html
import math
from pathlib import Path


class Doc:
    """Blocks: ("h", level, text) | ("p", text) | ("table", header, rows) | ("img", path, alt)
    | ("code", text)."""

    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list]) -> None:
        self.blocks.append(("table", header, rows))

    def img(self, path: str, alt: str) -> None:
        self.blocks.append(("img", path, alt))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "code":
                out.append("```\n" + b[1] + "\n```")
            elif b[0] == "img":
                out.append(f"![{b[2]}]({b[1]})")
            else:
                _, header, rows = b
                lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
                out.append("\n".join(lines))
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        e = html.escape
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
               "table{border-collapse:collapse;margin:.5em 0;font-size:.9em}"
               "td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}"
               "td:first-child,th:first-child{text-align:left}img{max-width:48%;margin:.2em}"
               "pre{background:#f4f4f4;padding:.5em}</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "code":
                out.append(f"<pre>{e(b[1])}</pre>")
            elif b[0] == "img":
                out.append(f"<img src='{e(b[1])}' alt='{e(b[2])}'>")
            else:
                _, header, rows = b
                out.append("<table><tr>" + "".join(f"<th>{e(str(c))}</th>" for c in header)
                           + "</tr>")
                out += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>"
                        for r in rows]
                out.append("</table>")
        out.append("</body></html>")
        return "\n".join(out)

    def write(self, folder: Path, title: str) -> tuple[Path, Path]:
        md, ht = folder / "report.md", folder / "report.html"
        md.write_text(self.markdown())
        ht.write_text(self.html(title))
        return md, ht


def fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def fmt_ci(x, ci, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    lo, hi = ci
    if math.isnan(lo):
        return fmt(x, digits)
    return f"{x:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def fmt_p(p) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"
