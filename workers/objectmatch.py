"""Objects through a registration: the reference's objects mapped into the query and matched
by class - which objects were kept, moved, added, removed (or cropped away)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from dupstream.workers.register import project

if TYPE_CHECKING:
    from dupstream.workers.verify import Registration


def _map_box(box, m: np.ndarray, rsize: tuple[int, int], qsize: tuple[int, int]):
    x0, y0, x1, y1 = (float(v) for v in box)
    rw, rh = rsize
    qw, qh = qsize
    pts = np.array([[x0 * rw, y0 * rh], [x1 * rw, y0 * rh], [x0 * rw, y1 * rh],
                    [x1 * rw, y1 * rh]], np.float64)
    xy = project(m, pts)
    return (xy[:, 0].min() / qw, xy[:, 1].min() / qh, xy[:, 0].max() / qw, xy[:, 1].max() / qh)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _clip_share(b) -> float:
    """Share of a (query-normalised) box that lies inside the query frame."""
    area = max(1e-12, (b[2] - b[0]) * (b[3] - b[1]))
    ix = max(0.0, min(1.0, b[2]) - max(0.0, b[0]))
    iy = max(0.0, min(1.0, b[3]) - max(0.0, b[1]))
    return ix * iy / area


def _centre_dist(a, b) -> float:
    return math.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)


def _pair_greedy(qi: list[int], ri: list[int], iou: list[list[float]], qboxes, rboxes
                 ) -> list[tuple[int, int, float]]:
    """One-to-one pairs of one class: highest IoU first, then (IoU 0) nearest centres first."""
    cand = [(-iou[a][b], _centre_dist(qboxes[a], rboxes[b]), a, b)
            for a in range(len(qi)) for b in range(len(ri))]
    used_a: set[int] = set()
    used_b: set[int] = set()
    out = []
    for neg_iou, _, a, b in sorted(cand):
        if a in used_a or b in used_b:
            continue
        used_a.add(a)
        used_b.add(b)
        out.append((qi[a], ri[b], -neg_iou))
    return out


def match_objects(reg: Registration, query_boxes, query_names, ref_boxes, ref_names, *,
                  iou_match: float = 0.5) -> dict:
    """Objects of the reference mapped through the transform into query coordinates and matched
    to the query's objects by class (Hungarian on IoU). Boxes are normalised xyxy.

    Pairs within a class are one-to-one, highest IoU first (a handful of objects per image: greedy
is exact enough and keeps scipy out of the service). ``matched``: same class, IoU >=
``iou_match``; ``moved``: same class paired but IoU below it;
    ``removed``: reference objects inside the query frame with no partner; ``added``: query
    objects with no partner; ``outside``: reference objects the crop left out (not removed).
    """
    m = np.array(reg.matrix, np.float64).reshape(3, 3)
    mapped = [_map_box(b, m, reg.ref_size, reg.query_size) for b in ref_boxes]
    qb = [tuple(float(v) for v in b) for b in query_boxes]
    out: dict[str, list] = {"matched": [], "added": [], "removed": [], "moved": [], "outside": []}
    used_q: set[int] = set()
    used_r: set[int] = set()
    for name in sorted(set(query_names) | set(ref_names)):
        qi = [i for i, n in enumerate(query_names) if n == name]
        ri = [j for j, n in enumerate(ref_names) if n == name and _clip_share(mapped[j]) >= 0.5]
        if not qi or not ri:
            continue
        for i, j, iou in _pair_greedy(qi, ri, [[_iou(qb[i], mapped[j]) for j in ri] for i in qi],
                                      [qb[i] for i in qi], [mapped[j] for j in ri]):
            item = {"name": name, "query": list(qb[i]), "reference": [round(v, 4) for v in
                                                                        mapped[j]],
                    "iou": round(iou, 4)}
            out["matched" if iou >= iou_match else "moved"].append(item)
            used_q.add(i)
            used_r.add(j)
    for i, name in enumerate(query_names):
        if i not in used_q:
            out["added"].append({"name": name, "query": list(qb[i])})
    for j, name in enumerate(ref_names):
        if j in used_r:
            continue
        key = "removed" if _clip_share(mapped[j]) >= 0.5 else "outside"
        out[key].append({"name": name, "reference": [round(v, 4) for v in mapped[j]]})
    return out
