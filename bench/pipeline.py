"""Pipeline benchmark: images/s and per-stage latency p50/p99 for the hash fast path, visual
only, the full semantic pipeline and a CNN-only scan of the same images, at several batch sizes;
peak RSS (and GPU memory when CUDA is present); optionally end to end through the real broker.

    python -m dupstream.bench.pipeline [--images 64] [--batches 1,8,32] [--e2e] \
        [--out results/pipeline]

Each mode runs in a fresh subprocess so its peak RSS is its own. Writes JSON and Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

#: full_semantic: the product (default detector, the cascade); full_eager: objects for every
#: image (cascade off); full_torch_eager: that with the torch detector - the pipeline as issue 15
#: measured it (plus the verification stage added since); cnn_only: decode + SSCD, nothing else;
#: full_hash_pool: full_semantic with the hash stage in a thread beside the embedder
#: (``hash_workers=1``); full_overlap: full_semantic through ``Deduper.process_many`` (what
#: ``scan`` runs: the next batches decoded, hashed and embedded while one is judged - the same
#: verdicts); cnn_only_overlap: cnn_only with the next batch decoded while one is embedded;
#: stream_ahead: what the stream service runs (``stream.pipeline``): each batch's features
#: extracted (``Deduper.extract_ahead``) in one thread while the batch before it is judged
MODES = ("hash_fast_path", "visual_only", "full_semantic", "stream_ahead", "full_overlap",
         "full_hash_pool", "full_eager", "full_torch_eager", "cnn_only", "cnn_only_overlap")
FULL = ("full_semantic", "stream_ahead", "full_overlap", "full_hash_pool", "full_eager",
        "full_torch_eager")
STAGES = ("decode", "hash", "embed", "detect", "graph", "search", "objects", "total")


def make_images(n: int, seed: int = 0) -> list[bytes]:
    """n distinct JPEGs (~640 px) made from the packaged photos by random crops and edits."""
    from dupstream.lab.data import edits
    from dupstream.lab.data.photos import load_photos

    rng = np.random.default_rng(seed)
    photos = list(load_photos().values())
    out = []
    for i in range(n):
        base = photos[i % len(photos)]
        img = edits.crop(base, rng)
        img = [edits.recolour, edits.rotate, edits.jpeg][i % 3](img, rng)
        h, w = img.shape[:2]
        scale = 640 / max(h, w)
        import cv2

        img = cv2.resize(img, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
        out.append(edits.encode(img, "JPEG", 90))
    return out


def make_mixed_images(n: int, *, copies: float = 0.2, seed: int = 0) -> list[bytes]:
    """An upload stream: ``n`` JPEGs of which ``1 - copies`` are distinct photos (the retrieval
    benchmark's: packaged photos and non-overlapping tiles of them) and ``copies`` edited copies
    of those (every edit type of the benchmark), each after its original."""
    from dupstream.lab.data.edits import encode
    from dupstream.lab.evaluation.retrieval import build_bench

    n_copies = round(n * copies)
    bench = build_bench(photos=n - n_copies, seed=seed, copies_per_edit=max(1, n_copies),
                        traps_per_kind=0)
    originals = bench.originals[: n - n_copies]
    names = {o.name for o in originals}
    pool = [q for q in bench.queries if q.role == "copy" and q.cluster in names]
    rng = np.random.default_rng(seed)
    picked = [pool[i] for i in rng.choice(len(pool), min(n_copies, len(pool)), replace=False)]
    return [encode(it.rgb, "JPEG", 90) for it in [*originals, *picked]]


def stream_ahead(deduper, batches: list) -> Iterator[list]:
    """The stream service's engine calls: batch k+1 extracted ahead in one thread (as
    ``stream.pipeline.Pipeline`` does once its blobs are fetched) while batch k is judged."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="bench-extract") as pool:
        ahead = pool.submit(deduper.extract_ahead, batches[0]) if batches else None
        for k, batch in enumerate(batches):
            extracted = ahead.result()
            if k + 1 < len(batches):
                ahead = pool.submit(deduper.extract_ahead, batches[k + 1])
            yield deduper.process(batch, extracted=extracted)


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    a = np.asarray(values)
    return {"p50": round(float(np.percentile(a, 50)), 3),
            "p99": round(float(np.percentile(a, 99)), 3)}


