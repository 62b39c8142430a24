"""Duplicate groups for a folder: who belongs together, which file to keep, what the others are.

Input: the scan's verdict rows (each image judged against the ones before it, so the *match* of a
row depends on file order) and facts about the files. Output: connected groups (the same whatever
the order), a suggested keeper per group chosen by evidence, and the role of every other member
with a one-line reason in plain language.

How the keeper is chosen: every matched pair is read for *direction* from its evidence - the
registration (which picture contains the other: a crop, or a border/frame around it; which one has
a flat band where the other has picture: a caption; which one is smaller: a resize; a lossless file
beside a lossy one: a re-encode). The keeper is the member derived from nothing in its group
(fewest "is derived" findings), then the most pixels, then a lossless format, then the earliest
modification time, then the path. Pure logic: file facts and flatness come from callables
(``dupstream.app.probe`` supplies them).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from dupstream.app.probe import FileFacts

#: overlap below which one picture is taken to show only part of the other
PARTIAL = 0.9
#: a flat ring/region must be this much flatter than the other side's to count as added
FLAT_MARGIN = 0.2
#: a border/frame ring is at least this flat (photographs' edges rarely are)
RING_FLAT = 0.8
#: the largest changed region (share of the overlap) below which nothing counts as added
CHANGED_MIN = 0.03
#: pixel-count ratio beyond which the smaller file is a resize
RESIZE_RATIO = 1.2

#: every role a member can have (besides ``keeper``), in the order reasons name them
ROLES = ("exact copy", "re-encode", "resize", "crop", "border", "caption", "overlay", "rotation",
         "flip", "edited copy")


class Flatness(Protocol):
    def ring(self, path: str) -> float | None: ...

    def region(self, path: str, box: Sequence[float]) -> float | None: ...


@dataclass
class Relation:
    """What the evidence of one matched pair says; ``copy`` is the side derived from ``source``
    (both None: the evidence does not tell which way)."""

    a: str
    b: str
    roles: list[str]
    details: dict[str, str]
    source: str | None = None
    copy: str | None = None
    verdict: str | None = None
    p_copy: float | None = None
    #: the changed regions, [x0, y0, x1, y1] fractions of ``regions_on``
    regions: list[list[float]] = field(default_factory=list)
    regions_on: str | None = None
    #: the pair is aligned (no shift, scale or turn): the regions apply to both pictures
    regions_both: bool = False


@dataclass
class Member:
    path: str
    #: ``keeper`` or the roles of this file against its group (``crop``, ``caption``, ...)
    roles: list[str]
    #: one line in plain language ("cropped to 44 % of the area, caption added at the bottom")
    reason: str
    #: the group member its evidence was read against (None: the keeper)
    compared_to: str | None = None
    verdict: str | None = None
    p_copy: float | None = None
    width: int = 0
    height: int = 0
    bytes: int = 0
    #: changed regions to draw, [x0, y0, x1, y1] fractions of this member's picture
    regions: list[list[float]] = field(default_factory=list)


@dataclass
class Group:
    id: int
    keeper: str
    members: list[Member]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "keeper": self.keeper, "size": len(self.members),
                "members": [asdict(m) for m in self.members]}


# -- reading one pair ----------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{round(100 * x)} %"


def _where(box: Sequence[float]) -> str:
    x0, y0, x1, y1 = box
    if x1 - x0 >= 0.7:
        if y1 <= 0.45:
            return "at the top"
        if y0 >= 0.55:
            return "at the bottom"
    if y1 - y0 >= 0.7:
        if x1 <= 0.45:
            return "on the left"
        if x0 >= 0.55:
            return "on the right"
    return "in the picture"


def _union(boxes: Sequence[Sequence[float]]) -> list[float]:
    return [min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes)]


def _near_identity(t: Mapping[str, Any]) -> bool:
    return (abs(t.get("scale", 1) - 1) < 0.05 and abs(t.get("tx", 0)) < 0.05
            and abs(t.get("ty", 0)) < 0.05 and not t.get("flip")
            and abs(_angle(t.get("rotation_deg", 0))) < 2)


def _angle(deg: float) -> float:
    return (deg + 180) % 360 - 180


def _vote(votes: dict[str, int], copy: str, n: int = 1) -> None:
    votes[copy] = votes.get(copy, 0) + n


def read_pair(row: Mapping[str, Any], facts: Mapping[str, FileFacts],
              look: Flatness | None) -> Relation:
    """The relation a verdict row states between the image (``a``, the query) and its match."""
    q, r = row["image_id"], row["match_id"]
    ev = row.get("evidence") or {}
    rel = Relation(q, r, [], {}, verdict=row.get("verdict"), p_copy=row.get("p_copy"))
    fq, fr = facts.get(q, FileFacts(q)), facts.get(r, FileFacts(r))
    votes: dict[str, int] = {}  # which side each finding says is the derived one
    if ev.get("exact_hash"):
        rel.roles.append("exact copy")
        rel.details["exact copy"] = "the same bytes"
        return rel
    reg = ev.get("registration") or {}
    t = reg.get("transform") or {}
    cropped = False
    if reg.get("verified"):
        oq, orf = float(reg.get("overlap_query", 1)), float(reg.get("overlap_ref", 1))
        if t.get("flip"):
            rel.roles.append("flip")
            rel.details["flip"] = "mirrored"
        ang = _angle(float(t.get("rotation_deg", 0)))
        if abs(ang) >= 2:
            rel.roles.append("rotation")
            rel.details["rotation"] = f"rotated by {abs(round(ang))}°"
        if (oq < PARTIAL) != (orf < PARTIAL):
            # one picture shows all of the other and more: the bigger one was cropped, or the
            # smaller one got a border / frame; a flat outer ring says which
            big, small, share = (q, r, oq) if oq < PARTIAL else (r, q, orf)
            ring_big = look.ring(big) if look else None
            ring_small = look.ring(small) if look else None
            if (ring_big is not None and ring_small is not None
                    and ring_big >= RING_FLAT and ring_big - ring_small >= FLAT_MARGIN):
                rel.roles.append("border")
                rel.details["border"] = f"border or frame added ({_pct(1 - share)} of the area)"
                _vote(votes, big, 2)
            else:
                rel.roles.append("crop")
                rel.details["crop"] = f"cropped to {_pct(share)} of the area"
                cropped = True
                _vote(votes, small, 2)
        elif oq < PARTIAL and orf < PARTIAL:
            rel.roles.append("crop")
            rel.details["crop"] = (f"partly overlapping crops ({_pct(oq)} / {_pct(orf)} "
                                   "shared)")
        regions = [list(b) for b in ev.get("changed_regions") or reg.get("changed_regions") or []]
        changed = float(ev.get("changed_area") or reg.get("changed_area") or 0)
        largest = float(reg.get("largest_change", changed) or 0)
        if regions and largest >= CHANGED_MIN:
            rel.regions, rel.regions_on = regions, q
            rel.regions_both = _near_identity(t)
            box = _union(regions)
            where = _where(box)
            band = where != "in the picture"
            role = "caption" if band else "overlay"
            rel.roles.append(role)
            rel.details[role] = (f"caption or band added {where}" if band
                                 else f"text or objects added ({_pct(changed)} changed)")
            if look is not None and _near_identity(t):
                fq_flat = look.region(q, box)
                fr_flat = look.region(r, box)
                if fq_flat is not None and fr_flat is not None:
                    if fq_flat - fr_flat >= FLAT_MARGIN:
                        _vote(votes, q)
                    elif fr_flat - fq_flat >= FLAT_MARGIN:
                        _vote(votes, r)
        if (look is not None and _near_identity(t) and "caption" not in rel.roles
                and "overlay" not in rel.roles):
            _band_probe(rel, q, r, look, votes)
    elif ev.get("pdq_transform") not in (None, "identity"):
        tr = str(ev["pdq_transform"])
        role = "flip" if "flip" in tr or "transpose" in tr else "rotation"
        rel.roles.append(role)
        rel.details[role] = {"flip": "mirrored", "rotation": "rotated"}[role] + f" ({tr})"
    if fq.pixels and fr.pixels and not cropped:
        ratio = max(fq.pixels, fr.pixels) / min(fq.pixels, fr.pixels)
        if ratio >= RESIZE_RATIO and "border" not in rel.roles:
            small = q if fq.pixels < fr.pixels else r
            rel.roles.append("resize")
            share = min(fq.pixels, fr.pixels) / max(fq.pixels, fr.pixels)
            rel.details["resize"] = f"resized to {_pct(share)} of the pixels"
            _vote(votes, small)
    if fq.format and fr.format and fq.format != fr.format:
        if fq.lossless != fr.lossless:
            rel.roles.append("re-encode")
            rel.details["re-encode"] = f"re-encoded as {(fr if fq.lossless else fq).format}"
            _vote(votes, r if fq.lossless else q)
        elif not rel.roles:
            rel.roles.append("re-encode")
            rel.details["re-encode"] = f"{fq.format} vs {fr.format}"
    if not rel.roles:
        if rel.verdict == "duplicate":
            rel.roles.append("re-encode")
            rel.details["re-encode"] = "the same picture, saved again"
        else:
            rel.roles.append("edited copy")
            rel.details["edited copy"] = "an edited copy"
    if votes:
        ranked = sorted(votes.items(), key=lambda kv: -kv[1])
        if len(ranked) == 1 or ranked[0][1] > ranked[1][1]:
            rel.copy = ranked[0][0]
            rel.source = r if rel.copy == q else q
    return rel


#: the bands looked at for an added caption when the changed regions do not show one
BANDS = {"at the top": (0.0, 0.0, 1.0, 0.1), "at the bottom": (0.0, 0.9, 1.0, 1.0)}
#: a caption band is at least this flat
BAND_FLAT = 0.6


def _band_probe(rel: Relation, q: str, r: str, look: Flatness, votes: dict[str, int]) -> None:
    """Aligned pictures of which one has a flat band (a caption bar) where the other has
    picture: the changed-region map can miss a band (it weighs the overlap, not fills)."""
    for where, box in BANDS.items():
        fq, fr = look.region(q, box), look.region(r, box)
        if fq is None or fr is None:
            continue
        flat, other = (q, fq - fr) if fq > fr else (r, fr - fq)
        if other >= FLAT_MARGIN and max(fq, fr) >= BAND_FLAT:
            rel.roles.append("caption")
            rel.details["caption"] = f"caption or band added {where}"
            rel.regions = [list(box)]
            rel.regions_on, rel.regions_both = flat, True
            _vote(votes, flat)
            return


def _reason(rel: Relation) -> str:
    parts = [rel.details[r] for r in ROLES if r in rel.details]
    return ", ".join(parts) if parts else "a copy"


# -- groups --------------------------------------------------------------------------------------
def _components(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    adj: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    seen: set[str] = set()
    out = []
    for n in sorted(set(nodes)):
        if n in seen or n not in adj:
            continue
        comp, todo = [], [n]
        seen.add(n)
        while todo:
            x = todo.pop()
            comp.append(x)
            for y in adj[x] - seen:
                seen.add(y)
                todo.append(y)
        out.append(sorted(comp))
    return out


def build_groups(
    rows: Iterable[Mapping[str, Any]],
    *,
    facts: Callable[[str], FileFacts],
    look: Flatness | None = None,
) -> list[Group]:
    """Connected duplicate groups of the scan's rows (rows that failed or are unique with no
    copy stay out), each with its keeper first. Groups are ordered by their keeper's path."""
    rows = [r for r in rows if not r.get("error")]
    pairs = [r for r in rows if r.get("verdict") in ("duplicate", "near_duplicate")
             and r.get("match_id")]
    comps = _components([r["image_id"] for r in rows] + [r["match_id"] for r in pairs],
                        [(r["image_id"], r["match_id"]) for r in pairs])
    known: dict[str, FileFacts] = {}

    def fact(p: str) -> FileFacts:
        if p not in known:
            known[p] = facts(p)
        return known[p]

    groups = []
    for comp in comps:
        for p in comp:
            fact(p)
        members = set(comp)
        rels = [read_pair(r, known, look) for r in pairs if r["image_id"] in members]
        derived = {p: 0 for p in comp}
        for rel in rels:
            if rel.copy is not None:
                derived[rel.copy] += 1
        keeper = min(comp, key=lambda p, d=derived: (
            d[p], -known[p].pixels, not known[p].lossless, known[p].mtime or float("inf"), p))
        groups.append(_assemble(keeper, comp, rels, known))
    groups.sort(key=lambda g: g.keeper)
    for i, g in enumerate(groups, 1):
        g.id = i
    return groups


