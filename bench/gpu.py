"""GPU benchmark: batched fp16 detection, SSCD on ONNX Runtime's CUDA provider, FAISS on the GPU,
and end-to-end images/s and p99 through the ``Deduper``, at several batch sizes.

    python -m dupstream.bench.gpu [--images 256] [--batches 1,8,32,64] [--index-size 1000000]
        [--out results/gpu]
    python -m dupstream.bench.gpu --cpu-reference --images 16 --batches 1,8 --index-size 20000

Runs unchanged on a CUDA machine. Without CUDA it prints ``no CUDA: not run`` and exits 0 (no
files written), unless ``--cpu-reference``: then every part runs on the CPU instead (a reference
for the ratios, and a check of this script on any machine). A part whose runtime lacks the GPU
build (onnxruntime without the CUDA provider: ``pip install onnxruntime-gpu``; faiss-cpu:
``faiss-gpu-cu12``) is skipped and says so in the output; the others still run.

Parts (each over the same decoded JPEGs, ~640 px, made from the packaged photos):

* ``detect_torch``: YOLOv3-tiny as the torch module, CUDA fp16 (``TorchYoloDetector``);
* ``detect_ort``: YOLOv3-tiny exported to ONNX, ONNX Runtime CUDA provider (fp32 graph);
* ``embed``: SSCD (ResNet-50), ONNX Runtime CUDA provider;
* ``faiss``: flat inner-product index of ``--index-size`` synthetic 512-d vectors on the GPU
  (one query at a time, and a batch of 1,024), against the same index on the CPU;
* ``e2e``: the full ``Deduper`` (decode, hashes, embed, detect, graph, search, decide) over the
  images at each batch size: images/s and per-image latency p50/p99 (an image's latency is the
  wall time of the ``process`` call that carried its batch).

Writes ``<out>/gpu.json`` and ``<out>/gpu.md`` (``<out>/cpu-reference.*`` with the flag).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import numpy as np

from dupstream.bench.report import write_report


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _pcts(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 3),
            "p99": round(float(np.percentile(a, 99)), 3)}


def _sync() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    except ImportError:
        pass


def _batched(fn, items: list, batch: int, repeats: int) -> dict[str, Any]:
    """images/s and per-batch latency of ``fn`` over ``items`` in batches (after one warm-up)."""
    fn(items[:batch])
    _sync()
    times = []
    t0 = time.perf_counter()
    for _ in range(repeats):
        for i in range(0, len(items), batch):
            t1 = time.perf_counter()
            fn(items[i : i + batch])
            _sync()
            times.append((time.perf_counter() - t1) * 1e3)
    total = time.perf_counter() - t0
    return {"batch": batch, "images_per_s": round(repeats * len(items) / total, 2),
            "batch_ms": _pcts(times)}


def machine(gpu: bool) -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                            "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        if gpu:
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_memory_gb"] = round(
                torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    except ImportError:
        pass
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["ort_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    from dupstream.state.index import gpu_available

    info["faiss_gpu"] = gpu_available()
    return info


def _with_cpu(provider: str) -> list[str]:
    """The provider, with the CPU one behind it for the ops it lacks."""
    return [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]


def _ort_provider(gpu: bool) -> tuple[str, dict[str, Any] | None]:
    """ONNX Runtime's provider for the run, and the part's "skipped" result when this
    onnxruntime build lacks it."""
    import onnxruntime as ort

    provider = "CUDAExecutionProvider" if gpu else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        return provider, {"skipped": f"onnxruntime {ort.__version__} has no {provider} "
                                     f"(pip install onnxruntime-gpu)"}
    return provider, None


def part_detect_torch(images: list[np.ndarray], batches: list[int], gpu: bool,
                      repeats: int) -> dict[str, Any]:
    from dupstream.workers.yolo import TorchYoloDetector

    det = TorchYoloDetector(device="cuda" if gpu else "cpu", half=gpu,
                            batch_size=max(batches))
    det.load()
    return {"device": str(det.device), "half": det.half,
            "runs": [_batched(det.detect, images, b, repeats) for b in batches]}


def part_detect_ort(images: list[np.ndarray], batches: list[int], gpu: bool,
                    repeats: int) -> dict[str, Any]:
    from dupstream.workers.yolo_onnx import OnnxYoloDetector

    provider, skipped = _ort_provider(gpu)
    if skipped:
        return skipped
    det = OnnxYoloDetector(providers=_with_cpu(provider),
                           batch_size=max(batches), threads=os.cpu_count() or 1)
    session = det.load()
    return {"provider": session.get_providers()[0],
            "runs": [_batched(det.detect, images, b, repeats) for b in batches]}


def part_embed(images: list[np.ndarray], batches: list[int], gpu: bool,
               repeats: int) -> dict[str, Any]:
    from dupstream.workers.embedder import SSCDEmbedder

    provider, skipped = _ort_provider(gpu)
    if skipped:
        return skipped
    emb = SSCDEmbedder(providers=_with_cpu(provider),
                       threads=os.cpu_count() or 1)
    session = emb.load()
    return {"provider": session.get_providers()[0],
            "runs": [_batched(emb.embed, images, b, repeats) for b in batches]}


def part_faiss(size: int, gpu: bool) -> dict[str, Any]:
    from dupstream.bench.index_bench import Synthetic, latencies_ms
    from dupstream.state.index import FaissIndex, IndexSpec, gpu_available

    if gpu and not gpu_available():
        return {"skipped": "this FAISS has no GPU support (faiss-cpu; install faiss-gpu-cu12)"}
    rng = np.random.default_rng(0)
    data = Synthetic().sample(size, rng)
    queries = Synthetic().sample(1024, np.random.default_rng(1))
    out: dict[str, Any] = {"size": size, "kind": "flat"}
    for where, use_gpu in (("gpu", True), ("cpu", False)) if gpu else (("cpu", False),):
        index = FaissIndex(IndexSpec(dim=data.shape[1], kind="flat", gpu=use_gpu))
        t0 = time.perf_counter()
        index.add(data)
        _sync()
        add_s = time.perf_counter() - t0
        single = latencies_ms(lambda q, index=index: index.search(q, 10), queries[:200])
        t0 = time.perf_counter()
        index.search(queries, 10)
        _sync()
        batch_ms = (time.perf_counter() - t0) * 1e3
        out[where] = {"add_s": round(add_s, 3), "single_query_ms": single,
                      "batch_1024_ms": round(batch_ms, 3),
                      "describe": index.describe()}
    return out


def part_e2e(blobs: list[bytes], batches: list[int], gpu: bool) -> dict[str, Any]:
    from dupstream.engine import Upload
    from dupstream.engine.build import build_deduper

    runs = []
    for b in batches:
        # torch YOLO picks CUDA fp16 and SSCD the CUDA provider by themselves when present
        deduper = build_deduper(detector="yolov3_tiny", threads=os.cpu_count() or 1)
        deduper.process([Upload("warm", blobs[0])], add=False)
        per_image: list[float] = []
        _sync()
        t0 = time.perf_counter()
        for i in range(0, len(blobs), b):
            ups = [Upload(f"img{i + j}", x) for j, x in enumerate(blobs[i : i + b])]
            t1 = time.perf_counter()
            deduper.process(ups)
            _sync()
            per_image += [(time.perf_counter() - t1) * 1e3] * len(ups)
        total = time.perf_counter() - t0
        det = deduper.extractor.detector
        runs.append({"batch": b, "images_per_s": round(len(blobs) / total, 2),
                     "latency_ms": _pcts(per_image),
                     "detector_device": str(getattr(det, "device", "?")),
                     "model_version": deduper.model_version})
    return {"runs": runs}


def run(args: argparse.Namespace, gpu: bool) -> dict[str, Any]:
    from dupstream.bench.pipeline import make_images
    from dupstream.workers.decode import decode_image

    batches = [int(b) for b in args.batches.split(",")]
    blobs = make_images(args.images)
    images = [decode_image(b) for b in blobs]
    result: dict[str, Any] = {"mode": "cuda" if gpu else "cpu-reference",
                              "command": "python -m dupstream.bench.gpu "
                              + " ".join(args.argv), "machine": machine(gpu),
                              "images": len(images), "batches": batches}
    parts = {"detect_torch": lambda: part_detect_torch(images, batches, gpu, args.repeats),
             "detect_ort": lambda: part_detect_ort(images, batches, gpu, args.repeats),
             "embed": lambda: part_embed(images, batches, gpu, args.repeats),
             "faiss": lambda: part_faiss(args.index_size, gpu),
             "e2e": lambda: part_e2e(blobs, batches, gpu)}
    for name, fn in parts.items():
        if args.parts and name not in args.parts.split(","):
            continue
        t0 = time.perf_counter()
        result[name] = fn()
        print(f"{name}: {json.dumps(result[name])[:400]} ({time.perf_counter() - t0:.1f} s)",
              flush=True)
    if gpu:
        import torch

        result["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [f"Mode: {r['mode']}; {m.get('gpu', 'no GPU')}, {m['cpus']} CPUs, torch "
             f"{m.get('torch')}, onnxruntime {m.get('onnxruntime')}, FAISS GPU {m['faiss_gpu']}",
             f"Command: `{r['command']}`", "",
             "| part | batch | images/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    for part in ("detect_torch", "detect_ort", "embed"):
        p = r.get(part)
        if p is None:
            continue
        if "skipped" in p:
            lines.append(f"| {part} | – | skipped: {p['skipped']} | | |")
            continue
        for run_ in p["runs"]:
            lines.append(f"| {part} | {run_['batch']} | {run_['images_per_s']} | "
                         f"{run_['batch_ms']['p50']} (batch) | {run_['batch_ms']['p99']} |")
    for run_ in r.get("e2e", {}).get("runs", []):
        lines.append(f"| e2e Deduper | {run_['batch']} | {run_['images_per_s']} | "
                     f"{run_['latency_ms']['p50']} (image) | {run_['latency_ms']['p99']} |")
    f = r.get("faiss")
    if f is not None:
        lines.append("")
        if "skipped" in f:
            lines.append(f"FAISS: skipped: {f['skipped']}")
        else:
            for where in ("gpu", "cpu"):
                if where in f:
                    w = f[where]
                    lines.append(f"FAISS flat {f['size']:,} × 512 on {where}: one query p50 "
                                 f"{w['single_query_ms']['p50']} ms / p99 "
                                 f"{w['single_query_ms']['p99']} ms; 1,024 queries "
                                 f"{w['batch_1024_ms']} ms")
    if "gpu_peak_mb" in r:
        lines.append(f"\nGPU memory peak (torch allocator): {r['gpu_peak_mb']} MB")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--repeats", type=int, default=2, help="passes over the images per part")
    ap.add_argument("--index-size", type=int, default=1_000_000)
    ap.add_argument("--parts", default=None,
                    help="comma-separated subset of detect_torch,detect_ort,embed,faiss,e2e")
    ap.add_argument("--cpu-reference", action="store_true",
                    help="without CUDA, run every part on the CPU instead of exiting")
    ap.add_argument("--out", default="results/gpu")
    args = ap.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    gpu = cuda_available()
    if not gpu and not args.cpu_reference:
        print("no CUDA: not run")
        return 0
    result = run(args, gpu)
    stem = "gpu" if gpu else "cpu-reference"
    out = write_report(args.out, stem, result, markdown(result))
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