def run_mode(mode: str, n: int, batch: int, threads: int,
             detector_kind: str | None = None, detector_threads: int | None = None,
             workload: str = "crops") -> dict:
    """One mode in this process (called in a subprocess by ``main``). ``detector_kind``: the
    full-semantic mode's detector (default: ``workers.detector.DEFAULT_DETECTOR``);
    ``detector_threads``: an ONNX Runtime detector's intra-op threads (default: its own)."""
    from dupstream.engine import Upload
    from dupstream.engine.build import build_deduper
    from dupstream.workers.detector import DEFAULT_DETECTOR

    blobs = make_images(n) if workload == "crops" else make_mixed_images(n)
    detector = (detector_kind or DEFAULT_DETECTOR) if mode in FULL else "none"
    if mode == "full_torch_eager":
        detector = "yolov3_tiny"
    deduper = build_deduper(detector=detector, graph=mode in FULL, threads=threads,
                            cascade=mode in ("full_semantic", "stream_ahead", "full_overlap",
                                             "full_hash_pool"),
                            hash_workers=1 if mode == "full_hash_pool" else 0)
    if detector_threads is not None and detector.startswith("yolov3_tiny_ort"):
        from dupstream.workers.detector import build_detector

        deduper.extractor.detector = build_detector(detector, threads=detector_threads)
    # warm-up (model load, first-call allocations) outside the timed region
    deduper.warm_up()  # every model loaded and probed, as the service does at start
    deduper.process([Upload("warm", make_images(1, seed=99)[0])], add=False)
    stage_ms: dict[str, list[float]] = {s: [] for s in STAGES}
    if mode == "cnn_only":
        from dupstream.workers.decode import decode_image

        t0 = time.perf_counter()  # an SSCD-only scan of the files: decode + embed
        for i in range(0, n, batch):
            t1 = time.perf_counter()
            decoded = [decode_image(b) for b in blobs[i : i + batch]]
            t2 = time.perf_counter()
            deduper.extractor.embedder.embed(decoded)
            stage_ms["decode"].append((t2 - t1) * 1e3 / len(decoded))
            stage_ms["embed"].append((time.perf_counter() - t2) * 1e3 / len(decoded))
        elapsed = time.perf_counter() - t0
    elif mode == "cnn_only_overlap":
        from concurrent.futures import ThreadPoolExecutor

        from dupstream.workers.decode import decode_image

        t0 = time.perf_counter()  # the same, the next batch decoded while this one embeds
        with ThreadPoolExecutor(1) as pool:
            def read(i: int) -> tuple[list, float]:
                t = time.perf_counter()
                return [decode_image(b) for b in blobs[i : i + batch]], time.perf_counter() - t
            ahead = pool.submit(read, 0)
            for i in range(0, n, batch):
                decoded, dt = ahead.result()
                if i + batch < n:
                    ahead = pool.submit(read, i + batch)
                t2 = time.perf_counter()
                deduper.extractor.embedder.embed(decoded)
                stage_ms["decode"].append(dt * 1e3 / len(decoded))
                stage_ms["embed"].append((time.perf_counter() - t2) * 1e3 / len(decoded))
        elapsed = time.perf_counter() - t0
    else:
        if mode == "hash_fast_path":  # index once, then time the byte-identical re-uploads
            for i in range(0, n, batch):
                deduper.process([Upload(f"orig{i + j}", b) for j, b in
                                 enumerate(blobs[i : i + batch])])
        batches = [[Upload(f"{mode}{i + j}", b) for j, b in enumerate(blobs[i : i + batch])]
                   for i in range(0, n, batch)]
        t0 = time.perf_counter()
        judged = (deduper.process_many(batches) if mode == "full_overlap"
                  else stream_ahead(deduper, batches) if mode == "stream_ahead"
                  else map(deduper.process, batches))
        for verdicts in judged:
            for v in verdicts:
                for s in STAGES:
                    if s in v.timings_ms:
                        stage_ms[s].append(v.timings_ms[s])
        elapsed = time.perf_counter() - t0
    gpu_mb = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except ImportError:
        pass
    return {
        "mode": mode, "images": n, "batch": batch, "threads": threads,
        "detector": detector, "detector_threads": detector_threads,
        "images_per_s": round(n / elapsed, 2),
        "stages_ms": {s: _percentiles(v) for s, v in stage_ms.items() if v},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "gpu_peak_mb": gpu_mb,
    }


