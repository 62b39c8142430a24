"""Detector paths side by side: boxes against the torch path on the packaged photos, and
ms/image at several batch sizes and thread counts, interleaved in one run (ratios).

    python -m dupstream.bench.detector [--kinds yolov3_tiny,yolov3_tiny_ort,yolov3_tiny_ort_int8]
        [--batches 1,8] [--threads 1,2] [--rounds 5] [--out results/detector]

Timing is ``Detector.detect`` as the pipeline calls it (letterbox preprocessing, the forward,
NMS), warm, on the 15 packaged photos cycled to the batch size. Each round runs every
(kind, threads, batch) once, in turn, so a busy shared machine slows all of them alike; the
median over rounds is reported, and each path's ratio to torch fp32 at the same threads/batch.

Agreement (``workers.detector.agreement``) against ``yolov3_tiny`` (torch fp32) on every photo:
strict (every object, same label, IoU >= 0.9) and tolerant (objects scoring >= 0.3 on either side;
the 0.2-0.3 band above the 0.2 threshold may appear or disappear). Writes JSON and Markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

from dupstream.bench.report import write_report

GOLDEN = ("camera", "coffee", "motorcycle_left", "grace_hopper", "chelsea")
TOLERANT_SCORE = 0.3
MIN_IOU = 0.9


def _build(kind: str, threads: int, cache_dir: str | None):
    from dupstream.workers.detector import build_detector

    if kind.startswith("yolov3_tiny_ort"):
        return build_detector(kind, threads=threads,
                              **({"cache_dir": cache_dir} if cache_dir else {}))
    if kind == "yolov3_tiny":
        return build_detector(kind, device="cpu")
    return build_detector(kind)


def agreement_table(photos: dict[str, np.ndarray], kinds: list[str],
                    cache_dir: str | None) -> dict:
    from dupstream.workers.detector import agreement

    names, images = list(photos), list(photos.values())
    ref = _build("yolov3_tiny", 1, cache_dir).detect(images)
    out: dict = {}
    for kind in kinds:
        if kind == "yolov3_tiny":
            continue
        dets = _build(kind, 1, cache_dir).detect(images)
        rows = {}
        for name, a, b in zip(names, ref, dets, strict=True):
            strict = agreement(a, b, min_score=0.0, min_iou=MIN_IOU)
            tol = agreement(a, b, min_score=TOLERANT_SCORE, min_iou=MIN_IOU)
            rows[name] = {"golden": name in GOLDEN, "torch": a.names, "this": b.names,
                          "strict": strict.holds, "tolerant": tol.holds,
                          "min_iou": round(min(strict.ious, default=1.0), 4),
                          "max_score_diff": round(strict.max_score_diff, 4),
                          "missing": list(strict.missing), "extra": list(strict.extra)}
        out[kind] = rows
    return out


def timings(photos: dict[str, np.ndarray], kinds: list[str], batches: list[int],
            threads: list[int], rounds: int, cache_dir: str | None) -> list[dict]:
    import torch

    images = list(photos.values())
    configs = []
    for kind in kinds:
        for t in threads:
            det = _build(kind, t, cache_dir)
            det.load()
            for b in batches:
                configs.append({"kind": kind, "threads": t, "batch": b, "det": det, "ms": []})
    for c in configs:  # warm every path once (first-call allocations)
        torch.set_num_threads(c["threads"])
        c["det"].detect([images[i % len(images)] for i in range(c["batch"])])
    for r in range(rounds):
        for c in configs:
            torch.set_num_threads(c["threads"])  # the torch path's threads; ORT has its own
            batch = [images[(r * c["batch"] + i) % len(images)] for i in range(c["batch"])]
            t0 = time.perf_counter()
            c["det"].detect(batch)
            c["ms"].append((time.perf_counter() - t0) * 1e3 / c["batch"])
    out = []
    for c in configs:
        out.append({"kind": c["kind"], "threads": c["threads"], "batch": c["batch"],
                    "ms_per_image_median": round(statistics.median(c["ms"]), 2),
                    "ms_per_image_min": round(min(c["ms"]), 2), "rounds": rounds})
    base = {(r["threads"], r["batch"]): r["ms_per_image_median"]
            for r in out if r["kind"] == "yolov3_tiny"}
    for r in out:
        ref = base.get((r["threads"], r["batch"]))
        r["speedup_vs_torch"] = round(ref / r["ms_per_image_median"], 2) if ref else None
    return out


def markdown(result: dict) -> str:
    lines = [f"Machine: {result['machine']}", "", "| path | threads | batch | ms/image (median) "
             "| min | × torch fp32 |", "|---|---|---|---|---|---|"]
    for r in result["timings"]:
        lines.append(f"| {r['kind']} | {r['threads']} | {r['batch']} | "
                     f"{r['ms_per_image_median']} | {r['ms_per_image_min']} | "
                     f"{r['speedup_vs_torch']} |")
    for kind, rows in result["agreement"].items():
        strict = sum(r["strict"] for r in rows.values())
        tol = sum(r["tolerant"] for r in rows.values())
        gold = [n for n, r in rows.items() if r["golden"]]
        lines += ["", f"**{kind}** vs torch fp32 on {len(rows)} photos: strict (every object, "
                  f"same label, IoU ≥ {MIN_IOU}) {strict}/{len(rows)}, tolerant (objects ≥ "
                  f"{TOLERANT_SCORE}) {tol}/{len(rows)}; golden photos strict "
                  f"{sum(rows[n]['strict'] for n in gold)}/{len(gold)}, tolerant "
                  f"{sum(rows[n]['tolerant'] for n in gold)}/{len(gold)}"]
        for name, r in rows.items():
            if not r["strict"]:
                lines.append(f"- {name}: torch {r['torch']} → {r['this']} "
                             f"(missing {r['missing']}, extra {r['extra']})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default="yolov3_tiny,yolov3_tiny_ort,yolov3_tiny_ort_int8")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cache-dir", default=None, help="ONNX export folder (default: packaged)")
    ap.add_argument("--out", default="results/detector")
    args = ap.parse_args(argv)
    from dupstream.lab.data.photos import load_photos

    kinds = args.kinds.split(",")
    photos = load_photos()
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": "python -m dupstream.bench.detector "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "agreement": agreement_table(photos, kinds, args.cache_dir),
        "timings": timings(photos, kinds, [int(b) for b in args.batches.split(",")],
                           [int(t) for t in args.threads.split(",")], args.rounds,
                           args.cache_dir),
    }
    write_report(args.out, "detector", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
