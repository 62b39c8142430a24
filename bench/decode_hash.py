"""Decode and hash stage costs: JPEG draft decoding against a full decode, what it changes in
the PDQ hash and the SSCD embedding, the grey PDQ path, and the blob's SHA-256.

    python -m dupstream.bench.decode_hash [--images 6] [--side 4000] [--drafts 1024,768,512]
        [--out results/decode_hash]

Images: the packaged photos scaled up to ``--side`` px (phone-camera size; bicubic plus mild
noise, so they are smoother than real photos: the draft effect on hashes is a lower bound),
saved as JPEG q90. Each measurement is the median over the images; decode and PDQ timings are
interleaved per image so a busy machine slows all alike. Writes JSON and Markdown.
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


def make_jpegs(n: int, side: int, seed: int = 0) -> list[bytes]:
    import cv2

    from dupstream.lab.data import edits
    from dupstream.lab.data.photos import load_photos

    rng = np.random.default_rng(seed)
    out = []
    for rgb in list(load_photos().values())[:n]:
        h, w = rgb.shape[:2]
        s = side / max(h, w)
        big = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_CUBIC)
        noisy = np.clip(big.astype(np.float32) + rng.normal(0, 3, big.shape), 0, 255)
        out.append(edits.encode(noisy.astype(np.uint8), "JPEG", 90))
    return out


def _ms(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1e3, out


def run(n: int, side: int, drafts: list[int]) -> dict:
    from dupstream.workers.decode import decode
    from dupstream.workers.embedder import SSCDEmbedder
    from dupstream.workers.hashing import content_hash, grey, hamming, pdq_hash, pdq_hash_gray

    blobs = make_jpegs(n, side)
    embedder = SSCDEmbedder(threads=1)
    embedder.load()
    rows: dict[str, dict[str, list[float]]] = {}

    def add(key: str, **values: float) -> None:
        for k, v in values.items():
            rows.setdefault(key, {}).setdefault(k, []).append(float(v))

    for data in blobs:
        t_full, full = _ms(lambda data=data: decode(data))
        t_pdq_rgb, ref_pdq = _ms(lambda full=full: pdq_hash(full.rgb))
        t_pdq_grey, grey_pdq = _ms(lambda full=full: pdq_hash_gray(grey(full.rgb)))
        ref_vec = embedder.embed([full.rgb])[0]
        t_sha, _ = _ms(lambda data=data: content_hash(data))
        add("full", decode_ms=t_full, pdq_ms=t_pdq_rgb, pdq_grey_ms=t_pdq_grey,
            pdq_grey_bits=int(hamming(ref_pdq.bits, grey_pdq.bits)), sha256_ms=t_sha,
            mb=len(data) / 2**20)
        for d in drafts:
            t_dec, dr = _ms(lambda data=data, d=d: decode(data, draft_side=d))
            t_pdq, p = _ms(lambda dr=dr: pdq_hash_gray(grey(dr.rgb)))
            vec = embedder.embed([dr.rgb])[0]
            add(f"draft {d}", decode_ms=t_dec, pdq_ms=t_pdq,
                pdq_bits=int(hamming(ref_pdq.bits, p.bits)),
                cosine=float(np.dot(ref_vec, vec)), side=max(dr.rgb.shape[:2]))
    summary = {key: {k: round(statistics.median(v), 3) for k, v in vals.items()}
               | ({"pdq_bits_max": max(vals["pdq_bits"]), "cosine_min": round(min(vals["cosine"]),
                                                                             4)}
                  if "pdq_bits" in vals else {})
               for key, vals in rows.items()}
    return {"images": n, "side": side, "results": summary}


def markdown(result: dict) -> str:
    r = result["results"]
    full = r["full"]
    lines = [f"Machine: {result['machine']}; {result['images']} JPEGs, longest side "
             f"{result['side']} px, median {full['mb']} MB", "",
             "| decode | decoded side | decode ms | PDQ ms | PDQ bits vs full (median / max) | "
             "SSCD cosine vs full (median / min) |", "|---|---|---|---|---|---|",
             f"| full | {result['side']} | {full['decode_ms']} | {full['pdq_grey_ms']} | – | – |"]
    for key, v in r.items():
        if key == "full":
            continue
        lines.append(f"| {key} | {int(v['side'])} | {v['decode_ms']} | {v['pdq_ms']} | "
                     f"{v['pdq_bits']} / {v['pdq_bits_max']} | {v['cosine']} / "
                     f"{v['cosine_min']} |")
    lines += ["", f"PDQ at full resolution: RGB path {full['pdq_ms']} ms, grey path "
              f"{full['pdq_grey_ms']} ms ({full['pdq_grey_bits']} bits apart, median); "
              f"SHA-256 of the blob {full['sha256_ms']} ms."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--side", type=int, default=4000)
    ap.add_argument("--drafts", default="1024,768,512")
    ap.add_argument("--out", default="results/decode_hash")
    args = ap.parse_args(argv)
    result = run(args.images, args.side, [int(d) for d in args.drafts.split(",")])
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
    result["command"] = "python -m dupstream.bench.decode_hash " + " ".join(
        argv if argv is not None else sys.argv[1:])
    write_report(args.out, "decode_hash", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