def _ratios(by: dict, b: int) -> dict[str, float]:
    """The ratios the report states for batch ``b``, from one round's images/s per (mode,
    batch); only those whose modes ran."""
    full, vis, cnn, eager, torch_eager, overlap, cnn_overlap, stream = (
        by.get((m, b)) for m in ("full_semantic", "visual_only", "cnn_only", "full_eager",
                                 "full_torch_eager", "full_overlap", "cnn_only_overlap",
                                 "stream_ahead"))
    out: dict[str, float] = {}
    if overlap and (cnn or cnn_overlap):
        out["scan"] = max(c for c in (cnn, cnn_overlap) if c) / overlap
    if stream and vis:
        out["stream"], out["stream_visual"] = stream, vis / stream
    if full and vis:
        out["full_visual"] = vis / full
        if cnn:
            out["full_cnn"] = cnn / full
    if full and torch_eager:
        out["full_torch"] = full / torch_eager
        if eager:
            out["full_eager"] = full / eager
    return out


def markdown(results: list[dict], e2e: dict | None, machine: str) -> str:
    """The report: a row per run, then each batch's ratios (with several rounds: each round's
    ratios from its own runs, their median first)."""
    rounds = max((r.get("round", 1) for r in results), default=1)
    lines = [f"Machine: {machine}", "",
             "| mode | batch | images/s | decode p50/p99 | hash | embed | detect | graph | "
             "search | objects (cascade) | total p50/p99 (ms/img) | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        def cell(stage, r=r):
            s = r["stages_ms"].get(stage)
            return f"{s['p50']}/{s['p99']}" if s else "–"
        name = r["mode"] + (f" (round {r['round']})" if rounds > 1 else "")
        lines.append(f"| {name} | {r['batch']} | {r['images_per_s']} | {cell('decode')} | "
                     f"{cell('hash')} | {cell('embed')} | {cell('detect')} | {cell('graph')} | "
                     f"{cell('search')} | {cell('objects')} | {cell('total')} | "
                     f"{r['peak_rss_mb']} |")
    per_round = [{(r["mode"], r["batch"]): r["images_per_s"] for r in results
                  if r.get("round", 1) == k} for k in range(1, rounds + 1)]
    lines.append("")
    if rounds > 1:
        lines.append(f"{rounds} rounds, the modes alternated; each ratio is the median of the "
                     "rounds' own ratios (each round's in brackets).")
    for b in sorted({r["batch"] for r in results}):
        got = [_ratios(by, b) for by in per_round]

        def val(key: str, fmt: str = "{:.2f}x", got: list = got) -> str | None:
            xs = [g[key] for g in got if key in g]
            if not xs:
                return None
            text = fmt.format(float(np.median(xs)))
            return text + (" (" + " / ".join(fmt.format(x) for x in xs) + ")"
                           if len(xs) > 1 else "")

        scan, stream, full_visual, full_torch = (val(k) for k in ("scan", "stream",
                                                                 "full_visual", "full_torch"))
        full_cnn, full_eager = val("full_cnn"), val("full_eager")
        if scan:
            lines.append(f"- batch {b}: a scan (full_overlap) costs {scan} the "
                         "faster SSCD-only scan (cnn_only / cnn_only_overlap)")
        if stream:
            lines.append(f"- batch {b}: the stream (stream_ahead) runs "
                         f"{val('stream', '{:.2f}')} img/s, visual-only / stream "
                         f"{val('stream_visual')}")
        if full_visual:
            lines.append(f"- batch {b}: full semantic costs {full_visual} visual-only"
                         + (f", {full_cnn} an SSCD-only scan (decode + embed)"
                            if full_cnn else ""))
        if full_torch:
            lines.append(f"- batch {b}: full semantic runs {full_torch} the images/s "
                         "of the torch detector on every image (full_torch_eager)"
                         + (f"; {full_eager} objects on every image with the same "
                            "detector (full_eager)" if full_eager else ""))
    if e2e:
        lines += ["", f"End to end through the broker (event → verdict, {e2e['events']} events "
                  f"offered at {e2e['rate_per_s']}/s, mode {e2e['mode']}): "
                  f"p50 {e2e['latency_ms']['p50']} ms, p99 {e2e['latency_ms']['p99']} ms, "
                  f"throughput {e2e['throughput_per_s']}/s (first send to the service's exit), "
                  + (f"verdicts {e2e['verdict_rate_per_s']}/s (first to last verdict)"
                     if e2e.get("verdict_rate_per_s") is not None
                     else "verdict rate not measured (fewer than two verdicts)")]
    return "\n".join(lines) + "\n"


def machine() -> str:
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {gpu}, Python {platform.python_version()}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--detector", default=None,
                   help="the full-semantic mode's detector (default: the engine's default, "
                   "workers.detector.DEFAULT_DETECTOR)")
    p.add_argument("--detector-threads", type=int, default=None,
                   help="an ONNX Runtime detector's intra-op threads (default: its own, 2)")
    p.add_argument("--workload", choices=["crops", "mixed"], default="crops",
                   help="crops: crops/edits of the 15 packaged photos (most are copies of each "
                   "other); mixed: an upload stream, 80%% distinct photos then 20%% edited "
                   "copies of them")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the modes this many times, alternated (machines are noisy: each "
                   "round's ratios come from its own runs; the report gives their median)")
    p.add_argument("--e2e", action="store_true", help="also event→verdict through the broker")
    p.add_argument("--e2e-rate", type=float, default=10.0, help="offered events/s for --e2e")
    p.add_argument("--out", default="results/pipeline")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one mode:batch here
    args = p.parse_args(argv)
    if args.one:
        mode, batch = args.one.split(":")
        print(json.dumps(run_mode(mode, args.images, int(batch), args.threads, args.detector,
                                  args.detector_threads, args.workload)))
        return 0
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    results = []
    for batch, rnd, mode in [(int(b), k, m) for b in args.batches.split(",")
                             for k in range(1, args.rounds + 1) for m in args.modes.split(",")]:
        out = subprocess.run([sys.executable, "-m", "dupstream.bench.pipeline", "--one",
                              f"{mode}:{batch}", "--images", str(args.images),
                              "--threads", str(args.threads), "--workload", args.workload,
                              *(["--detector", args.detector] if args.detector else []),
                              *(["--detector-threads", str(args.detector_threads)]
                                if args.detector_threads else [])],
                             check=True, capture_output=True, text=True).stdout
        r = {**json.loads(out.strip().splitlines()[-1]), "round": rnd}
        results.append(r)
        print(f"{mode:15s} batch {batch:3d}"
              + (f" round {rnd}" if args.rounds > 1 else "")
              + f": {r['images_per_s']:8.2f} img/s  "
              f"total p50 {r['stages_ms'].get('total', {}).get('p50', '-')} ms  "
              f"peak RSS {r['peak_rss_mb']} MB", flush=True)
    e2e = None
    if args.e2e:
        from dupstream.bench.e2e import run_e2e

        e2e = run_e2e(events=args.images, rate=args.e2e_rate)
        print(f"e2e: p50 {e2e['latency_ms']['p50']} ms p99 {e2e['latency_ms']['p99']} ms")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    mach = machine()
    out.with_suffix(".json").write_text(json.dumps({"machine": mach, "results": results,
                                                    "e2e": e2e}, indent=1))
    out.with_suffix(".md").write_text(markdown(results, e2e, mach))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