def _assemble(keeper: str, comp: list[str], rels: list[Relation],
              facts: Mapping[str, FileFacts]) -> Group:
    by_node: dict[str, list[Relation]] = defaultdict(list)
    for rel in rels:
        by_node[rel.a].append(rel)
        by_node[rel.b].append(rel)
    parent: dict[str, Relation] = {}
    order, seen, todo = [keeper], {keeper}, deque([keeper])
    while todo:  # breadth first from the keeper: each member is read against its neighbour
        x = todo.popleft()
        for rel in sorted(by_node[x], key=lambda r: (r.a, r.b)):
            y = rel.b if rel.a == x else rel.a
            if y not in seen:
                seen.add(y)
                parent[y] = rel
                order.append(y)
                todo.append(y)
    f = facts[keeper]
    members = [Member(keeper, ["keeper"], _keeper_reason(keeper, comp, facts), width=f.width,
                      height=f.height, bytes=f.bytes)]
    for p in order[1:]:
        rel = parent[p]
        other = rel.b if rel.a == p else rel.a
        reason = _reason(rel)
        if rel.copy == other:  # the evidence says the neighbour was made from this one
            reason = f"the source of {other.rsplit('/', 1)[-1]} ({reason})"
        fp = facts[p]
        members.append(Member(
            p, list(rel.roles), reason, compared_to=other, verdict=rel.verdict,
            p_copy=rel.p_copy, width=fp.width, height=fp.height, bytes=fp.bytes,
            regions=rel.regions if rel.regions_on == p or rel.regions_both else []))
    if rels and not members[0].regions:
        for rel in rels:  # regions found with the keeper as the query: draw them on it
            if rel.regions_on == keeper:
                members[0].regions = rel.regions
                break
    return Group(0, keeper, members)


def _keeper_reason(keeper: str, comp: list[str], facts: Mapping[str, FileFacts]) -> str:
    f = facts[keeper]
    bits = [f"{f.width}×{f.height}" if f.pixels else "size unknown"]
    if f.format:
        bits.append(f.format)
    return ("suggested keeper: the least edited, then largest, then oldest file ("
            + ", ".join(bits) + ")")


def summary(groups: Sequence[Group]) -> str:
    """Plain text, one block per group: the keeper, then each member with its role."""
    lines = []
    for g in groups:
        lines.append(f"group {g.id}: keep {g.keeper}")
        for m in g.members[1:]:
            p = f"p_copy {m.p_copy:.2f}" if m.p_copy is not None else "p_copy -"
            lines.append(f"  {'/'.join(m.roles):<12} {m.path}  ({m.reason}; {p})")
    return "\n".join(lines)
