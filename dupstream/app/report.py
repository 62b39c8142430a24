"""``dupstream scan --report report.html``: one self-contained HTML page for a person to look at.

Each duplicate group is a row of thumbnails (embedded as data URIs, so the page can be mailed or
moved on its own), the suggested keeper first; under every picture its role, the verdict,
``p_copy`` and a one-line reason; changed regions are drawn as boxes over the thumbnail. The files
that failed are listed with their reasons, and the files skipped are counted. No script.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image

from dupstream.app.groups import Group, Member

#: longer side of the embedded thumbnails, pixels
THUMB_SIDE = 280

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} .meta{color:#666;margin-bottom:16px}
section.group{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px;margin:0 0 16px}
section.group h2{font-size:15px;margin:0 0 8px}
.row{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
figure.member{margin:0;width:THUMBpx}
figure.member.keeper .thumb{outline:3px solid #2a8a3a}
.thumb{position:relative;display:inline-block;line-height:0}
.thumb img{max-width:THUMBpx;max-height:THUMBpx;display:block}
.region{position:absolute;border:2px solid #e0245e;background:rgba(224,36,94,.12);
 box-sizing:border-box}
figcaption{font-size:12px;margin-top:4px;word-break:break-all}
.role{display:inline-block;background:#eef;border-radius:3px;padding:0 5px;margin-right:4px}
.keeper .role{background:#dfd}
.reason{color:#333} .path{color:#666}
ul.failed li{margin:2px 0}
""".replace("THUMB", str(THUMB_SIDE))


def thumbnail_data_uri(path: str, side: int = THUMB_SIDE) -> str | None:
    """A JPEG thumbnail as a ``data:`` URI (None when the file cannot be decoded)."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (side, side))
            im = im.convert("RGB")
            im.thumbnail((side, side))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _member(m: Member, keeper: bool) -> str:
    uri = thumbnail_data_uri(m.path)
    img = (f'<img src="{uri}" alt="{_e(Path(m.path).name)}">' if uri
           else '<span class="noimg">(no preview)</span>')
    boxes = "".join(
        f'<div class="region" style="left:{100 * x0:.2f}%;top:{100 * y0:.2f}%;'
        f'width:{100 * (x1 - x0):.2f}%;height:{100 * (y1 - y0):.2f}%"></div>'
        for x0, y0, x1, y1 in m.regions)
    roles = "".join(f'<span class="role">{_e(r)}</span>' for r in m.roles)
    facts = []
    if m.verdict:
        facts.append(f'<span class="verdict">{_e(m.verdict)}</span>')
    if m.p_copy is not None:
        facts.append(f'p_copy <span class="p_copy">{m.p_copy:.2f}</span>')
    if m.width:
        facts.append(f"{m.width}×{m.height}, {m.bytes / 1024:.0f} KiB")
    cls = "member keeper" if keeper else "member"
    return (f'<figure class="{cls}" data-path="{_e(m.path)}" data-roles="{_e(" ".join(m.roles))}">'
            f'<div class="thumb">{img}{boxes}</div><figcaption>{roles}'
            f'<div class="facts">{" · ".join(facts)}</div>'
            f'<div class="reason">{_e(m.reason)}</div>'
            f'<div class="path">{_e(m.path)}</div></figcaption></figure>')


def render(
    groups: Sequence[Group],
    *,
    failed: Sequence[Mapping[str, str]] = (),
    skipped: Mapping[str, int] | None = None,
    scanned: int = 0,
    title: str = "dupstream scan",
) -> str:
    """The whole page. ``failed``: rows with ``image_id``, ``error``, ``message``."""
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1>",
             f'<div class="meta" id="summary">{scanned} images scanned · '
             f'<span id="n-groups">{len(groups)}</span> duplicate groups · '
             f'{sum(len(g.members) - 1 for g in groups)} files besides their keepers · '
             f'<span id="n-failed">{len(failed)}</span> failed</div>']
    for g in groups:
        parts.append(f'<section class="group" id="group-{g.id}" data-keeper="{_e(g.keeper)}">'
                     f"<h2>Group {g.id}: keep {_e(Path(g.keeper).name)}</h2><div class=row>")
        parts += [_member(m, i == 0) for i, m in enumerate(g.members)]
        parts.append("</div></section>")
    if failed:
        parts.append('<section id="failed"><h2>Failed files</h2><ul class="failed">')
        parts += [f'<li class="failed" data-path="{_e(r["image_id"])}">{_e(r["image_id"])}: '
                  f'<b>{_e(r["error"])}</b> {_e(r.get("message", ""))}</li>' for r in failed]
        parts.append("</ul></section>")
    if skipped:
        items = ", ".join(f"{_e(k)}: {v}" for k, v in sorted(skipped.items()))
        parts.append(f'<p id="skipped">Skipped: {items}</p>')
    parts.append("</body></html>")
    return "\n".join(parts)
