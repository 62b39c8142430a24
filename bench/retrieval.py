"""Retrieval benchmark: ``dupstream scan`` semantics over distinct photos, then their copies,
overlay traps and same-scene photographs, shuffled.

    python -m dupstream.bench.retrieval [--photos 300] [--seed 0] [--out results/retrieval] \
        [--embedder sscd|sscd_distilled] [--detector yolov3_tiny] [--batch 16]

The images (``dupstream.lab.evaluation.retrieval.build_bench``) are written to a temporary
folder, originals first, then the shuffled queries, and fed to the Deduper that
``dupstream scan`` builds (``engine.build.build_deduper``), in batches of ``--batch`` in file
order; every image is judged against everything before it and then added, as in ``scan``.

Reported (printed, and written to ``<out>.json`` / ``<out>.md``):
- per edit type: right matches (the copy's match is its own original or another copy of it),
  of which the original itself, wrong matches (another picture), misses (``unique``);
- false matches: indexed distinct photos judged a copy of an earlier one; overlay-trap images
  (held-out photos, in no index) judged a copy - of the other trap image or anything; same-scene
  photographs judged a copy;
- SSCD alone: the nearest earlier image by the engine's own SSCD vector (cosine), a match when
  the cosine reaches a threshold; the threshold is the lowest at which at most 1 % of the
  distinct photos and overlay traps match - tuned on this bench, an oracle baseline;
- cost: total ms per image (p50/p99) and, when the engine reports a ``verify`` stage in
  ``timings_ms``, its ms per query (p50/p99) and the share of queries where it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _pct(x, q):
    return round(float(np.percentile(x, q)), 3) if len(x) else None


def run_engine(items, folder: Path, *, embedder: str, detector: str, graph: bool, batch: int,
               threads: int, log, cascade: bool = True
               ) -> tuple[list[dict], dict[str, np.ndarray], float]:
    """Scan ``items`` (in order) with the product; returns one row per image, the SSCD vector
    of every image (from the engine's own records) and the wall time of the scan."""
    from dupstream.engine import Failed, Upload
    from dupstream.engine.build import build_deduper
    from dupstream.lab.data.edits import encode

    paths = []
    for i, it in enumerate(items):
        p = folder / f"{i:05d}_{it.name}.png"
        p.write_bytes(encode(it.rgb))
        paths.append(p)
    deduper = build_deduper(embedder=embedder, detector=detector, graph=graph, threads=threads,
                            cascade=cascade)
    rows, t0 = [], time.perf_counter()
    for start in range(0, len(paths), batch):
        chunk = list(zip(items[start : start + batch], paths[start : start + batch], strict=True))
        uploads = [Upload(it.name, p.read_bytes(), None) for it, p in chunk]
        for (it, _), res in zip(chunk, deduper.process(uploads), strict=True):
            if isinstance(res, Failed):
                rows.append({"name": it.name, "verdict": "error", "match_id": None,
                             "error": res.error.reason, "timings_ms": {}})
                continue
            reg = res.evidence.registration
            rows.append({"name": it.name, "verdict": res.verdict, "match_id": res.match_id,
                         "probability": res.probability, "p_copy": res.p_copy,
                         "nearest_id": res.evidence.nearest_id,
                         "verified": None if reg is None else bool(reg.verified),
                         "same_scene": bool(res.evidence.same_scene),
                         "same_scene_id": res.evidence.same_scene_id,
                         "cascade": list(res.evidence.cascade),
                         "timings_ms": dict(res.timings_ms)})
        if (start // batch) % 10 == 0:
            log(f"{min(start + batch, len(paths))}/{len(paths)} images "
                f"({time.perf_counter() - t0:.0f} s)")
    wall = time.perf_counter() - t0
    vectors = {}
    for it in items:
        rec = deduper.memory.record((None, None, it.name))
        if rec is not None and "vector" in rec.arrays:
            vectors[it.name] = np.asarray(rec.arrays["vector"], np.float32)
    return rows, vectors, wall


def sscd_alone(items, vectors: dict[str, np.ndarray]) -> list[tuple[str | None, float]]:
    """For each image in order: (nearest earlier image, cosine) by the SSCD vector alone."""
    out, seen, mat = [], [], []
    for it in items:
        v = vectors.get(it.name)
        if v is None or not seen:
            out.append((None, -1.0))
        else:
            sims = np.asarray(mat) @ v
            j = int(np.argmax(sims))
            out.append((seen[j], float(sims[j])))
        if v is not None:
            seen.append(it.name)
            mat.append(v / (np.linalg.norm(v) + 1e-12))
    return out


def score(items, matches: list[str | None], cluster_of: dict[str, str]) -> dict:
    """Per edit type and per negative role, from each image's match (None: unique)."""
    per_edit: dict[str, dict] = {}
    neg = {"distinct photos": [0, 0], "distinct photos (another source photo)": [0, 0],
           "distinct photos (a sibling tile of one photo)": [0, 0],
           "overlay traps": [0, 0], "overlay traps (to partner)": [0, 0], "same scene": [0, 0],
           "same scene (to its scene)": [0, 0]}
    photo_of = {it.name: _photo(it.source) for it in items}
    per_trap: dict[str, list[int]] = {}
    static = {"n": 0, "right": 0, "wrong": 0}
    for it, m in zip(items, matches, strict=True):
        if it.role == "static":  # a static camera's frame the scene rule calls one picture
            static["n"] += 1
            static["right"] += int(m is not None and cluster_of.get(m) == it.cluster)
            static["wrong"] += int(m is not None and cluster_of.get(m) != it.cluster)
            continue
        if it.role == "copy":
            e = per_edit.setdefault(it.kind, {"n": 0, "right": 0, "original": 0, "wrong": 0,
                                              "missed": 0})
            e["n"] += 1
            if m is None:
                e["missed"] += 1
            elif cluster_of.get(m) == it.cluster:
                e["right"] += 1
                e["original"] += int(m == it.cluster)
            else:
                e["wrong"] += 1
            continue
        hit = m is not None
        if it.role == "original":
            key, pkey = "distinct photos", None
            sib = hit and photo_of.get(m) == photo_of[it.name]
            for k, h in (("distinct photos (another source photo)", hit and not sib),
                         ("distinct photos (a sibling tile of one photo)", sib)):
                neg[k][0] += int(h)
                neg[k][1] += 1
        elif it.role == "trap":
            key, pkey = "overlay traps", "overlay traps (to partner)"
            t = per_trap.setdefault(it.kind, [0, 0])
            t[0] += int(hit)
            t[1] += 1
        else:
            key, pkey = "same scene", "same scene (to its scene)"
        neg[key][0] += int(hit)
        neg[key][1] += 1
        if pkey:
            neg[pkey][0] += int(m is not None and it.partner in (m, cluster_of.get(m)))
            neg[pkey][1] += 1
    n = sum(e["n"] for e in per_edit.values())
    tot = {k: sum(e[k] for e in per_edit.values()) for k in ("right", "original", "wrong",
                                                            "missed")}
    for e in per_edit.values():
        e["recall"] = e["right"] / e["n"]
        e["wrong_rate"] = e["wrong"] / e["n"]
    return {
        "copies": n,
        "right_recall": tot["right"] / max(1, n),
        "original_recall": tot["original"] / max(1, n),
        "wrong_rate": tot["wrong"] / max(1, n),
        "missed_rate": tot["missed"] / max(1, n),
        "per_edit": per_edit,
        "false_matches": {k: {"matched": v[0], "n": v[1], "rate": v[0] / v[1] if v[1] else None}
                          for k, v in neg.items()},
        "traps_by_kind": {k: {"matched": v[0], "n": v[1]} for k, v in per_trap.items()},
        "static_frames": static,
    }


def _photo(source: str) -> str:
    return source.split("[")[0]


def tune_threshold(items, nn: list[tuple[str | None, float]], max_fpr: float = 0.01, *,
                   skip_siblings: bool = False) -> float:
    """Lowest cosine threshold at which at most ``max_fpr`` of the distinct photos and overlay
    traps match (same-scene photographs are reported, not tuned on). ``skip_siblings``: leave
    out the distinct photos whose nearest earlier image is a sibling tile of the same photo."""
    photo = {it.name: _photo(it.source) for it in items}
    neg = np.sort([s for it, (m, s) in zip(items, nn, strict=True)
                   if it.role in ("original", "trap")
                   and not (skip_siblings and it.role == "original" and m is not None
                            and photo.get(m) == photo[it.name])])
    if not len(neg):
        return 1.0
    k = int(np.floor(max_fpr * len(neg)))  # negatives allowed above the threshold
    return float(np.nextafter(neg[len(neg) - 1 - k], np.inf))


def cost(rows: list[dict], n_originals: int) -> dict:
    q = rows[n_originals:]
    total = [r["timings_ms"].get("total") for r in rows if r["timings_ms"].get("total")]
    ver = [r["timings_ms"]["verify"] for r in q if "verify" in r["timings_ms"]]
    ran = [v for v in ver if v > 0]
    out = {"total_ms_p50": _pct(total, 50), "total_ms_p99": _pct(total, 99),
           "verify_exposed": bool(ver)}
    if ver:
        out.update({"verify_ms_p50": _pct(ran, 50), "verify_ms_p99": _pct(ran, 99),
                    "verify_ran_share": len(ran) / len(q), "verify_ms_mean_per_query":
                    round(float(np.sum(ran)) / len(q), 3)})
    return out


def markdown(res: dict) -> str:
    p, s = res["product"], res["sscd_alone"]
    s2 = res.get("sscd_alone_no_siblings", s)
    lines = [f"# Retrieval benchmark ({res['info']['photos']} distinct photos)", "",
             f"Command: `{res['command']}`. {res['machine']}. Engine: {res['engine']}. "
             f"Scan wall time {res['wall_s']:.0f} s for {res['images']} images "
             f"({res['images'] / res['wall_s']:.1f} images/s).", "",
             f"Index: {res['info']['photos']} distinct photos ({res['info']['tiled']} of them "
             f"non-overlapping tiles of at least {res['info']['tile']} px), then "
             f"{res['info']['queries']} queries shuffled.", "",
             "| edit type | copies | product right | (original) | product wrong | SSCD alone "
             "right / wrong | SSCD alone* right / wrong |", "|---|---|---|---|---|---|---|"]
    nan = float("nan")
    for kind, e in p["per_edit"].items():
        b, b2 = s["per_edit"].get(kind, {}), s2["per_edit"].get(kind, {})
        lines.append(f"| {kind} | {e['n']} | {e['recall']:.3f} | {e['original']} | "
                     f"{e['wrong_rate']:.3f} | {b.get('recall', nan):.3f} / "
                     f"{b.get('wrong_rate', nan):.3f} | {b2.get('recall', nan):.3f} / "
                     f"{b2.get('wrong_rate', nan):.3f} |")
    lines.append(f"| **all** | {p['copies']} | **{p['right_recall']:.3f}** | "
                 f"{p['original_recall']:.3f} | **{p['wrong_rate']:.3f}** | "
                 f"**{s['right_recall']:.3f}** / {s['wrong_rate']:.3f} | "
                 f"**{s2['right_recall']:.3f}** / {s2['wrong_rate']:.3f} |")
    lines += ["", "| false matches | product | SSCD alone | SSCD alone* |", "|---|---|---|---|"]
    for k, v in p["false_matches"].items():
        b, b2 = s["false_matches"][k], s2["false_matches"][k]
        lines.append(f"| {k} | {v['matched']} / {v['n']} | {b['matched']} / {b['n']} | "
                     f"{b2['matched']} / {b2['n']} |")
    for k, v in p["traps_by_kind"].items():
        b, b2 = s["traps_by_kind"][k], s2["traps_by_kind"][k]
        lines.append(f"| {k} | {v['matched']} / {v['n']} | {b['matched']} / {b['n']} | "
                     f"{b2['matched']} / {b2['n']} |")
    st, sst = p.get("static_frames"), s.get("static_frames")
    if st and st["n"]:
        amb = res["info"].get("static_ambiguous") or []
        lines += ["", f"Frames of a static camera that the scene rule calls one picture "
                  "(`lab/evaluation/scene_rule.py`, the product's CCTV meaning; not counted "
                  f"above): right match {st['right']} / {st['n']}, wrong {st['wrong']} "
                  f"(SSCD alone {sst['right']} / {sst['n']}); left out as ambiguous by the "
                  f"rule: {', '.join(amb) if amb else 'none'}."]
    se = res.get("same_scene_evidence")
    if se and se["n"] and se["n_recorded"]:
        lines += ["", f"Same-scene photographs (another photo or moment of an indexed scene): "
                  f"unique {se['unique']} / {se['n']}, of them with `same_scene` evidence "
                  f"{se['unique_with_evidence']} / {se['n_recorded']}. With the evidence "
                  "otherwise: " + ", ".join(
                      f"{role} {c['evidence']} / {c['n']}" for role, c in
                      se.get("other_negatives_with_evidence", {}).items()) + "."]
    c = res["cost"]
    lines += ["", "Distinct photos: a false match to a sibling tile (another non-overlapping "
              "tile of the same source photo: brick, gravel, star-field, retina textures) is "
              "counted apart from one to another source photo.", "",
              f"SSCD alone: cosine >= {res['sscd_threshold']:.4f} (the lowest threshold "
              "with <= 1 % of the distinct photos and traps matching: tuned on the bench "
              "itself, an oracle baseline). SSCD alone*: cosine >= "
              f"{res.get('sscd_threshold_no_siblings', res['sscd_threshold']):.4f}, the same "
              "rule with the distinct photos whose nearest earlier image is a sibling tile left "
              "out.", "",
              f"Cost: total {c['total_ms_p50']} / {c['total_ms_p99']} ms per image (p50/p99). "
              + (f"Verification: ran on {c['verify_ran_share']:.1%} of queries, "
                 f"{c['verify_ms_p50']} / {c['verify_ms_p99']} ms (p50/p99 where it ran), "
                 f"{c['verify_ms_mean_per_query']} ms per query on average."
                 if c["verify_exposed"] else
                 "Verification: the engine reports no `verify` stage in `timings_ms`.")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dupstream.bench.retrieval",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=300, help="distinct indexed photos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/retrieval", help="writes <out>.json, <out>.md")
    ap.add_argument("--copies-per-edit", type=int, default=20)
    ap.add_argument("--traps-per-kind", type=int, default=4)
    ap.add_argument("--embedder", default="sscd", choices=["sscd", "sscd_distilled"])
    ap.add_argument("--detector", default="yolov3_tiny")
    ap.add_argument("--no-graph", action="store_true")
    ap.add_argument("--no-cascade", action="store_true",
                    help="objects for every image (default: the engine's cascade)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", help="write the images here instead of a temporary folder")
    ap.add_argument("--rescore", help="a saved <out>.json: rebuild its bench (same options), "
                    "score its recorded verdicts again and rewrite <out>.json/.md; no engine run")
    args = ap.parse_args(argv)

    from dupstream.lab.evaluation.retrieval import build_bench
    from dupstream.lab.evaluation.runner import machine

    def log(msg):
        print(f"[retrieval] {msg}", file=sys.stderr, flush=True)

    if args.rescore:
        return rescore(Path(args.rescore), log)

    t0 = time.perf_counter()
    bench = build_bench(photos=args.photos, seed=args.seed,
                        copies_per_edit=args.copies_per_edit, traps_per_kind=args.traps_per_kind)
    items = bench.originals + bench.queries
    log(f"{len(bench.originals)} originals + {len(bench.queries)} queries "
        f"({bench.info['queries']}), built in {time.perf_counter() - t0:.0f} s")
    with tempfile.TemporaryDirectory(prefix="dupstream-retrieval-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rows, vectors, wall = run_engine(items, folder, embedder=args.embedder,
                                         detector=args.detector, graph=not args.no_graph,
                                         batch=args.batch, threads=args.threads, log=log,
                                         cascade=not args.no_cascade)
    nn = sscd_alone(items, vectors)
    engine = (f"build_deduper(embedder={args.embedder}, detector={args.detector}, "
              f"graph={not args.no_graph}, cascade={not args.no_cascade}), batches of "
              f"{args.batch}")
    res = {"command": "python -m dupstream.bench.retrieval " + " ".join(sys.argv[1:]),
           "machine": machine(), "engine": engine, "info": bench.info,
           "images": len(items), "wall_s": wall, "elapsed_s": time.perf_counter() - t0,
           "omp": os.environ.get("OMP_NUM_THREADS"), "python": platform.python_version(),
           **summarise(items, rows, nn, len(bench.originals)),
           "rows": [{**r, "role": it.role, "kind": it.kind, "cluster": it.cluster,
                     "source": it.source, "partner": it.partner, "sscd_nn": nn[i][0],
                     "sscd_cos": round(nn[i][1], 5)}
                    for i, (it, r) in enumerate(zip(items, rows, strict=True))]}
    write(res, Path(args.out))
    return 0


def summarise(items, rows: list[dict], nn, n_originals: int) -> dict:
    cluster_of = {it.name: it.cluster for it in items}
    product = score(items, [r["match_id"] if r["verdict"] not in ("unique", "error") else None
                            for r in rows], cluster_of)
    thr = tune_threshold(items, nn)
    base = score(items, [m if s >= thr else None for m, s in nn], cluster_of)
    thr2 = tune_threshold(items, nn, skip_siblings=True)
    base2 = score(items, [m if s >= thr2 else None for m, s in nn], cluster_of)
    verdicts: dict[str, int] = {}
    for r in rows:
        verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
    return {"verdicts": verdicts, "product": product, "sscd_alone": base, "sscd_threshold": thr,
            "sscd_alone_no_siblings": base2, "sscd_threshold_no_siblings": thr2,
            "same_scene_evidence": same_scene_evidence(items, rows),
            "cost": cost(rows, n_originals)}


def same_scene_evidence(items, rows: list[dict]) -> dict:
    """The same-scene photographs (another photo or moment of an indexed scene): how many came
    out ``unique``, and how many of those carry ``same_scene`` evidence. ``n_recorded``: rows
    that record the field (a saved run from before it was recorded has none). Also how many
    distinct photos (``original``; a sibling tile of one photo may show the same scene) and
    overlay traps (never the same scene) carry the evidence."""
    by_role: dict[str, list[dict]] = {"same_scene": [], "original": [], "trap": []}
    for it, r in zip(items, rows, strict=True):
        if it.role in by_role:
            by_role[it.role].append(r)
    sel = by_role["same_scene"]
    known = [r for r in sel if "same_scene" in r]
    others = {role: [r for r in by_role[role] if "same_scene" in r]
              for role in ("original", "trap")}
    return {"n": len(sel), "unique": sum(r["verdict"] == "unique" for r in sel),
            "n_recorded": len(known),
            "unique_with_evidence": sum(r["verdict"] == "unique" and bool(r["same_scene"])
                                        for r in known),
            "other_negatives_with_evidence": {
                role: {"n": len(rs), "evidence": sum(bool(r["same_scene"]) for r in rs)}
                for role, rs in others.items()}}


def rescore(path: Path, log) -> int:
    from dupstream.lab.evaluation.retrieval import build_bench

    res = json.loads(path.read_text())
    info = res["info"]
    bench = build_bench(photos=info["photos_requested"], seed=info["seed"],
                        copies_per_edit=info["copies_per_edit"],
                        traps_per_kind=info["traps_per_kind"], max_side=info["max_side"])
    items = bench.originals + bench.queries
    rows = res["rows"]
    if [it.name for it in items] != [r["name"] for r in rows]:
        log(f"{path}: the rebuilt bench differs from the recorded one; not rescored")
        return 1
    nn = [(r["sscd_nn"], r["sscd_cos"]) for r in rows]
    res.update(summarise(items, rows, nn, len(bench.originals)))
    for r, it in zip(rows, items, strict=True):
        r["partner"] = it.partner
    res["rescored"] = "python -m dupstream.bench.retrieval --rescore " + str(path)
    write(res, path.with_suffix(""))
    return 0


def write(res: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str))
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    raise SystemExit(main())
